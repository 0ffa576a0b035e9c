"""``swinv2 models`` and ``swinv2 convert``: the registry, the released weights' catalogue, and
checkpoints of any known layout converted to this project's."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .common import (
    positive,
)


def _models(args: argparse.Namespace) -> int:
    from ..models.config import to_pair
    from ..models.registry import get_entry, list_models

    if args.pretrained:
        from ..pretrained.tags import print_catalogue

        return print_catalogue(args.pattern, args.json)
    names = list_models(args.pattern)
    if not names:
        print(f"no model matches {args.pattern!r}", file=sys.stderr)
        return 1
    if args.json:
        for name in names:
            e = get_entry(name)
            print(json.dumps({"name": name, "params": e.params, "gflops": e.gflops, **e.config.to_dict()}))
        return 0
    print(
        f"{'name':<40} {'params':>10} {'GFLOPs':>9} {'img':>9} {'window':>7} {'pretrained':>11} {'classes':>7}  notes"
    )
    for name in names:
        e = get_entry(name)
        h, w = to_pair(e.config.img_size)
        win = to_pair(e.config.window_size)
        pws = e.config.pretrained_window_sizes
        pretrained = ",".join(map(str, pws)) if any(pws) else "-"
        print(
            f"{name:<40} {e.params / 1e6:>9.2f}M {e.gflops:>9.3f} {f'{h}x{w}':>9} {win[0]:>7} {pretrained:>11} "
            f"{e.config.num_classes:>7}  {e.notes}"
        )
    return 0


def _convert(args: argparse.Namespace) -> int:
    from ..weights.checkpoint import load_state_dict_into, read_checkpoint, write_safetensors
    from ..weights.convert import convert_state_dict, detect_source, unwrap

    if not args.dst.endswith(".safetensors"):
        raise ValueError(f"DST must end in .safetensors, got {args.dst!r}")
    src = Path(args.src) / "model.safetensors" if Path(args.src).is_dir() else Path(args.src)
    if Path(args.dst).exists() and src.exists() and Path(args.dst).samefile(src):
        raise ValueError(f"DST {args.dst} is SRC's own file; write the conversion to another file")
    tensors, src_meta = read_checkpoint(args.src)
    source = detect_source(unwrap(tensors)) if args.source == "auto" else args.source
    converted = convert_state_dict(tensors, source)
    # this project's files keep what came with the weights: config, class names, preprocessing
    meta = {**(src_meta if source == "swinv2" else {}), "format": "swinv2", "converted_from": source}
    if args.model:
        from ..pretrained.factory import create_model

        overrides = {k: getattr(args, k) for k in ("num_classes", "in_chans") if getattr(args, k) is not None}
        if args.pretrained_window_sizes:
            overrides["pretrained_window_sizes"] = tuple(args.pretrained_window_sizes)
        model = create_model(args.model, **overrides)
        report = load_state_dict_into(model, converted, strict=False)
        print(f"checked against {args.model}: {report.summary()}")
        if not report.clean or report.adapted:
            # an adapted tensor (a re-created head, summed input channels, a resized table) is not the
            # checkpoint's: writing it would pass off new weights as a conversion
            print(
                "refusing to write a file that does not match the model: give the checkpoint's --num-classes, "
                "--in-chans or --pretrained-window-sizes, or drop --model to skip the check"
            )
            return 1
        meta["config"] = json.dumps(model.cfg.to_dict())
        converted = model.state_dict()
        if len(json.loads(meta.get("classes", "[]"))) != model.cfg.num_classes:
            meta.pop("classes", None)
    write_safetensors(converted, args.dst, meta)
    print(f"{args.src} ({source} layout, {len(converted)} tensors) -> {args.dst}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list registered models with params, GFLOPs, resolution and window")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'swinv2_tiny*'")
    p.add_argument("--json", action="store_true", help="one JSON object per model (full config)")
    p.add_argument(
        "--pretrained", action="store_true", help="the released weights instead: NAME.TAG, source, size, top-1"
    )
    p.set_defaults(func=_models)

    from ..weights.convert import SOURCES

    p = sub.add_parser("convert", help="convert a checkpoint of any known layout to this project's .safetensors")
    p.add_argument("src", help="official / timm / Hugging Face / torchvision checkpoint (.pth, .bin, .safetensors)")
    p.add_argument("dst", help="output .safetensors file")
    p.add_argument("--source", default="auto", choices=SOURCES, help="layout of SRC (default: detect)")
    p.add_argument("--model", help="registered model to check the result against (and record its config)")
    p.add_argument("--num-classes", type=positive, help="with --model: class count of the checkpoint's head")
    p.add_argument("--in-chans", type=positive, help="with --model: input channels of the checkpoint's patch embed")
    p.add_argument(
        "--pretrained-window-sizes", type=int, nargs="+", help="with --model: windows the checkpoint was trained with"
    )
    p.set_defaults(func=_convert)

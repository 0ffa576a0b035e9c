"""``swinv2 <command>``: a thin layer that parses arguments and calls library functions."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence


def _models(args: argparse.Namespace) -> int:
    from .models.config import to_pair
    from .registry import get_entry, list_models

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
    from .checkpoint import load_state_dict_into, read_checkpoint, write_safetensors
    from .convert import convert_state_dict, detect_source, unwrap

    tensors, _ = read_checkpoint(args.src)
    source = detect_source(unwrap(tensors)) if args.source == "auto" else args.source
    converted = convert_state_dict(tensors, source)
    meta = {"format": "swinv2", "converted_from": source}
    if args.model:
        from .factory import create_model

        overrides = {} if args.num_classes is None else {"num_classes": args.num_classes}
        if args.pretrained_window_sizes:
            overrides["pretrained_window_sizes"] = tuple(args.pretrained_window_sizes)
        model = create_model(args.model, **overrides)
        report = load_state_dict_into(model, converted, strict=False)
        print(f"checked against {args.model}: {report.summary()}")
        if not report.clean:
            print("refusing to write a file that does not match the model (drop --model to skip the check)")
            return 1
        meta["config"] = json.dumps(model.cfg.to_dict())
        converted = model.state_dict()
    write_safetensors(converted, args.dst, meta)
    print(f"{args.src} ({source} layout, {len(converted)} tensors) -> {args.dst}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="swinv2", description="Swin Transformer V2 on PyTorch.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("models", help="list registered models with params, GFLOPs, resolution and window")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'swinv2_tiny*'")
    p.add_argument("--json", action="store_true", help="one JSON object per model (full config)")
    p.set_defaults(func=_models)

    from .convert import SOURCES

    p = sub.add_parser("convert", help="convert a checkpoint of any known layout to this project's .safetensors")
    p.add_argument("src", help="official / timm / Hugging Face / torchvision checkpoint (.pth, .bin, .safetensors)")
    p.add_argument("dst", help="output .safetensors file")
    p.add_argument("--source", default="auto", choices=SOURCES, help="layout of SRC (default: detect)")
    p.add_argument("--model", help="registered model to check the result against (and record its config)")
    p.add_argument("--num-classes", type=int, help="with --model: class count of the checkpoint's head")
    p.add_argument(
        "--pretrained-window-sizes", type=int, nargs="+", help="with --model: windows the checkpoint was trained with"
    )
    p.set_defaults(func=_convert)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    if args.command == "convert" and not args.dst.endswith(".safetensors"):
        parser.error(f"DST must end in .safetensors, got {args.dst!r}")
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"swinv2 {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

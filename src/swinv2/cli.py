"""``swinv2 <command>``: a thin layer that parses arguments and calls library functions."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from .cli_errors import run_command
from .cli_flags import (
    NOT_PRETRAINING,
    PRETRAIN_FLAGS,
    TRAIN_FLAGS,
    add_run_flags,
    positive,
    positive_number,
    train_recipe,
)


def _models(args: argparse.Namespace) -> int:
    from .models.config import to_pair
    from .registry import get_entry, list_models

    if args.pretrained:
        from .weights.tags import print_catalogue

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
    from .checkpoint import load_state_dict_into, read_checkpoint, write_safetensors
    from .convert import convert_state_dict, detect_source, unwrap

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
        from .factory import create_model

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


def _train(args: argparse.Namespace) -> int:
    from .train import fit

    summary = fit(train_recipe(args), resume=bool(args.resume), progress=not args.no_progress)
    return 0 if summary is not None else 1


def _pretrain(args: argparse.Namespace) -> int:
    from .train.pretrain import pretrain

    summary = pretrain(train_recipe(args, pretraining=True), resume=bool(args.resume), progress=not args.no_progress)
    return 0 if summary is not None else 1


def _eval(args: argparse.Namespace) -> int:
    from .infer import evaluate_classifier

    result = evaluate_classifier(
        args.checkpoint,
        args.img_size,
        args.window_size,
        args.data,
        args.limit,
        args.device,
        args.batch_size,
        args.dtype,
        args.amp,
    )
    print(json.dumps(result))
    return 0


def _predict(args: argparse.Namespace) -> int:
    from .infer import load_classifier, predict_images, predict_onnx

    if (args.model is None) != (not args.pretrained):
        raise ValueError("--model NAME.TAG and --pretrained go together: predict with released weights")
    if args.model is not None:  # released weights by name: every positional is an image
        from .infer import released_classifier

        args.images = [args.checkpoint, *args.images]
        model, info = released_classifier(args.model, args.source, args.img_size, args.window_size)
        predictions = predict_images(model, info, args.images, args.topk)
    elif str(args.checkpoint).endswith(".onnx"):
        if args.img_size or args.window_size:
            raise ValueError("an ONNX file runs at the size it was exported at; re-export for another size")
        predictions = predict_onnx(args.checkpoint, args.images, args.topk)
    elif not args.images:
        raise ValueError("give the image files after the checkpoint")
    else:
        model, info = load_classifier(args.checkpoint, args.img_size, args.window_size)
        predictions = predict_images(model, info, args.images, args.topk)
    for path, top in zip(args.images, predictions):
        print(f"{path}: " + ", ".join(f"{name} {p:.3f}" for name, p in top))
    return 0


def _export(args: argparse.Namespace) -> int:
    from .deploy.export import check_opset, export_model

    suffix = {"onnx": ".onnx", "torchscript": ".pt", "export": ".pt2"}[args.format]
    if not str(args.output).endswith(suffix):
        raise ValueError(f"--format {args.format} writes a {suffix} file; got --output {args.output}")
    if args.format == "onnx":
        check_opset(args.opset)  # before loading the model: the range the installed exporter writes
    model = _model_to_export(args)
    checks = export_model(
        model, args.format, args.output, opset=args.opset, batches=tuple(args.check_batches), dynamic=args.dynamic
    )
    runner = {"onnx": "onnxruntime", "torchscript": "TorchScript", "export": "torch.export"}[args.format]
    frames = f", {model.cfg.num_frames} frames" if hasattr(model.cfg, "num_frames") else ""
    sizes = ", any batch, height and width" if args.dynamic else ""
    print(f"{args.output}: {type(model).__name__} at {model.cfg.img_size} px{frames}{sizes}, {args.format}")
    for check in checks:
        print(f"  {runner} vs PyTorch, {check.line()}")
    worst = max(c.max_diff for c in checks)
    if worst > args.tolerance:
        print(f"max |diff| {worst:.2e} exceeds --tolerance {args.tolerance:g}", file=sys.stderr)
        return 1
    return 0


def _model_to_export(args: argparse.Namespace):
    """--checkpoint alone: a folder or file of this project; with --model: any layout into that model."""
    if args.model is None and args.checkpoint is None:
        raise ValueError("give --model NAME, --checkpoint PATH (a run folder or save_pretrained folder), or both")
    if args.model is None:
        from .deploy import from_pretrained

        if args.num_classes is not None or args.in_chans is not None:
            raise ValueError(
                "--num-classes / --in-chans go with --model (a --checkpoint of this project knows its shape)"
            )
        model = from_pretrained(args.checkpoint)
    else:
        from .factory import create_model

        overrides = {k: getattr(args, k) for k in ("num_classes", "in_chans") if getattr(args, k) is not None}
        model = create_model(args.model, pretrained=args.checkpoint, **overrides)
        report = getattr(model, "load_report", None)
        if report is not None and (not report.clean or report.adapted):
            raise ValueError(
                f"{args.checkpoint} does not fit {args.model} as given ({report.summary()}); give the "
                "checkpoint's --num-classes / --in-chans, or export without --checkpoint for random weights"
            )
    if hasattr(model.cfg, "num_frames"):  # a video model: its clip size is fixed, its spatial window is not
        if args.img_size:
            raise ValueError("--img-size: a video model exports at its clip size; --window-size sets its window")
        if args.window_size:
            model.set_window((model.cfg.window_size[0], args.window_size, args.window_size))
    elif args.img_size or args.window_size:
        model.set_input_size(img_size=args.img_size, window_size=args.window_size)
    return model.eval()


def _bench_memory(args: argparse.Namespace) -> int:
    from .memory_bench import main as run_memory_benchmark
    from .train.loop import resolve_device

    resolve_device(args.device)  # a missing CUDA device is named before any model is built

    run_memory_benchmark(
        model_name=args.model,
        img_size=args.img_size,
        batch=args.batch_size,
        peers=tuple(p for p in args.peers.split(",") if p),
        device=args.device,
    )
    return 0


def _bench_max_res(args: argparse.Namespace) -> int:
    from .max_resolution import main as run_search
    from .max_resolution import nothing_fitted
    from .train.loop import resolve_device

    resolve_device(args.device)

    result = run_search(
        model_name=args.model,
        window_size=args.window_size,
        savers=tuple(args.savers.split(",")),
        device=args.device,
        capacity_gib=args.capacity_gib,
        step=args.step,
        start=args.start,
        budget_s=args.budget_s,
        isolate=args.isolate,
    )
    failure = nothing_fitted(result)
    if failure:
        print(f"swinv2 bench-max-res: error: {failure}", file=sys.stderr)
        return 1
    return 0


def _plan(args: argparse.Namespace) -> int:
    from .plan import main as run_plan

    run_plan(
        model_name=args.model,
        img_size=args.img_size,
        window_size=args.window_size,
        batch_size=args.batch_size,
        world_size=args.world_size,
        strategy=args.strategy,
        amp=args.amp,
        fit_gib=args.fit_gib,
    )
    return 0


def _bench(args: argparse.Namespace) -> int:
    from .bench import main as run_benchmark

    run_benchmark(
        model_name=args.model,
        img_size=args.img_size,
        batch=args.batch_size,
        peers=tuple(p for p in args.peers.split(",") if p),
        modes=tuple(args.modes.split(",")),
        rounds=args.rounds,
        iters=args.iters,
        device=args.device,
        window_size=args.window_size,
        agreement_inputs=args.agreement_inputs,
    )
    return 0


def _study(args: argparse.Namespace) -> int:
    from .studies import ablation, amplitude, simmim, transfer

    if args.name == "simmim":
        simmim.run(args.output, progress=not args.no_progress, seeds=tuple(args.seeds))
    else:
        study = {"amplitude": amplitude, "transfer": transfer, "ablation": ablation}[args.name]
        study.run(args.output, quick=args.quick, progress=not args.no_progress)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="swinv2", description="Swin Transformer V2 on PyTorch.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("models", help="list registered models with params, GFLOPs, resolution and window")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'swinv2_tiny*'")
    p.add_argument("--json", action="store_true", help="one JSON object per model (full config)")
    p.add_argument(
        "--pretrained", action="store_true", help="the released weights instead: NAME.TAG, source, size, top-1"
    )
    p.set_defaults(func=_models)

    from .convert import SOURCES

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

    p = sub.add_parser("train", help="train or fine-tune a classifier (Fashion-MNIST by default)")
    add_run_flags(p, TRAIN_FLAGS)
    p.set_defaults(func=_train)

    p = sub.add_parser("pretrain", help="SimMIM self-supervised pretraining (labels ignored; Fashion-MNIST by default)")
    add_run_flags(p, {k: v for k, v in {**TRAIN_FLAGS, **PRETRAIN_FLAGS}.items() if k not in NOT_PRETRAINING})
    p.set_defaults(func=_pretrain)

    p = sub.add_parser("study", help="the paper's experiments in miniature, on Fashion-MNIST")
    p.add_argument(
        "name",
        choices=("simmim", "amplitude", "transfer", "ablation"),
        help="simmim: label efficiency of SimMIM pretraining; amplitude: activations along depth, pre-norm vs "
        "res-post-norm; transfer: position biases evaluated at larger windows; ablation: V1 block vs "
        "+ res-post-norm vs + cosine attention",
    )
    p.add_argument("--output", required=True, help="folder for the runs, results.json and results.md")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="simmim: fine-tuning seeds of both arms")
    p.add_argument(
        "--quick",
        action="store_true",
        help="a short budget (amplitude: 150 steps, not 1,500; transfer: 2 epochs of 10,000 images; "
        "ablation: 1 epoch of 10,000)",
    )
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_study)

    p = sub.add_parser("eval", help="top-1 / top-5 of a trained checkpoint on a dataset, at any size and window")
    p.add_argument("checkpoint", help="run folder or model.safetensors written by `swinv2 train`")
    p.add_argument(
        "--data", help="image folder (its val/ split; default: the run's own data, else Fashion-MNIST's test set)"
    )
    p.add_argument("--img-size", type=int)
    p.add_argument("--window-size", type=int)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--limit", type=positive, help="evaluate the first N images only")
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--dtype",
        default="float32",
        choices=("float32", "bfloat16"),
        help="weights and activations; bfloat16 is ~2x faster on CPUs with AVX-512 BF16 or AMX",
    )
    p.add_argument(
        "--amp",
        choices=("auto", "none", "bf16"),
        help="autocast of the forward passes (default: the run's own, so that eval repeats its evaluation)",
    )
    p.set_defaults(func=_eval)

    p = sub.add_parser("predict", help="top-k class names for image files")
    p.add_argument(
        "checkpoint",
        help="run folder, model.safetensors, save_pretrained folder or exported .onnx file (an image with --model)",
    )
    p.add_argument("images", nargs="*")
    p.add_argument("--model", help="released weights NAME.TAG instead of a checkpoint (with --pretrained)")
    p.add_argument(
        "--pretrained", action="store_true", help="with --model: its released weights (see models --pretrained)"
    )
    p.add_argument("--source", default="auto", help="with --model: timm, hf, official or torchvision (default: auto)")
    p.add_argument("--topk", type=positive, default=5)
    p.add_argument("--img-size", type=int)
    p.add_argument("--window-size", type=int)
    p.set_defaults(func=_predict)

    from .deploy.export import FORMATS

    p = sub.add_parser("export", help="ONNX / TorchScript / torch.export file of a model, checked against PyTorch")
    p.add_argument("--model", help="registered model name (random weights unless --checkpoint)")
    p.add_argument("--checkpoint", help="weights: a run or save_pretrained folder, or any layout with --model")
    p.add_argument("--num-classes", type=positive, help="with --model: class count of the checkpoint's head")
    p.add_argument("--in-chans", type=positive, help="with --model: input channels of the checkpoint's patch embed")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--output", required=True, help="file to write (.onnx, .pt, .pt2)")
    p.add_argument("--img-size", type=positive, help="export at this image size (default: the model's)")
    p.add_argument("--window-size", type=positive, help="attention window at that size")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (one the exporter cannot write is refused)")
    p.add_argument("--check-batches", type=positive, nargs="+", default=[1, 3], help="batch sizes compared")
    p.add_argument(
        "--dynamic",
        action="store_true",
        help="one file for every batch, height and width (onnx / export; checked at other sizes too)",
    )
    p.add_argument("--tolerance", type=positive_number, default=1e-4, help="largest |diff| accepted (exit 1 beyond)")
    p.set_defaults(func=_export)

    p = sub.add_parser("bench", help="throughput, peak memory and MFU against timm, Hugging Face and torchvision")
    p.add_argument("--model", default="swinv2_tiny_window8_256", help="a timm-named registry entry")
    p.add_argument("--img-size", type=int, default=256)
    p.add_argument("--batch-size", type=positive, default=8)
    p.add_argument(
        "--peers",
        default="timm,hf,torchvision",
        help="comma-separated, of timm, hf, torchvision, compiled (ours under torch.compile); empty for ours only",
    )
    p.add_argument("--modes", default="infer_fp32,infer_bf16,train_fp32,train_bf16")
    p.add_argument("--rounds", type=positive, default=5, help="interleaved rounds (the median is reported)")
    p.add_argument("--iters", type=positive, default=2, help="timed calls per contender per round")
    p.add_argument("--window-size", type=int, help="replace the model's window in every contender")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--agreement-inputs", type=positive, default=256, help="random inputs of the bf16 top-1 agreement check"
    )
    p.set_defaults(func=_bench)

    p = sub.add_parser("bench-memory", help="peak memory of a high-resolution training step: savers vs timm")
    p.add_argument("--model", default="swinv2_tiny_window8_256", help="a timm-named registry entry")
    p.add_argument("--img-size", type=positive, default=1024)
    p.add_argument("--batch-size", type=positive, default=1)
    p.add_argument("--peers", default="timm", choices=("timm", ""), help="timm, or empty for this project's rows only")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_bench_memory)

    from .max_resolution import SAVER_SETS

    p = sub.add_parser("bench-max-res", help="largest image side one device trains at, plain and with savers")
    p.add_argument("--model", default="swinv2_base_window16_256", help="registry name")
    p.add_argument("--window-size", type=positive)
    p.add_argument("--savers", default=",".join(SAVER_SETS), help=f"comma-separated, of {', '.join(SAVER_SETS)}")
    p.add_argument("--device", default="cuda")
    p.add_argument("--capacity-gib", type=positive_number, help="memory a trial may use (default: the whole GPU)")
    p.add_argument("--step", type=positive, default=256, help="sides tried are multiples of this")
    p.add_argument("--start", type=positive, default=1024, help="first side tried")
    p.add_argument("--budget-s", type=positive_number, default=120.0, help="search time per saver set")
    p.add_argument(
        "--isolate",
        action=argparse.BooleanOptionalAction,
        help="one process per saver set (default: on a GPU, where running out of memory can spoil the context)",
    )
    p.set_defaults(func=_bench_max_res)

    from .plan import STRATEGIES

    p = sub.add_parser("plan", help="per-rank memory of a training job (params, grads, AdamW, activations)")
    p.add_argument("--model", required=True, help="registry name, e.g. swinv2_giant_window12to40_192to640")
    p.add_argument("--img-size", type=positive)
    p.add_argument("--window-size", type=positive)
    p.add_argument("--batch-size", type=positive, default=1, help="images per rank")
    p.add_argument("--world-size", type=positive, default=1)
    p.add_argument("--strategy", default="fsdp", choices=STRATEGIES)
    p.add_argument("--amp", default="bf16", choices=("none", "bf16", "fp16"))
    p.add_argument(
        "--fit-gib", type=positive_number, help="instead: the largest image side (multiple of 128) fitting this"
    )
    p.set_defaults(func=_plan)

    from .cli_dense import add_dense_commands
    from .cli_video import add_video_commands

    add_dense_commands(sub)
    add_video_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    return run_command(args)


if __name__ == "__main__":
    sys.exit(main())

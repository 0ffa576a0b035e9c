"""``swinv2 export``: ONNX, TorchScript and torch.export files, checked against PyTorch."""

from __future__ import annotations

import argparse
import sys

from .common import (
    positive,
    positive_number,
)


def _export(args: argparse.Namespace) -> int:
    from ..deploy.export import check_opset, export_model

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
        from ..deploy import from_pretrained

        if args.num_classes is not None or args.in_chans is not None:
            raise ValueError(
                "--num-classes / --in-chans go with --model (a --checkpoint of this project knows its shape)"
            )
        model = from_pretrained(args.checkpoint)
    else:
        from ..pretrained.factory import create_model

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


def add_commands(sub: argparse._SubParsersAction) -> None:
    from ..deploy.export import FORMATS

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

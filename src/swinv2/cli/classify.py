"""``swinv2 train | pretrain | eval | predict``: image classification and SimMIM pretraining."""

from __future__ import annotations

import argparse
import json

from .common import (
    add_run_flags,
    positive,
    recipe_flags,
    train_recipe,
)


def _train(args: argparse.Namespace) -> int:
    from ..train import fit

    summary = fit(train_recipe(args), resume=bool(args.resume), progress=not args.no_progress)
    return 0 if summary is not None else 1


def _pretrain(args: argparse.Namespace) -> int:
    from ..train.pretrain import pretrain

    summary = pretrain(train_recipe(args, pretraining=True), resume=bool(args.resume), progress=not args.no_progress)
    return 0 if summary is not None else 1


def _eval(args: argparse.Namespace) -> int:
    from ..deploy.infer import evaluate_classifier

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
    from ..deploy.infer import load_classifier, predict_images, predict_onnx

    if (args.model is None) != (not args.pretrained):
        raise ValueError("--model NAME.TAG and --pretrained go together: predict with released weights")
    if args.model is not None:  # released weights by name: every positional is an image
        from ..deploy.infer import released_classifier

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


def add_commands(sub: argparse._SubParsersAction) -> None:
    from ..train.pretrain import PretrainRecipe
    from ..train.recipe import TrainRecipe

    p = sub.add_parser("train", help="train or fine-tune a classifier (Fashion-MNIST by default)")
    add_run_flags(p, recipe_flags(TrainRecipe))
    p.set_defaults(func=_train)

    p = sub.add_parser("pretrain", help="SimMIM self-supervised pretraining (labels ignored; Fashion-MNIST by default)")
    add_run_flags(p, recipe_flags(PretrainRecipe))
    p.set_defaults(func=_pretrain)

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
        help="weights and activations; bfloat16 is faster on CPUs with AVX-512 BF16 or AMX (docs/results.md)",
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

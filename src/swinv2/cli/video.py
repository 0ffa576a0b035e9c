"""``swinv2 video train|eval|predict``: video action recognition on the command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..runs import expect_run


def _flags() -> dict:
    from ..video.train import VideoRecipe
    from .common import recipe_flags

    return recipe_flags(VideoRecipe)


def _train(args: argparse.Namespace) -> int:
    from ..train import fit
    from ..video.train import VideoRecipe, VideoTrainer

    if args.resume:
        from .common import resume_recipe

        recipe = resume_recipe(VideoRecipe, args, _flags(), "video")
    else:
        given = {k: getattr(args, k) for k in _flags() if getattr(args, k, None) is not None}
        if "window_size" in given:
            from ..video.registry import get_video_config

            given["window_size"] = (
                get_video_config(given.get("model", VideoRecipe.model)).window_size[0],
                given["window_size"],
            )
        recipe = VideoRecipe(**given)
    fit(recipe, resume=bool(args.resume), progress=not args.no_progress, trainer_class=VideoTrainer)
    return 0


def _load_run(run: str, device: str | None):
    """``(recipe, model on its device in eval mode, class names, normalisation)`` of a video run; the
    normalisation is the run's ``{"mean": ..., "std": ...}``."""
    from ..train.loop import resolve_device
    from ..video.registry import create_video_model
    from ..video.train import VideoRecipe
    from ..weights.checkpoint import read_checkpoint

    expect_run(run, ("video",), "`swinv2 video eval` / `predict`")
    run_dir = Path(run)
    recipe = VideoRecipe.load(run_dir / "config.json")
    _, meta = read_checkpoint(run_dir / "model.safetensors")
    classes = json.loads(meta.get("classes", "[]"))
    model = create_video_model(
        recipe.model,
        pretrained=run_dir / "model.safetensors",
        strict=True,
        num_classes=len(classes),
        in_chans=json.loads(meta["config"])["in_chans"],
    )
    norm = {k: tuple(json.loads(meta[k])) for k in ("mean", "std")}
    return recipe, model.to(resolve_device(device or recipe.device)).eval(), classes, norm


def _eval(args: argparse.Namespace) -> int:
    import dataclasses

    from torch.utils.data import DataLoader

    from ..data.datasets import ReadableCollate, take_unreadable
    from ..train.loop import resolve_device
    from ..video.train import eval_data, evaluate_clips, one_frame

    recipe, model, classes, norm = _load_run(args.run, args.device)
    changes = {k: getattr(args, k) for k in ("data", "test_clips", "test_crops", "val_limit")}
    recipe = dataclasses.replace(recipe, **{k: v for k, v in changes.items() if v is not None})  # checks them
    if args.window_size is not None:
        model.set_window((model.cfg.window_size[0], args.window_size, args.window_size))
    val, views = eval_data(recipe, model, classes, **norm)
    loader = DataLoader(val, batch_size=max(1, recipe.batch_size // views), collate_fn=ReadableCollate(val))
    device = resolve_device(args.device or recipe.device)
    scores = evaluate_clips(model, loader, device, recipe.amp, one_frame if args.single_frame else None)
    unreadable = take_unreadable(val)
    for path in unreadable[:5]:
        print(f"skipped unreadable clip: {path}", file=sys.stderr)
    result = {"run": args.run, "views": views, "single_frame": args.single_frame, **scores}
    result.update(clips=len(val), unreadable_clips=len(unreadable))
    print(json.dumps(result))
    return 0


def _predict(args: argparse.Namespace) -> int:
    import torch

    from ..video.data import ClipSampling, read_frames, test_views

    recipe, model, classes, norm = _load_run(args.run, args.device)
    device = next(model.parameters()).device
    size = model.cfg.img_size if isinstance(model.cfg.img_size, int) else model.cfg.img_size[0]
    sampling = ClipSampling(model.cfg.num_frames, recipe.frame_stride, size, args.clips, 1, **norm)
    for path in args.videos:
        views = test_views(read_frames(Path(path)), sampling)
        with torch.no_grad():
            probs = model(views.to(device)).softmax(-1).mean(0)
        top = probs.topk(min(args.topk, len(classes)))
        print(
            json.dumps(
                {
                    "video": path,
                    "top": [[classes[i], round(p, 4)] for p, i in zip(top.values.tolist(), top.indices.tolist())],
                }
            )
        )
    return 0


def _models(args: argparse.Namespace) -> int:
    import torch

    from ..video.model import VideoSwinV2
    from ..video.registry import VIDEO_MODELS

    for name, cfg in sorted(VIDEO_MODELS.items()):
        with torch.device("meta"):
            params = sum(p.numel() for p in VideoSwinV2(cfg).parameters())
        t, h, w = cfg.window_size
        print(f"{name:<36} {params / 1e6:>8.2f}M  {cfg.num_frames} x {cfg.img_size} px  window {t}x{h}x{w}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    top = sub.add_parser("video", help="video SwinV2: action recognition (Moving Fashion-MNIST by default)")
    actions = top.add_subparsers(dest="action", required=True)
    p = actions.add_parser("train", help="train into a run folder")
    from .common import add_run_flags, positive

    add_run_flags(p, _flags())  # the switches and --resume / --no-progress of `swinv2 train`
    p.set_defaults(func=_train)

    p = actions.add_parser("eval", help="top-1 of a finished run, optionally multi-view or from one frame")
    p.add_argument("run", help="run folder written by train")
    p.add_argument("--data", help="another clip folder (val.csv, labels among the run's classes)")
    p.add_argument("--test-clips", type=positive, help="temporal views (clip folders only)")
    p.add_argument("--test-crops", type=int, choices=(1, 3), help="spatial views (clip folders only)")
    p.add_argument("--window-size", type=positive, help="spatial window at test time")
    p.add_argument("--val-limit", type=positive, help="first N clips only")
    p.add_argument("--single-frame", action="store_true", help="show the model one frame, repeated")
    p.add_argument("--device")
    p.set_defaults(func=_eval)

    p = actions.add_parser("predict", help="top-k classes for video files or frame folders")
    p.add_argument("run", help="run folder written by train")
    p.add_argument("videos", nargs="+")
    p.add_argument("--clips", type=positive, default=1, help="temporal views averaged")
    p.add_argument("--topk", type=positive, default=3)
    p.add_argument("--device")
    p.set_defaults(func=_predict)

    p = actions.add_parser("models", help="list the registered video models")
    p.set_defaults(func=_models)

"""``swinv2 detect|segment train|eval|predict`` and ``swinv2 scenes``: dense tasks on the command line."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..runs import expect_run
from .common import Flag, add_flags, add_run_flags, positive, recipe_flags

# --test-size means what each task's testing convention does: detectors resize every image to a shorter side
# (as Mask R-CNN tests at 800), segmentation scales images by test-size / training size (as mmseg's ratios).
TEST_SIZE_HELP = {
    "detect": "resize test images to this shorter side in pixels (default: the training --img-size)",
    "segment": "scale test images by this / the training --img-size (default: their own size)",
}


def _json_path(text: str) -> str:
    """An argparse type: a ``.json`` path that is not a folder, checked before the evaluation runs (and
    never a run's weights, which ``--json RUN/model.safetensors`` used to overwrite)."""
    if not text.endswith(".json"):
        raise argparse.ArgumentTypeError(f"expected a file name ending in .json, got {text!r}")
    if Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; expected a .json file name")
    return text


def _test_flags(task: str) -> dict[str, Flag]:
    return {
        "test_size": Flag(positive, TEST_SIZE_HELP[task]),
        "test_window": Flag(positive, "attention window at test time (default: the training window)"),
    }


def _task_flags(task: str) -> dict:
    """The flags of ``swinv2 TASK train``: the dense recipe's, less the other task's own."""
    from ..dense.recipe import DenseRecipe

    others = tuple(name for t, names in DenseRecipe.TASK_ONLY.items() if t != task for name in names)
    return recipe_flags(DenseRecipe, skip=others)


def _recipe_from_args(args: argparse.Namespace):
    from ..dense.recipe import DenseRecipe

    flags = _task_flags(args.task)
    if args.resume:
        from .common import resume_recipe

        return resume_recipe(DenseRecipe, args, flags, args.task)
    given = {k: getattr(args, k) for k in flags if getattr(args, k, None) is not None}
    return DenseRecipe(task=args.task, **given)


def _train(args: argparse.Namespace) -> int:
    from ..dense.engine import fit_dense

    recipe = _recipe_from_args(args)
    fit_dense(recipe, resume=bool(args.resume), progress=not args.no_progress)
    return 0


def _eval(args: argparse.Namespace) -> int:
    from ..dense.inference import load_run

    expect_run(args.run, (args.task,), f"`swinv2 {args.task} eval`")
    changes = {k: getattr(args, k) for k in ("test_size", "test_window", "data", "val_limit", "device")}
    if args.task == "segment":
        changes["slide"] = args.slide or None
    run = load_run(args.run, **changes)
    scores = run.evaluate()
    result = {"run": args.run, "test_size": run.recipe.eval_size, "test_window": args.test_window, **scores}
    print(json.dumps(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from ..dense.inference import load_run, predict_files

    expect_run(args.run, (args.task,), f"`swinv2 {args.task} predict`")
    run = load_run(args.run, test_size=args.test_size, test_window=args.test_window, device=args.device)
    for path in predict_files(run, args.images, Path(args.output)):
        print(path)
    return 0


def _scenes(args: argparse.Namespace) -> int:
    from ..data.scenes import SceneSpec, ensure_scenes

    spec = SceneSpec(size=args.size, train_scenes=args.train, test_scenes=args.test, seed=args.seed)
    print(ensure_scenes(args.output, spec))
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    for task, text in (("detect", "Mask / Faster R-CNN"), ("segment", "UperNet semantic segmentation")):
        top = sub.add_parser(task, help=f"{text} on a SwinV2 backbone (Fashion-MNIST scenes by default)")
        actions = top.add_subparsers(dest="action", required=True)
        p = actions.add_parser("train", help="train into a run folder")
        train_flags = _task_flags(task)
        add_run_flags(p, train_flags)
        p.set_defaults(func=_train, task=task)

        p = actions.add_parser("eval", help="score a finished run (optionally at another size and window)")
        p.add_argument("run", help="run folder written by train")
        add_flags(p, {**_test_flags(task), "data": train_flags["data"], "val_limit": train_flags["val_limit"]})
        p.add_argument("--device", help="auto, cpu, cuda, cuda:N")
        if task == "segment":
            p.add_argument("--slide", action="store_true", help="sliding training-size windows, not whole images")
        p.add_argument("--json", type=_json_path, help="also write the scores to this .json file")
        p.set_defaults(func=_eval, task=task)

        p = actions.add_parser("predict", help="draw predictions on image files")
        p.add_argument("run", help="run folder written by train (its data is not needed)")
        p.add_argument("images", nargs="+", help="image files or folders of them (other files are skipped)")
        p.add_argument("--output", required=True, help="folder for the pictures")
        add_flags(p, _test_flags(task))
        p.add_argument("--device", help="auto, cpu, cuda, cuda:N")
        p.set_defaults(func=_predict, task=task)

    p = sub.add_parser("scenes", help="write the Fashion-MNIST scenes dataset (COCO + mask folders)")
    p.add_argument("--output", help="folder (default: in the user cache, where train looks); rebuilt in place")
    p.add_argument("--size", type=int, default=128, help="canvas side in pixels")
    p.add_argument("--train", type=positive, default=5000, help="training scenes")
    p.add_argument("--test", type=positive, default=1000, help="test scenes")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_scenes)

"""The flags of ``swinv2``'s run commands (train, pretrain, and the video and dense ones), their argparse
types, and the recipe they build, fresh or from a run folder being resumed."""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple


def on_off(text: str) -> bool:
    """An argparse type: on / off (yes / no, true / false, 1 / 0)."""
    value = {"on": True, "yes": True, "true": True, "1": True, "off": False, "no": False, "false": False, "0": False}
    if text.lower() not in value:
        raise argparse.ArgumentTypeError(f"expected on or off, got {text!r}")
    return value[text.lower()]


def positive_number(text: str) -> float:
    """An argparse type: a finite number > 0 (NaN and inf pass ``<`` checks and break arithmetic later)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text}")
    return value


def positive(text: str) -> int:
    """An argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value}")
    return value


class Flag(NamedTuple):
    """One flag of a run command, read from a recipe field declared with ``swinv2.train.recipe.flag``."""

    kind: Callable  # the argparse type; bool: a switch
    text: str
    nargs: str | None = None
    resume: bool = False  # --resume may change it


def recipe_flags(recipe_class: type, skip: tuple[str, ...] = ()) -> dict[str, Flag]:
    """The flags of the command that runs ``recipe_class``: every field declared as a flag there or in a
    base whose default it changes, except the class's ``NOT_FLAGS`` and ``skip``."""
    flags = {}
    for f in dataclasses.fields(recipe_class):
        meta = _flag_metadata(recipe_class, f.name)
        if meta is None or f.name in recipe_class.NOT_FLAGS or f.name in skip:
            continue
        kind, nargs = _kind(meta, str(f.type))
        flags[f.name] = Flag(kind, meta["help"], nargs, meta["resume"])
    return flags


def _flag_metadata(recipe_class: type, name: str):
    for cls in recipe_class.__mro__:
        own = {f.name: f for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else {}
        if name in own and "help" in own[name].metadata:
            return own[name].metadata
    return None


def _kind(meta, annotation: str) -> tuple[Callable, str | None]:
    """(argparse type, nargs) of a field from its annotation, as written (``int | None``, ``tuple[int, ...]``)."""
    if meta["kind"] is not None:
        return meta["kind"], None
    base = annotation.replace(" | None", "").strip()
    if base == "bool":
        return (on_off if meta["on_off"] else bool), None
    nargs = None
    if base.startswith("tuple[") and base.endswith(", ...]"):  # several values, each of the item type
        base, nargs = base[len("tuple[") : -len(", ...]")], "+"
    types = {"int": int, "float": float, "str": str}
    if base not in types:
        raise TypeError(f"a flag needs a kind= for a field annotated {annotation!r}")
    return types[base], nargs


def train_flags() -> dict[str, Flag]:
    """The flags of ``swinv2 train``."""
    from ..train.recipe import TrainRecipe

    return recipe_flags(TrainRecipe)


def add_flags(p: argparse.ArgumentParser, flags: dict[str, Flag]) -> None:
    """``--name`` options for ``flags``; each is None when absent, so that a resume can tell it was not given."""
    for name, flag in flags.items():
        option = "--" + name.replace("_", "-")
        if flag.kind is bool:  # a switch
            p.add_argument(option, dest=name, action="store_const", const=True, help=flag.text)
            continue
        p.add_argument(option, dest=name, type=flag.kind, nargs=flag.nargs, help=flag.text)


def add_run_flags(p: argparse.ArgumentParser, flags: dict[str, Flag]) -> None:
    """A run command's flags, with ``--resume`` and ``--no-progress``."""
    add_flags(p, flags)
    p.add_argument("--resume", help="continue the run in this folder where it stopped")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (epoch lines only)")


def train_recipe(args: argparse.Namespace, pretraining: bool = False):
    """The recipe of ``swinv2 train`` / ``pretrain``: from the flags given, or the resumed run's with them."""
    from ..train import TrainRecipe
    from ..train.pretrain import PretrainRecipe

    cls = PretrainRecipe if pretraining else TrainRecipe
    flags = recipe_flags(cls)
    if args.resume:
        return resume_recipe(cls, args, flags, "pretrain" if pretraining else "classify")
    fields = {f: getattr(args, f) for f in flags if getattr(args, f, None) is not None}
    return cls(**fields)


def resume_recipe(cls, args: argparse.Namespace, flags: dict[str, Flag], kind: str):
    """The recipe saved in ``args.resume`` (a run of ``kind``) with the flags given now, refusing those a
    resume cannot change."""
    from ..runs import KINDS, expect_run

    expect_run(args.resume, (kind,), f"`{KINDS[kind][1]} --resume`", action="resume")
    recipe = cls.load(Path(args.resume) / "config.json")
    given = {f for f in flags if getattr(args, f, None) is not None}
    resumable = {name for name, flag in flags.items() if flag.resume}
    refused = sorted(given - resumable)
    if refused:
        names = ", ".join("--" + f.replace("_", "-") for f in refused)
        allowed = ", ".join("--" + f.replace("_", "-") for f in sorted(resumable))
        raise ValueError(
            f"{names} cannot change when resuming (the run's recipe is {Path(args.resume) / 'config.json'}); "
            f"a resume may change {allowed}"
        )
    return dataclasses.replace(recipe, **{f: getattr(args, f) for f in given}, output=args.resume)

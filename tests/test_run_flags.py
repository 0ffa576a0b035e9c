"""The run commands' flags come from the recipe dataclasses' field metadata, not from a list kept by hand."""

from __future__ import annotations

import dataclasses

import pytest

from swinv2.cli import build_parser
from swinv2.cli.common import recipe_flags
from swinv2.dense.recipe import DenseRecipe
from swinv2.train.pretrain import PretrainRecipe
from swinv2.train.recipe import TrainRecipe, flag
from swinv2.video.train import VideoRecipe

COMMANDS = {
    ("train",): TrainRecipe,
    ("pretrain",): PretrainRecipe,
    ("video", "train"): VideoRecipe,
    ("detect", "train"): DenseRecipe,
    ("segment", "train"): DenseRecipe,
}


def _options(*command: str) -> dict[str, str]:
    """dest -> help of the options a subcommand's parser holds, from the parser itself."""
    parser = build_parser()
    for name in command:
        sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
        parser = sub.choices[name]
    return {
        a.dest: a.help for a in parser._actions if a.option_strings and a.dest not in ("help", "resume", "no_progress")
    }


def _flagged(cls) -> set[str]:
    """Fields declared with flag() in the class or a base."""
    return {
        f.name
        for c in cls.__mro__
        if dataclasses.is_dataclass(c)
        for f in dataclasses.fields(c)
        if "help" in f.metadata
    }


@pytest.mark.parametrize("command", sorted(COMMANDS), ids=" ".join)
def test_every_flagged_field_is_an_option_with_its_help(command):
    cls = COMMANDS[command]
    options = _options(*command)
    expected = _flagged(cls) - set(cls.NOT_FLAGS)
    if cls is DenseRecipe:
        other = "segment" if command[0] == "detect" else "detect"
        expected -= set(DenseRecipe.TASK_ONLY[other])
    assert set(options) == expected
    for name, text in options.items():
        assert text == recipe_flags(cls)[name].text, name
    print(command, len(options), "options")


def test_a_subclass_that_changes_a_default_keeps_the_bases_flag():
    assert PretrainRecipe.epochs != TrainRecipe.epochs  # redeclared without flag() ...
    assert recipe_flags(PretrainRecipe)["epochs"] == recipe_flags(TrainRecipe)["epochs"]  # ... still a flag
    assert "mixup" in recipe_flags(TrainRecipe) and "mixup" not in recipe_flags(PretrainRecipe)  # NOT_FLAGS
    assert recipe_flags(VideoRecipe)["model"].text != recipe_flags(TrainRecipe)["model"].text  # its own help


def test_types_nargs_and_switches_follow_the_annotations():
    flags = recipe_flags(TrainRecipe)
    assert flags["lr"].kind is float and flags["epochs"].kind is int and flags["model"].kind is str
    assert flags["pretrained_window_sizes"].nargs == "+" and flags["pretrained_window_sizes"].kind is int
    assert flags["skip_nonfinite"].kind is bool  # a switch
    assert flags["grad_checkpointing"].kind("off") is False  # on / off
    assert recipe_flags(VideoRecipe)["window_size"].kind is int  # kind= where the annotation is wider
    args = build_parser().parse_args(["train", "--pretrained-window-sizes", "8", "8", "8", "--skip-nonfinite"])
    assert args.pretrained_window_sizes == [8, 8, 8] and args.skip_nonfinite is True and args.lr is None


def test_what_a_resume_may_change_is_read_from_the_fields():
    resumable = {name for name, f in recipe_flags(TrainRecipe).items() if f.resume}
    assert resumable == {
        "epochs", "lr", "min_lr", "clip_grad", "amp", "skip_nonfinite", "strategy", "meta_init",
        "grad_checkpointing", "sequential_attention", "sequential_mlp", "device", "workers", "dist_timeout",
        "checkpoint_every", "checkpoint_minutes", "keep_checkpoints", "compile",
    }  # fmt: skip
    dense = {name for name, f in recipe_flags(DenseRecipe).items() if f.resume}
    assert dense == resumable  # one engine: a dense run resumes with the same flags


def test_dense_commands_take_the_engines_flags_and_not_classifications():
    train = set(recipe_flags(TrainRecipe))
    for task in ("detect", "segment"):
        others = tuple(n for t, names in DenseRecipe.TASK_ONLY.items() if t != task for n in names)
        dense = set(recipe_flags(DenseRecipe, skip=others))
        engine = {"strategy", "ema_decay", "accum_steps", "compile", "checkpoint_every", "grad_checkpointing"}
        assert engine <= dense, engine - dense
        assert not dense & {"mixup", "cutmix", "crop", "randaugment", "label_smoothing", "layer_decay"}
        assert train - dense == set(DenseRecipe.NOT_FLAGS) - {"model_overrides"}, train - dense
    args = build_parser().parse_args(["detect", "train", "--strategy", "ddp", "--ema-decay", "0.99", "--compile", "on"])
    assert (args.strategy, args.ema_decay, args.compile) == ("ddp", 0.99, True)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["segment", "train", "--mixup", "0.2"])


def test_a_new_recipe_field_becomes_a_flag_and_an_unparseable_one_is_refused():
    @dataclasses.dataclass
    class Wider(TrainRecipe):
        warmup_steps: int | None = flag(None, "linear warmup in optimiser steps")
        sizes: tuple[float, ...] = flag((1.0,), "scales")

    flags = recipe_flags(Wider)
    assert flags["warmup_steps"].text == "linear warmup in optimiser steps" and flags["warmup_steps"].kind is int
    assert flags["sizes"].kind is float and flags["sizes"].nargs == "+"

    @dataclasses.dataclass
    class Unparseable(TrainRecipe):
        shift: complex = flag(0j, "a complex number")

    with pytest.raises(TypeError, match="kind="):
        recipe_flags(Unparseable)

"""The flags of ``swinv2``'s run commands (train, pretrain, and the video and dense ones), their argparse
types, and the recipe they build, fresh or from a run folder being resumed."""

from __future__ import annotations

import argparse
import math
from pathlib import Path


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


TRAIN_FLAGS = {
    "model": (str, "registered model name (see `swinv2 models`)"),
    "data": (str, "image folder with train/<class>/* and val/<class>/* (default: Fashion-MNIST)"),
    "pretrained": (str, "checkpoint of any known layout to fine-tune from"),
    "img_size": (int, "training resolution (default: the model's)"),
    "window_size": (int, "attention window (default: the model's)"),
    "pretrained_window_sizes": (int, "windows the --pretrained file was trained with, one per stage"),
    "output": (str, "run folder (default: runs/<timestamp>)"),
    "epochs": (int, "training epochs"),
    "batch_size": (int, "images per step (per accumulation step)"),
    "accum_steps": (int, "gradient accumulation steps"),
    "lr": (float, "learning rate per 512 images (scaled linearly by the batch size)"),
    "min_lr": (float, "final learning rate of the cosine schedule"),
    "warmup_epochs": (float, "linear warmup length"),
    "weight_decay": (float, "AdamW weight decay (not on 1-D params, biases, CPB, logit scales)"),
    "layer_decay": (float, "layer-wise lr decay for fine-tuning (1 = off, 0.75-0.9 typical)"),
    "label_smoothing": (float, "label smoothing"),
    "mixup": (float, "mixup alpha (0 = off)"),
    "cutmix": (float, "cutmix alpha (0 = off)"),
    "randaugment": (int, "RandAugment magnitude (0 = off, 9 = paper)"),
    "random_erasing": (float, "random erasing probability"),
    "crop": (
        str,
        "'pad' (pad 1/8 + random crop), 'rrc' (RandomResizedCrop), 'none' (resize only); default: "
        "none on Fashion-MNIST, rrc on --data",
    ),
    "hflip": (float, "horizontal flip probability (default: 0 on Fashion-MNIST, 0.5 on --data)"),
    "drop_path": (float, "stochastic depth rate"),
    "grad_checkpointing": (on_off, "on/off: recompute each block's activations in the backward pass"),
    "sequential_attention": (on_off, "on/off: window attention a chunk of windows at a time (high resolution)"),
    "sequential_mlp": (on_off, "on/off: each MLP a chunk of tokens at a time (with checkpointing)"),
    "clip_grad": (float, "gradient norm clip (0 = off)"),
    "ema_decay": (float, "EMA of weights decay per step (0 = off, e.g. 0.999)"),
    "amp": (
        str,
        "mixed precision: auto (default: bf16 where the device computes it natively, else fp32), none, bf16, "
        "fp16 (CUDA, with grad scaler)",
    ),
    "skip_nonfinite": (bool, "skip (and count) steps with a NaN / Inf loss or gradient instead of stopping"),
    "seed": (int, "random seed (runs are reproducible on CPU)"),
    "device": (str, "auto, cpu, cuda, cuda:N"),
    "train_limit": (int, "train on the first N images only"),
    "labels_per_class": (int, "train on the first N images of each class (few-label fine-tuning)"),
    "val_limit": (int, "evaluate on the first N images only"),
    "workers": (int, "data loader worker processes"),
    "strategy": (
        str,
        "single, or under torchrun: ddp, zero (ZeRO-1: AdamW state sharded) or fsdp (FSDP2: parameters, "
        "gradients and state sharded); --batch-size stays the global batch",
    ),
    "meta_init": (on_off, "on/off: with fsdp, build the model on the meta device and initialise it sharded"),
    "dist_timeout": (float, "seconds a collective waits for the other ranks before the run stops (default 900)"),
}


# What a resume may change: the length of the run (--epochs extends it), the remedies for a diverging run
# (they apply from the resumed epoch on), and how it runs (strategy, world size, memory savers, device,
# workers), which changes memory and time but not the numbers.
RESUME_FLAGS = {
    "epochs", "lr", "min_lr", "clip_grad", "amp", "skip_nonfinite", "strategy", "meta_init",
    "grad_checkpointing", "sequential_attention", "sequential_mlp", "device", "workers", "dist_timeout",
}  # fmt: skip


PRETRAIN_FLAGS = {
    "mask_patch_size": (int, "side of the square masked regions in pixels (multiple of the model's patch)"),
    "mask_ratio": (float, "fraction of regions masked"),
    "norm_target_window": (int, "regress locally standardised pixels over this odd window (47 in the paper)"),
    "grid_every": (int, "epochs between reconstruction pictures"),
}
NOT_PRETRAINING = ("label_smoothing", "mixup", "cutmix", "layer_decay")


def add_run_flags(p: argparse.ArgumentParser, flags: dict) -> None:
    for flag, (kind, text) in flags.items():
        name = "--" + flag.replace("_", "-")
        if kind is bool:  # a switch; None when absent, so that a resume can tell it was not given
            p.add_argument(name, dest=flag, action="store_const", const=True, help=text)
            continue
        nargs = "+" if flag == "pretrained_window_sizes" else None
        p.add_argument(name, dest=flag, type=kind, nargs=nargs, help=text)
    p.add_argument("--resume", help="continue the run in this folder where it stopped")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (epoch lines only)")


def train_recipe(args: argparse.Namespace, pretraining: bool = False):
    """The recipe of ``swinv2 train`` / ``pretrain``: from the flags given, or the resumed run's with them."""
    from ..train import TrainRecipe
    from ..train.pretrain import PretrainRecipe

    cls, flags = (PretrainRecipe, {**TRAIN_FLAGS, **PRETRAIN_FLAGS}) if pretraining else (TrainRecipe, TRAIN_FLAGS)
    if args.resume:
        return resume_recipe(cls, args, flags, "pretrain" if pretraining else "classify")
    fields = {f: getattr(args, f) for f in flags if getattr(args, f, None) is not None}
    return cls(**fields)


def resume_recipe(cls, args: argparse.Namespace, flags: dict, kind: str):
    """The recipe saved in ``args.resume`` (a run of ``kind``) with the flags given now, refusing those a
    resume cannot change."""
    import dataclasses

    from ..runs import KINDS, expect_run

    expect_run(args.resume, (kind,), f"`{KINDS[kind][1]} --resume`", action="resume")
    recipe = cls.load(Path(args.resume) / "config.json")
    given = {f for f in flags if getattr(args, f, None) is not None}
    refused = sorted(given - RESUME_FLAGS)
    if refused:
        names = ", ".join("--" + f.replace("_", "-") for f in refused)
        allowed = ", ".join("--" + f.replace("_", "-") for f in sorted(RESUME_FLAGS & set(flags)))
        raise ValueError(
            f"{names} cannot change when resuming (the run's recipe is {Path(args.resume) / 'config.json'}); "
            f"a resume may change {allowed}"
        )
    return dataclasses.replace(recipe, **{f: getattr(args, f) for f in given}, output=args.resume)

"""The training recipe: every knob of a run in one typed, serialisable dataclass.

Defaults are the run ``swinv2 train`` does with no flags: Fashion-MNIST at 28 px on a small SwinV2,
sized to reach >= 90% top-1 within 10 minutes on a 2-core CPU (docs/training.md has the measurement).
The optimiser settings follow the SwinV2 / SimMIM recipe: AdamW, lr scaled linearly per 512 images,
linear warmup then per-step cosine, no weight decay on 1-D params / biases / CPB / logit scales.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from ..data.transforms import CROPS
from ..fields import check_field_types
from ..runs import expect_run
from .precision import AMP_MODES

INF = float("inf")
RANGES = (  # field, lowest, highest, highest included
    ("epochs", 1, INF, True),
    ("batch_size", 1, INF, True),
    ("accum_steps", 1, INF, True),
    ("train_limit", 1, INF, True),
    ("val_limit", 1, INF, True),
    ("labels_per_class", 1, INF, True),
    ("workers", 0, INF, True),
    ("lr", 0, INF, True),  # 0 is a frozen pass (tests use it)
    ("min_lr", 0, INF, True),
    ("warmup_epochs", 0, INF, True),
    ("weight_decay", 0, INF, True),
    ("clip_grad", 0, INF, True),
    ("label_smoothing", 0, 1, False),
    ("mixup", 0, INF, True),
    ("cutmix", 0, INF, True),
    ("hflip", 0, 1, True),
    ("random_erasing", 0, 1, True),
    ("randaugment", 0, 30, True),
    ("drop_path", 0, 1, False),
    ("dist_timeout", 1, INF, True),
    ("checkpoint_every", 0, INF, True),
    ("checkpoint_minutes", 0, INF, True),
    ("keep_checkpoints", 1, INF, True),
)
STRATEGIES = ("single", "ddp", "zero", "fsdp")  # see swinv2.train.distributed


def flag(default, text: str, *, on_off: bool = False, resume: bool = False, kind: type | None = None):
    """A recipe field that is also a flag of its run command (``swinv2.cli.common`` reads these).

    ``text`` is the help; ``on_off`` makes a bool take on / off (else a bool is a switch); ``kind`` is the
    type a flag parses where the annotation is wider; ``resume`` lets ``--resume`` change the field: the
    run's length, the remedies for a diverging run, and how it runs, which change memory and time but not
    the numbers. A subclass that only changes a default keeps the base's flag."""
    return field(default=default, metadata={"help": text, "on_off": on_off, "resume": resume, "kind": kind})


class RecipeFile:
    """JSON round trip of a recipe dataclass: what a run folder's ``config.json`` holds."""

    RESOLVED: tuple[str, ...] = ()  # fields whose None default the recipe resolves when it is built

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        from ..weights.checkpoint import write_json  # atomic: a crash never leaves half a recipe behind

        write_json(Path(path), self.to_dict())

    @classmethod
    def load(cls, path: str | Path):
        """The recipe saved at ``path``; fields this version does not know are skipped."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no run recipe at {path}")
        try:
            data = json.loads(path.read_text())
            known = {f.name for f in dataclasses.fields(cls)}
            fields = {k: v for k, v in data.items() if k in known}
            check_field_types(cls, fields, "a field of the wrong type")
            for name in cls.RESOLVED:  # a run writes what its defaults resolved to, never None
                if name in fields and fields[name] is None:
                    raise ValueError(f"a field of the wrong type: {name} is None, expected int")
            return cls(**fields)
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError, AttributeError, ValueError) as exc:
            raise ValueError(
                f"{path} is not a readable run recipe ({type(exc).__name__}: {exc}); expected the config.json "
                "a run wrote, a JSON object of its flags"
            ) from exc


@dataclass
class TrainRecipe(RecipeFile):
    # Not fields: the command that runs this recipe, the kinds of run its --pretrained may name, and the
    # flagged fields of a base recipe that this command does not take.
    COMMAND = "swinv2 train"
    STARTS_FROM = ("classify", "pretrain")
    NOT_FLAGS: ClassVar[tuple[str, ...]] = ()

    # model
    model: str = flag("swinv2_pico_window7_28", "registered model name (see `swinv2 models`)")
    model_overrides: dict = field(default_factory=dict)
    pretrained: str | None = flag(None, "checkpoint of any known layout to fine-tune from")
    img_size: int | None = flag(None, "training resolution (default: the model's)")
    window_size: int | None = flag(None, "attention window (default: the model's)")
    pretrained_window_sizes: tuple[int, ...] | None = flag(
        None, "windows the --pretrained file was trained with, one per stage"
    )
    drop_path: float | None = flag(None, "stochastic depth rate")
    # memory savers (same results, less memory, more compute): see docs/scale.md
    grad_checkpointing: bool = flag(
        False, "on/off: recompute each block's activations in the backward pass", on_off=True, resume=True
    )
    sequential_attention: bool = flag(
        False, "on/off: window attention a chunk of windows at a time (high resolution)", on_off=True, resume=True
    )
    sequential_mlp: bool = flag(
        False, "on/off: each MLP a chunk of tokens at a time (with checkpointing)", on_off=True, resume=True
    )
    compile: bool = flag(
        False, "on/off: torch.compile the model for training (evaluation stays eager)", on_off=True, resume=True
    )
    # data
    data: str | None = flag(None, "image folder with train/<class>/* and val/<class>/* (default: Fashion-MNIST)")
    train_limit: int | None = flag(None, "train on the first N images only")
    labels_per_class: int | None = flag(None, "train on the first N images of each class (few-label fine-tuning)")
    val_limit: int | None = flag(None, "evaluate on the first N images only")
    workers: int = flag(0, "data loader worker processes", resume=True)
    # None: "none" on Fashion-MNIST, "rrc" on image folders
    crop: str | None = flag(
        None,
        "'pad' (pad 1/8 + random crop), 'rrc' (RandomResizedCrop), 'none' (resize only); default: none on "
        "Fashion-MNIST, rrc on --data",
    )
    # None: 0 on Fashion-MNIST, 0.5 on image folders
    hflip: float | None = flag(None, "horizontal flip probability (default: 0 on Fashion-MNIST, 0.5 on --data)")
    randaugment: int = flag(0, "RandAugment magnitude (0 = off, 9 = paper)")
    random_erasing: float = flag(0.0, "random erasing probability")
    mixup: float = flag(0.0, "mixup alpha (0 = off)")
    cutmix: float = flag(0.0, "cutmix alpha (0 = off)")
    label_smoothing: float = flag(0.1, "label smoothing")
    # optimisation
    RESOLVED = ("epochs", "batch_size")
    # None: 7 on Fashion-MNIST, 12 on image folders (see __post_init__)
    epochs: int | None = flag(None, "training epochs", resume=True)
    # None: 256 on Fashion-MNIST, 128 on image folders
    batch_size: int | None = flag(None, "images per step (per accumulation step)")
    accum_steps: int = flag(1, "gradient accumulation steps")
    lr: float = flag(3.2e-2, "learning rate per 512 images (scaled linearly by the batch size)", resume=True)
    min_lr: float = flag(1e-5, "final learning rate of the cosine schedule", resume=True)
    warmup_epochs: float = flag(0.2, "linear warmup length")
    weight_decay: float = flag(0.05, "AdamW weight decay (not on 1-D params, biases, CPB, logit scales)")
    layer_decay: float = flag(1.0, "layer-wise lr decay for fine-tuning (1 = off, 0.75-0.9 typical)")
    clip_grad: float = flag(5.0, "gradient norm clip (0 = off)", resume=True)
    ema_decay: float = flag(0.0, "EMA of weights decay per step (0 = off, e.g. 0.999)")
    amp: str = flag(
        "auto",
        "mixed precision: auto (default: bf16 where the device computes it natively, else fp32), none, "
        "bf16, fp16 (CUDA, with grad scaler)",
        resume=True,
    )
    amp_reason: str | None = None  # why the run computes in its amp: written when the run starts
    skip_nonfinite: bool = flag(
        False, "skip (and count) steps with a NaN / Inf loss or gradient instead of stopping", resume=True
    )
    # run
    seed: int = flag(0, "random seed (runs are reproducible on CPU)")
    device: str = flag("auto", "auto, cpu, cuda, cuda:N", resume=True)
    output: str | None = flag(None, "run folder (default: runs/<timestamp>)")
    strategy: str = flag(
        "single",
        "single, or under torchrun: ddp, zero (ZeRO-1: AdamW state sharded) or fsdp (FSDP2: parameters, "
        "gradients and state sharded); --batch-size stays the global batch",
        resume=True,
    )
    # None: on the meta device above 500M parameters
    meta_init: bool | None = flag(
        None,
        "on/off: with fsdp, build the model on the meta device and initialise it sharded",
        on_off=True,
        resume=True,
    )
    dist_timeout: float = flag(
        900.0, "seconds a collective waits for the other ranks before the run stops (default 900)", resume=True
    )
    # checkpoints (one at every epoch's end in any case)
    checkpoint_every: int = flag(
        0, "also checkpoint inside epochs, every N optimiser steps (0 = at epoch ends only)", resume=True
    )
    checkpoint_minutes: float = flag(
        0.0, "also checkpoint inside epochs, once M minutes passed since the last one (0 = off)", resume=True
    )
    keep_checkpoints: int = flag(2, "checkpoints kept in the run folder, the newest (default 2)", resume=True)

    def __post_init__(self) -> None:
        # Short Fashion-MNIST schedules learn faster without translation or flips (+6 points top-1 after
        # 3 epochs, docs/training.md); image folders get the paper's ImageNet recipe. Resolved once, here.
        if self.crop is None:
            self.crop = "none" if self.data is None else "rrc"
        if self.hflip is None:
            self.hflip = 0.0 if self.data is None else 0.5
        # The default run's schedule: 7 epochs at batch 256 reach >= 90% within 600 s on a 2-core AVX2
        # CPU too (docs/training.md); folders keep 12 at 128, which larger models' memory allows.
        if self.epochs is None:
            self.epochs = 7 if self.data is None else 12
        if self.batch_size is None:
            self.batch_size = 256 if self.data is None else 128
        if self.crop not in CROPS:
            raise ValueError(f"crop must be one of {CROPS}, got {self.crop!r}")
        if self.amp not in AMP_MODES:
            raise ValueError(f"amp must be one of {AMP_MODES}, got {self.amp!r}")
        self._check_ranges()
        if not 0 < self.layer_decay <= 1:
            raise ValueError(f"layer_decay must be in (0, 1], got {self.layer_decay}")
        if self.ema_decay and not 0 < self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in (0, 1), got {self.ema_decay}")
        self._check_strategy()
        if self.min_lr > self.scaled_lr:
            raise ValueError(
                f"--min-lr {self.min_lr:g} is above the peak learning rate {self.scaled_lr:.3g} (--lr {self.lr:g} x "
                f"batch {self.effective_batch} / 512): the schedule would climb instead of decaying"
            )
        self.data, self.pretrained = _local_absolute(self.data), _local_absolute(self.pretrained)
        expect_run(self.pretrained, self.STARTS_FROM, f"`{self.COMMAND} --pretrained`", action="start")
        if self.pretrained_window_sizes is not None:
            self.pretrained_window_sizes = tuple(self.pretrained_window_sizes)

    def _check_ranges(self) -> None:
        """Numbers outside their meaningful range are refused by name, before any work starts."""
        for name, low, high, closed_high in RANGES:
            value = getattr(self, name, None)
            if value is None:
                continue
            if isinstance(value, float) and not math.isfinite(value):  # NaN passes every comparison
                raise ValueError(f"--{name.replace('_', '-')} must be a finite number, got {value}")
            if value < low or (value > high if closed_high else value >= high):
                bound = "" if high == INF else f" and {'<=' if closed_high else '<'} {high}"
                raise ValueError(f"--{name.replace('_', '-')} must be >= {low}{bound}, got {value}")

    def _check_strategy(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.strategy == "fsdp" and self.amp == "fp16":
            raise ValueError("fsdp trains with --amp none or bf16: fp16 loss scaling needs a sharded grad scaler")
        if self.strategy == "fsdp" and self.ema_decay:
            raise ValueError("--ema-decay is not supported with --strategy fsdp (the EMA copy would be unsharded)")
        if self.meta_init and self.strategy != "fsdp":
            raise ValueError("--meta-init builds the model shard by shard: it needs --strategy fsdp")

    @property
    def effective_batch(self) -> int:
        return self.batch_size * self.accum_steps

    @property
    def scaled_lr(self) -> float:
        return self.lr * self.effective_batch / 512


def _local_absolute(path: str | None) -> str | None:
    """An existing local path made absolute, so that the run folder's recipe (and a resume from another
    directory) finds it; anything else (a Hub id, a missing path, which fails later by name) unchanged."""
    if path is None or not os.path.exists(path):
        return path
    return os.path.abspath(path)

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
)
STRATEGIES = ("single", "ddp", "zero", "fsdp")  # see swinv2.train.distributed


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
    # Not fields: the command that runs this recipe, and the kinds of run its --pretrained may name.
    COMMAND = "swinv2 train"
    STARTS_FROM = ("classify", "pretrain")

    # model
    model: str = "swinv2_pico_window7_28"
    model_overrides: dict = field(default_factory=dict)
    pretrained: str | None = None
    img_size: int | None = None
    window_size: int | None = None
    pretrained_window_sizes: tuple[int, ...] | None = None
    drop_path: float | None = None
    # memory savers (same results, less memory, more compute): see docs/scale.md
    grad_checkpointing: bool = False
    sequential_attention: bool = False
    sequential_mlp: bool = False
    # data
    data: str | None = None
    train_limit: int | None = None
    labels_per_class: int | None = None  # train on the first N images of each class
    val_limit: int | None = None
    workers: int = 0
    crop: str | None = None  # None: "none" on Fashion-MNIST, "rrc" on image folders
    hflip: float | None = None  # None: 0 on Fashion-MNIST, 0.5 on image folders
    randaugment: int = 0
    random_erasing: float = 0.0
    mixup: float = 0.0
    cutmix: float = 0.0
    label_smoothing: float = 0.1
    # optimisation
    RESOLVED = ("epochs", "batch_size")
    epochs: int | None = None  # None: 7 on Fashion-MNIST, 12 on image folders (see __post_init__)
    batch_size: int | None = None  # None: 256 on Fashion-MNIST, 128 on image folders
    accum_steps: int = 1
    lr: float = 3.2e-2  # per 512 images (scaled by the effective batch size)
    min_lr: float = 1e-5
    warmup_epochs: float = 0.2
    weight_decay: float = 0.05
    layer_decay: float = 1.0
    clip_grad: float = 5.0
    ema_decay: float = 0.0
    amp: str = "auto"  # auto: bf16 where the device computes it natively, else fp32 (train/precision.py)
    amp_reason: str | None = None  # why the run computes in its amp: written when the run starts
    skip_nonfinite: bool = False  # skip (and count) steps whose loss or gradient is NaN / Inf, not stop
    # run
    seed: int = 0
    device: str = "auto"
    output: str | None = None
    strategy: str = "single"  # under torchrun: ddp, zero (ZeRO-1 optimiser sharding) or fsdp (FSDP2)
    meta_init: bool | None = None  # fsdp: build on the meta device (None: above 500M parameters)
    dist_timeout: float = 900.0  # seconds a collective waits for the other ranks before the run stops

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

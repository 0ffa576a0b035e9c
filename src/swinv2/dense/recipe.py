"""The recipe of a detection or segmentation run: the training engine's recipe plus the task's knobs.

Defaults are what ``swinv2 detect train`` / ``swinv2 segment train`` do with no flags: the Fashion-MNIST
scenes (128 px) on a small SwinV2 backbone, sized for a 2-core CPU (docs/dense.md has the measurements).
The engine's flags (strategies, EMA, accumulation, memory savers, checkpoints, ``--compile``) are those of
``swinv2 train``; the image classification ones (crops, mixing, label smoothing) are not taken.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..train.recipe import TrainRecipe, flag
from .detection import DETECTORS

TASKS = ("detect", "segment")
# Per-task defaults of the fields left at None, sized for the default data on 2 CPU cores (docs/dense.md).
TASK_DEFAULTS = {"detect": {"epochs": 4}, "segment": {"epochs": 15}}


@dataclass
class DenseRecipe(TrainRecipe):
    # Not fields: the flagged fields that only one task's command takes.
    TASK_ONLY: ClassVar[dict[str, tuple[str, ...]]] = {
        "detect": ("detector", "fpn_channels", "anchor_sizes", "roi_sampling"),
        "segment": ("head_channels", "head_dropout", "reduce_zero_label"),
    }
    # Image classification's own: dense data carry their augmentation and labels; lr is not batch-scaled.
    NOT_FLAGS = (
        "pretrained_window_sizes", "crop", "hflip", "randaugment", "random_erasing", "mixup", "cutmix",
        "label_smoothing", "labels_per_class", "layer_decay",
    )  # fmt: skip
    STARTS_FROM = ("classify", "pretrain")

    task: str = "detect"
    # model
    model: str = flag(
        "swinv2_femto_window8_128", "registered model whose stages make the backbone (see `swinv2 models`)"
    )
    pretrained: str | None = flag(None, "image classification or SimMIM checkpoint for the backbone (any known layout)")
    window_size: int | None = flag(None, "attention window (default: the model's)")
    # None: the model's (log_cpb)
    position_bias: str | None = flag(None, "log_cpb (default), linear_cpb or table (Swin V1), for comparisons")
    drop_path: float = flag(0.1, "stochastic depth rate of the backbone")
    detector: str = flag("mask_rcnn", "mask_rcnn (boxes and instance masks) or faster_rcnn (boxes)")
    fpn_channels: int = flag(64, "feature pyramid width")
    box_head_dim: int = 256
    mask_head_dim: int = 32
    anchor_sizes: tuple[int, ...] = flag((16, 32, 64, 128, 256), "anchor side per pyramid level (5 values)")
    rois_per_image: int = 128  # sampled per image for the box head's loss
    proposals: tuple[int, int] = (600, 300)  # region proposals kept per image: training, testing
    max_detections: int = 50
    # 2 in torchvision; 1 is much faster on a CPU
    roi_sampling: int = flag(1, "bilinear samples per RoI bin side (0: adaptive, torchvision's RoIAlign)")
    head_channels: int = flag(64, "UperNet width")
    head_dropout: float = flag(0.1, "UperNet's channel dropout before the classifier (mmseg's 0.1)")
    # data
    data: str | None = flag(None, "dataset root (default: the Fashion-MNIST scenes, written on first use)")
    img_size: int = flag(128, "training size: detection's shorter image side, segmentation's crop")
    reduce_zero_label: bool = flag(False, "mask value 0 means 'other' and is ignored (ADE20K)")
    rescale: tuple[float, float] = (1.0, 1.0)  # segmentation: random rescale before the crop (ADE20K: 0.5, 2.0)
    train_limit: int | None = flag(None, "train on the first N images only")
    val_limit: int | None = flag(None, "evaluate on the first N images only")
    workers: int = flag(0, "data loader worker processes", resume=True)
    # testing (defaults: as trained)
    test_size: int | None = None
    test_window: int | None = None
    slide: bool = False  # segmentation: sliding img_size windows instead of the whole image
    # optimisation
    # None: the task's default (TASK_DEFAULTS)
    epochs: int | None = flag(None, "training epochs", resume=True)
    batch_size: int = flag(16, "images per step")
    lr: float = flag(4e-4, "peak AdamW learning rate (not scaled by the batch size)", resume=True)
    min_lr: float = flag(1e-6, "final learning rate of the cosine schedule", resume=True)
    warmup_epochs: float = flag(0.5, "linear warmup length")
    weight_decay: float = flag(0.05, "AdamW weight decay (not on norms, biases, CPB, logit scales)")
    clip_grad: float = flag(5.0, "gradient norm clip (0 = off)", resume=True)
    # Image classification's resolved defaults, fixed: dense data augment in their own transforms.
    crop: str | None = "none"
    hflip: float | None = 0.0
    label_smoothing: float = 0.0
    # run
    pictures: int = flag(8, "prediction pictures drawn at the end")

    def __post_init__(self) -> None:
        self.anchor_sizes, self.proposals, self.rescale = (
            tuple(v) for v in (self.anchor_sizes, self.proposals, self.rescale)
        )
        for field, value, allowed in (("task", self.task, TASKS), ("detector", self.detector, DETECTORS)):
            if value not in allowed:
                raise ValueError(f"{field} must be one of {allowed}, got {value!r}")
        for field, value in TASK_DEFAULTS[self.task].items():
            if getattr(self, field) is None:
                setattr(self, field, value)
        self.COMMAND = f"swinv2 {self.task} train"  # names the command in the base's messages
        if self.img_size < 1:
            raise ValueError(f"img_size must be >= 1, got {self.img_size}")
        if not 0 <= self.head_dropout < 1:
            raise ValueError(f"--head-dropout must be >= 0 and < 1, got {self.head_dropout}")
        if self.layer_decay != 1 or self.mixup or self.cutmix or self.label_smoothing:
            raise ValueError("dense runs take no layer decay, mixup, cutmix or label smoothing")
        super().__post_init__()
        if self.slide and self.task != "segment":
            raise ValueError("--slide is a segmentation option")

    @property
    def scaled_lr(self) -> float:
        """The peak learning rate: dense recipes give it as is (detectron2 and mmdet do)."""
        return self.lr

    @property
    def eval_size(self) -> int:
        return self.test_size or self.img_size

"""The recipe of a detection or segmentation run: every knob in one typed, serialisable dataclass.

Defaults are what ``swinv2 detect train`` / ``swinv2 segment train`` do with no flags: the Fashion-MNIST
scenes (128 px) on a small SwinV2 backbone, sized for a 2-core CPU (docs/dense.md has the measurements).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..runs import expect_run
from ..train.recipe import AMP_MODES, RecipeFile
from .detection import DETECTORS

TASKS = ("detect", "segment")
# Per-task defaults of the fields left at None, sized for the default data on 2 CPU cores (docs/dense.md).
TASK_DEFAULTS = {"detect": {"epochs": 4}, "segment": {"epochs": 15}}


@dataclass
class DenseRecipe(RecipeFile):
    task: str = "detect"
    # model
    model: str = "swinv2_femto_window8_128"
    pretrained: str | None = None  # an image classification or SimMIM checkpoint for the backbone
    window_size: int | None = None
    position_bias: str | None = None  # None: the model's (log_cpb); "table" / "linear_cpb" for comparisons
    drop_path: float = 0.1
    detector: str = "mask_rcnn"
    fpn_channels: int = 64
    box_head_dim: int = 256
    mask_head_dim: int = 32
    anchor_sizes: tuple[int, ...] = (16, 32, 64, 128, 256)
    rois_per_image: int = 128  # sampled per image for the box head's loss
    proposals: tuple[int, int] = (600, 300)  # region proposals kept per image: training, testing
    max_detections: int = 50
    roi_sampling: int = 1  # bilinear samples per RoI bin side (2 in torchvision; 1 is much faster on a CPU)
    head_channels: int = 64  # UperNet width
    # data
    data: str | None = None  # None: the Fashion-MNIST scenes, written on first use
    img_size: int = 128  # detection: shorter image side; segmentation: training crop
    reduce_zero_label: bool = False  # ADE20K: mask value 0 is "other", ignored
    rescale: tuple[float, float] = (1.0, 1.0)  # segmentation: random rescale before the crop (ADE20K: 0.5, 2.0)
    train_limit: int | None = None
    val_limit: int | None = None
    workers: int = 0
    # testing (defaults: as trained)
    test_size: int | None = None
    test_window: int | None = None
    slide: bool = False  # segmentation: sliding img_size windows instead of the whole image
    # optimisation
    epochs: int | None = None  # None: the task's default (TASK_DEFAULTS)
    batch_size: int = 16
    lr: float = 4e-4
    min_lr: float = 1e-6
    warmup_epochs: float = 0.5
    weight_decay: float = 0.05
    clip_grad: float = 5.0
    amp: str = "auto"  # auto (bf16 where the device computes it natively, else fp32), none or bf16
    amp_reason: str | None = None  # why the run computes in its amp: written when the run starts
    skip_nonfinite: bool = False  # skip (and count) steps with a NaN / Inf loss or gradient, not stop
    # run
    seed: int = 0
    device: str = "auto"
    output: str | None = None
    pictures: int = 8  # prediction pictures drawn at the end

    def __post_init__(self) -> None:
        self.anchor_sizes, self.proposals, self.rescale = (
            tuple(v) for v in (self.anchor_sizes, self.proposals, self.rescale)
        )
        for field, value in TASK_DEFAULTS.get(self.task, {}).items():
            if getattr(self, field) is None:
                setattr(self, field, value)
        for field, value, allowed in (("task", self.task, TASKS), ("detector", self.detector, DETECTORS)):
            if value not in allowed:
                raise ValueError(f"{field} must be one of {allowed}, got {value!r}")
        if self.amp not in AMP_MODES or self.amp == "fp16":
            raise ValueError(f"amp must be auto, none or bf16 (fp16 would need loss scaling), got {self.amp!r}")
        for name in ("epochs", "batch_size", "img_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        start = f"`swinv2 {self.task} train --pretrained`"
        expect_run(self.pretrained, ("classify", "pretrain"), start, action="start")
        if self.min_lr > self.lr:
            raise ValueError(f"--min-lr {self.min_lr:g} is above --lr {self.lr:g}: the schedule would climb")
        if self.slide and self.task != "segment":
            raise ValueError("--slide is a segmentation option")

    @property
    def eval_size(self) -> int:
        return self.test_size or self.img_size

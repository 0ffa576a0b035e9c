"""``swinv2 video train``: the classification trainer (run folder, resume, distributed strategies) with a
video model, clip data, multi-view testing, and the one-frame control in the summary."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, Subset

from ..data.datasets import IMAGENET_MEAN, IMAGENET_STD, ClassificationData
from ..data.moving import DIRECTIONS
from ..train.loop import TopKScores, Trainer, model_overrides
from ..train.precision import autocast
from ..train.recipe import TrainRecipe, flag
from ..weights.checkpoint import write_json
from .data import ClipSampling, VideoClipDataset, moving_fashion_mnist_data, moving_fashion_mnist_val
from .registry import create_video_model, get_video_config


@dataclass
class VideoRecipe(TrainRecipe):
    """``TrainRecipe`` plus clip sampling; defaults train the pico video model on Moving Fashion-MNIST."""

    COMMAND = "swinv2 video train"
    STARTS_FROM = ("classify", "pretrain", "video")  # image weights are inflated

    # Clips carry their motion (no image augmentation) and video checkpoints their windows.
    NOT_FLAGS = (
        "crop", "hflip", "mixup", "cutmix", "randaugment", "random_erasing", "labels_per_class",
        "pretrained_window_sizes",
    )  # fmt: skip

    model: str = flag(
        "swinv2_video_pico_window4x8_64",
        "video model (default swinv2_video_pico_window4x8_64; see `swinv2 video models`)",
    )
    data: str | None = flag(
        None, "folder with train.csv and val.csv ('path,label' rows; default: Moving Fashion-MNIST)"
    )
    pretrained: str | None = flag(None, "video checkpoint, or an image SwinV2 checkpoint of this project to inflate")
    # (time, space): --window-size sets the space
    window_size: tuple[int, int] | int | None = flag(
        None, "spatial attention window (the temporal one stays the model's)", kind=int
    )
    num_frames: int | None = flag(None, "frames per clip (default: the model's)")
    frame_stride: int = flag(2, "real videos: take every n-th frame")
    test_clips: int = flag(1, "real videos: temporal views averaged at test time")
    test_crops: int = flag(1, "real videos: spatial views at test time (1 or 3)")
    train_limit: int | None = 12000  # Moving Fashion-MNIST: clips per epoch (drawn afresh from the seed)
    val_limit: int | None = 2000
    epochs: int = 3  # direction is easy to see: a 10-epoch trial was near 100% after its first (docs/video.md)
    batch_size: int = 64
    lr: float = 1e-2  # per 512 clips
    warmup_epochs: float = 0.5
    label_smoothing: float = 0.0
    # Clip data crops and flips in its own sampling (video/data.py); the image recipe's flags stay off, also
    # with --data, where TrainRecipe would otherwise turn on its ImageNet crop and flip.
    crop: str | None = "none"
    hflip: float | None = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.hflip or self.mixup or self.cutmix or self.randaugment:
            raise ValueError("video runs take no --hflip, --mixup, --cutmix or --randaugment (clips carry motion)")
        if self.test_crops not in (1, 3) or self.test_clips < 1 or self.frame_stride < 1:
            raise ValueError("test_crops must be 1 or 3, test_clips and frame_stride >= 1")


def video_data(recipe: VideoRecipe) -> ClassificationData:
    cfg = get_video_config(recipe.model)
    frames = recipe.num_frames or cfg.num_frames
    size = recipe.img_size or (cfg.img_size if isinstance(cfg.img_size, int) else cfg.img_size[0])
    if recipe.data is None:
        return moving_fashion_mnist_data(frames, size, recipe.train_limit or 60000, recipe.val_limit or 10000)
    root = Path(recipe.data)
    sampling = ClipSampling(frames=frames, stride=recipe.frame_stride, size=size)
    train = VideoClipDataset(root / "train.csv", sampling, train=True)
    test_sampling = ClipSampling(frames, recipe.frame_stride, size, recipe.test_clips, recipe.test_crops)
    val = VideoClipDataset(root / "val.csv", test_sampling, train=False, classes=train.classes)
    classes = tuple(train.classes)
    if recipe.train_limit:
        train = Subset(train, range(min(recipe.train_limit, len(train))))
    if recipe.val_limit:
        val = Subset(val, range(min(recipe.val_limit, len(val))))
    return ClassificationData(train, val, classes, 3, IMAGENET_MEAN, IMAGENET_STD, str(root))


def eval_data(recipe: VideoRecipe, model: nn.Module, classes: list[str], mean, std) -> tuple[Dataset, int]:
    """``(validation clips, views per clip)`` for ``swinv2 video eval``: ``recipe.data``'s val.csv with its
    labels mapped by name to the run's ``classes`` (an unknown label is refused), sampled at the model's clip
    size and normalised with the run's ``mean`` / ``std``; or Moving Fashion-MNIST's test clips (one view)."""
    frames, size = model.cfg.num_frames, model.cfg.img_size
    size = size if isinstance(size, int) else size[0]
    if recipe.data is None:
        if list(classes) != list(DIRECTIONS):
            raise ValueError(
                f"the run's classes {list(classes)[:10]} are not Moving Fashion-MNIST's directions: give --data, "
                "a folder with the val.csv of the run's classes"
            )
        return moving_fashion_mnist_val(frames, size, recipe.val_limit or 10000), 1
    sampling = ClipSampling(frames, recipe.frame_stride, size, recipe.test_clips, recipe.test_crops, mean, std)
    val = VideoClipDataset(Path(recipe.data) / "val.csv", sampling, train=False, classes=list(classes))
    if recipe.val_limit:
        val = Subset(val, range(min(recipe.val_limit, len(val))))
    return val, recipe.test_clips * recipe.test_crops


@torch.no_grad()
def evaluate_clips(model: nn.Module, loader, device: torch.device, amp: str = "none", transform=None, reduce=None):
    """Top-1 / top-5 / loss over clips ``(B, C, T, H, W)`` or views ``(B, V, C, T, H, W)`` (softmax
    scores averaged over the views). ``transform`` changes each clip first (the one-frame control)."""
    model.eval()
    scores = TopKScores()
    for clips, labels in loader:
        clips, labels = clips.to(device), labels.to(device)
        views = clips if clips.dim() == 6 else clips[:, None]
        b, v = views.shape[:2]
        flat = views.flatten(0, 1)
        if transform is not None:
            flat = transform(flat)
        with autocast(device, amp):
            probs = model(flat).float().softmax(-1).view(b, v, -1).mean(1)
        keep = labels >= 0
        probs, labels = probs[keep], labels[keep]
        scores.add(probs, labels, F.nll_loss(probs.clamp_min(1e-12).log(), labels, reduction="sum").item())
    return scores.result(reduce)


def one_frame(clips: torch.Tensor, index: int | None = None) -> torch.Tensor:
    """Every frame replaced by one (the middle one by default): what the model sees without motion."""
    t = clips.shape[2]
    k = t // 2 if index is None else index
    return clips[:, :, k : k + 1].expand(-1, -1, t, -1, -1)


class VideoTrainer(Trainer):
    build_data = staticmethod(video_data)

    def build_model(self) -> nn.Module:
        r = self.recipe
        overrides = model_overrides(r, self.data, num_frames=r.num_frames)
        model = create_video_model(r.model, pretrained=r.pretrained, **overrides)
        # the memory savers of the image model work on video blocks too (SwinV2Base)
        model.set_grad_checkpointing(r.grad_checkpointing)
        model.set_sequential_attention(r.sequential_attention)
        model.set_sequential_mlp(r.sequential_mlp)
        return model

    def evaluate(self) -> dict:
        loader = self._loader(self.data.val, shuffle=False)
        return evaluate_clips(self.eval_model, loader, self.device, self.recipe.amp, reduce=self.dist.all_reduce_sum)

    def finish(self, run_dir: Path, wall_start: float) -> dict | None:
        summary = super().finish(run_dir, wall_start)
        loader = self._loader(self.data.val, shuffle=False)
        single = evaluate_clips(
            self.eval_model, loader, self.device, self.recipe.amp, one_frame, self.dist.all_reduce_sum
        )
        if summary is not None:
            summary["top1_single_frame"] = single["top1"]
            write_json(run_dir / "summary.json", summary)
            chance = 100 / len(self.data.classes)
            print(f"one frame only (the middle one, repeated): top1 {single['top1']:.2f}% (chance {chance:.1f}%)")
        return summary

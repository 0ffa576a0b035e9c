"""Train / eval transforms (torchvision transforms v2) and batch-level mixup / cutmix.

torchvision is imported inside the functions that build v2 pipelines: a Fashion-MNIST run augments whole
batches (:class:`BatchAugment`) and never needs it, and importing it adds seconds to a process start."""

from __future__ import annotations

from collections.abc import Callable

import torch

CROPS = ("pad", "rrc", "none")  # training crops, see train_transform


def train_transform(
    img_size: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    crop: str = "pad",
    scale: tuple[float, float] = (0.08, 1.0),
    hflip: float = 0.5,
    randaugment: int = 0,
    random_erasing: float = 0.0,
) -> Callable:
    """Augmentation for ``(C, H, W)`` uint8 tensors or PIL images.

    ``crop="pad"`` is the small-image recipe (resize, pad by 1/8, random crop); ``"rrc"`` is
    RandomResizedCrop, the ImageNet recipe; ``"none"`` only resizes (and centre-crops), for short
    schedules where translation augmentation costs more accuracy than it buys. ``randaugment`` is
    RandAugment's magnitude (0 = off, 9 in the paper's fine-tuning recipe).
    """
    from torchvision.transforms import v2

    ops: list = [v2.ToImage()]
    if crop == "rrc":
        ops.append(v2.RandomResizedCrop(img_size, scale=scale, antialias=True))
    elif crop == "pad":
        ops += [v2.Resize(img_size, antialias=True), v2.RandomCrop(img_size, padding=max(1, img_size // 8))]
    elif crop == "none":
        ops += [v2.Resize(img_size, antialias=True), v2.CenterCrop(img_size)]
    else:
        raise ValueError(f"crop must be one of {CROPS}, got {crop!r}")
    if hflip > 0:
        ops.append(v2.RandomHorizontalFlip(hflip))
    if randaugment > 0:
        ops.append(v2.RandAugment(num_ops=2, magnitude=randaugment))
    ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    if random_erasing > 0:
        ops.append(v2.RandomErasing(random_erasing))
    return v2.Compose(ops)


def eval_transform(img_size: int, mean: tuple[float, ...], std: tuple[float, ...], crop_pct: float = 1.0) -> Callable:
    """Resize (shorter side to ``img_size / crop_pct``), centre crop, normalise."""
    from torchvision.transforms import v2

    return v2.Compose(
        [
            v2.ToImage(),
            v2.Resize(round(img_size / crop_pct), antialias=True),
            v2.CenterCrop(img_size),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean, std),
        ]
    )


def batch_mixer(num_classes: int, mixup: float, cutmix: float) -> Callable | None:
    """Mixup and/or CutMix on a batch (one of them per batch, as in DeiT/Swin); None when both are 0."""
    if mixup <= 0 and cutmix <= 0:
        return None
    from torchvision.transforms import v2

    ops = []
    if mixup > 0:
        ops.append(v2.MixUp(alpha=mixup, num_classes=num_classes))
    if cutmix > 0:
        ops.append(v2.CutMix(alpha=cutmix, num_classes=num_classes))
    return ops[0] if len(ops) == 1 else v2.RandomChoice(ops)


class BatchAugment:
    """Pad-and-random-crop (``pad=True``), horizontal flip and normalisation on a whole ``uint8`` batch.

    The per-image v2 pipeline costs more per image on a CPU core than a small model's step on it; for
    in-memory datasets the same augmentation on the whole batch costs next to nothing (docs/results.md).
    Each image gets its own crop offset and flip.
    """

    def __init__(
        self,
        img_size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        train: bool,
        hflip: float = 0.5,
        pad: bool = True,
    ):
        self.img_size, self.train, self.hflip = img_size, train, hflip
        self.pad = max(1, img_size // 8) if pad else 0
        self.mean = torch.tensor(mean).view(1, -1, 1, 1)
        self.std = torch.tensor(std).view(1, -1, 1, 1)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float().div_(255)
        if x.shape[-2:] != (self.img_size, self.img_size):
            x = torch.nn.functional.interpolate(x, size=(self.img_size, self.img_size), mode="bilinear", antialias=True)
        if self.train and (self.pad or self.hflip > 0):
            x = self._crop_flip(x)
        return (x - self.mean.to(x.device)) / self.std.to(x.device)

    def _crop_flip(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        p = self.pad
        padded = torch.nn.functional.pad(x, (p, p, p, p))
        dy = torch.randint(0, 2 * p + 1, (b, 1), device=x.device)
        dx = torch.randint(0, 2 * p + 1, (b, 1), device=x.device)
        cols = torch.arange(w, device=x.device)
        flip = torch.rand(b, 1, device=x.device) < self.hflip
        cols = torch.where(flip, w - 1 - cols, cols) + dx  # (B, W): flipped and shifted column per image
        rows = torch.arange(h, device=x.device) + dy  # (B, H)
        batch = torch.arange(b, device=x.device)[:, None, None]
        out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
        return out.permute(0, 3, 1, 2).contiguous()

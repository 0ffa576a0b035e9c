"""Moving Fashion-MNIST: clips of a real Fashion-MNIST item gliding in one of 8 directions.

Label = direction. The canvas wraps around (a torus) and the start is uniform, so every single frame has
the same distribution of positions whatever the direction: one frame cannot tell the class, only motion
can. Clips are drawn deterministically from (seed, split, index) on access: no files, any count.
Train clips use Fashion-MNIST's train images, test clips its test images.
"""

from __future__ import annotations

import os

import torch
from torch.utils.data import Dataset

from .fashion_mnist import load_fashion_mnist

DIRECTIONS = ("east", "north-east", "north", "north-west", "west", "south-west", "south", "south-east")
# (dy, dx) per frame for each direction, about `speed` pixels long
_UNIT = ((0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1), (1, 0), (1, 1))
MEAN, STD = (0.0544,), (0.1912,)  # of the clips' pixels (measured on 2,000 train clips)


class MovingFashionMNIST(Dataset):
    """``(clip (1, T, H, W) float in [0, 1], direction)``; ``transform`` applies to the clip."""

    def __init__(
        self,
        split: str = "train",
        count: int | None = None,
        frames: int = 8,
        size: int = 64,
        speed: int = 3,
        seed: int = 0,
        root: str | os.PathLike | None = None,
        transform=None,
    ):
        if size < 28 or frames < 2 or speed < 1:
            raise ValueError(f"need size >= 28, frames >= 2, speed >= 1; got {size}, {frames}, {speed}")
        self.items, _ = load_fashion_mnist(split, root)
        self.split, self.frames, self.size, self.speed, self.seed = split, frames, size, speed, seed
        self.count = len(self.items) if count is None else count
        self.transform = transform
        self.classes = list(DIRECTIONS)

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not 0 <= index < self.count:
            raise IndexError(f"clip {index} of {self.count}")
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + index * 2 + (self.split == "test"))
        item = self.items[int(torch.randint(len(self.items), (1,), generator=gen))]
        direction = int(torch.randint(len(DIRECTIONS), (1,), generator=gen))
        y0, x0 = (int(v) for v in torch.randint(self.size, (2,), generator=gen))
        canvas = torch.zeros(self.size, self.size, dtype=torch.uint8)
        canvas[:28, :28] = item
        dy, dx = (self.speed * u for u in _UNIT[direction])
        clip = torch.stack([canvas.roll((y0 + k * dy, x0 + k * dx), dims=(0, 1)) for k in range(self.frames)])
        clip = clip[None].float() / 255  # (1, T, H, W)
        if self.transform is not None:
            clip = self.transform(clip)
        return clip, direction

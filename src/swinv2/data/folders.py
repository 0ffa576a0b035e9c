"""torchvision's ImageFolder with unreadable files skipped and counted (imported only where image folders
are read: torchvision adds seconds to a process start)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from torchvision.datasets import ImageFolder

from .decode import MarksUnreadable, UnreadableImage, read_image


class SkippingImageFolder(MarksUnreadable, ImageFolder):
    """torchvision's ImageFolder that yields None for a file it cannot decode, and marks it."""

    def __init__(self, root: str, transform: Callable | None, channels: int):
        super().__init__(root, transform=transform, loader=partial(read_image, channels=channels))
        self._init_marks(len(self.samples))

    def __getitem__(self, index: int):
        try:
            return super().__getitem__(index)
        except UnreadableImage:
            self._mark(index)
            return None

    def _sample_path(self, index: int) -> str:
        return self.samples[index][0]

"""Reading image files for every loader of the project, and marking the ones that cannot be read (so that
a run skips and names them instead of stopping). Free of torchvision, which costs seconds to import."""

from __future__ import annotations

import os

import torch


class UnreadableImage(ValueError):
    """A file in a dataset that no image decoder reads (truncated, corrupted, not an image)."""


def read_image(path: str | os.PathLike, channels: int = 3) -> torch.Tensor:
    """``(C, H, W)`` uint8 from any file PIL reads; grey, RGBA, palette and 16-bit images are converted
    (16-bit by scaling the brightest pixel to 255). ``ValueError`` for files that are not images."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(img, dtype=np.float32)
                img = Image.fromarray((arr * (255 / max(float(arr.max()), 1.0))).round().astype(np.uint8))
            array = np.array(img.convert("L" if channels == 1 else "RGB"))
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:  # bombs: PIL refuses >179M px
        raise UnreadableImage(f"{path} is not a readable image ({exc})") from exc
    t = torch.from_numpy(array)
    return t[None] if channels == 1 else t.permute(2, 0, 1).contiguous()


class MarksUnreadable:
    """Mixin of datasets that yield None for a sample they cannot decode, and mark it.

    The marks live in shared memory, so loader workers' marks count too; the loaders' collate drops the
    None and the training loop collects and reports the marks with :meth:`take_unreadable`.
    """

    unreadable: torch.Tensor

    def _init_marks(self, count: int) -> None:
        self.unreadable = torch.zeros(count, dtype=torch.bool).share_memory_()

    def _sample_path(self, index: int) -> str:
        raise NotImplementedError

    def _mark(self, index: int) -> None:
        self.unreadable[index] = True

    def take_unreadable(self) -> list[str]:
        """Paths of the files found unreadable since the last call."""
        found = self.unreadable.nonzero().flatten().tolist()
        self.unreadable.zero_()
        return [str(self._sample_path(i)) for i in found]

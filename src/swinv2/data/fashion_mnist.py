"""Fashion-MNIST (Xiao et al., 2017): 70,000 real 28 x 28 grey product photos in 10 classes.

The project's embedded real dataset. The IDX files are looked for in ``$SWINV2_DATA``, then where
Debian's ``dataset-fashion-mnist`` package puts them, then in the user cache; only if all are missing
does torchvision try to download them.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import torch

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
MEAN, STD = (0.2860,), (0.3530,)
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "swinv2" / "fashion-mnist"
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IDX_DTYPES = {0x08: torch.uint8}


def read_idx(path: str | os.PathLike) -> torch.Tensor:
    """Read an IDX file (optionally gzipped) into a tensor, validating its header and size."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an unsigned-byte IDX file (bad magic number {data[:4].hex()})")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    start, count = 4 + 4 * ndim, 1
    for d in dims:
        count *= d
    if len(data) - start != count:
        raise ValueError(f"{path}: header says {dims} ({count} bytes) but the file holds {len(data) - start}")
    return torch.frombuffer(bytearray(data[start:]), dtype=_IDX_DTYPES[data[2]]).view(*dims)


def _find(directory: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        for candidate in (directory / name, directory / "FashionMNIST" / "raw" / name):
            if candidate.is_file():
                return candidate
    return None


def find_fashion_mnist(root: str | os.PathLike | None = None, download: bool = True) -> Path:
    """The directory holding the four IDX files (see module docstring for the search order)."""
    explicit = [Path(root)] if root else []
    env = [Path(os.environ["SWINV2_DATA"])] if os.environ.get("SWINV2_DATA") else []
    for directory in (*explicit, *env, DEBIAN_DIR, CACHE_DIR):
        if all(_find(directory, stem) for pair in FILES.values() for stem in pair):
            return directory
    if download:
        try:
            from torchvision.datasets import FashionMNIST

            for train in (True, False):
                FashionMNIST(str(CACHE_DIR), train=train, download=True)
            return CACHE_DIR
        except Exception as exc:  # no network, no permission: explain what to do instead
            reason = f" (download failed: {type(exc).__name__}: {exc})"
    else:
        reason = ""
    raise FileNotFoundError(
        "Fashion-MNIST not found in $SWINV2_DATA, " + str(DEBIAN_DIR) + " or " + str(CACHE_DIR) + reason + ". "
        "Install Debian's package (apt-get install dataset-fashion-mnist) or point SWINV2_DATA at a directory "
        "with train-images-idx3-ubyte[.gz] and the three other IDX files."
    )


def load_fashion_mnist(split: str, root: str | os.PathLike | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``(N, 28, 28)`` uint8 and labels ``(N,)`` int64 of the ``"train"`` or ``"test"`` split."""
    if split not in FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    directory = find_fashion_mnist(root)
    images = read_idx(_find(directory, FILES[split][0]))
    labels = read_idx(_find(directory, FILES[split][1])).long()
    if images.ndim != 3 or labels.shape != images.shape[:1]:
        raise ValueError(
            f"Fashion-MNIST {split}: images {tuple(images.shape)} do not match labels {tuple(labels.shape)}"
        )
    return images, labels

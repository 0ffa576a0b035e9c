"""Datasets for classification: in-memory image tensors and image folders (the ImageNet layout)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class TensorImageDataset(Dataset):
    """``uint8`` images ``(N, H, W)`` or ``(N, C, H, W)`` with labels; ``transform`` gets ``(C, H, W)`` tensors."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Callable | None = None):
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images if images.ndim == 4 else images.unsqueeze(1)
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index]
        return (self.transform(image) if self.transform else image), int(self.labels[index])


@dataclass
class ClassificationData:
    """What a training run needs to know about its data."""

    train: Dataset
    val: Dataset
    classes: tuple[str, ...]
    in_chans: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    name: str
    eval_crop_pct: float = 1.0  # centre-crop fraction of evaluation, kept with the weights for predict
    # Batch-level transforms for datasets that yield raw uint8 tensors (applied on the device in the loop).
    train_batch_transform: Callable | None = None
    val_batch_transform: Callable | None = None


def refuse_link_loops(directory: Path) -> None:
    """``ValueError`` naming a symbolic link that leads back to a folder above it: torchvision's
    ImageFolder follows links and would walk such a loop forever. Links to folders elsewhere are fine."""
    above: dict[str, frozenset[str]] = {}
    for folder, _, _ in os.walk(directory, followlinks=True):
        real = os.path.realpath(folder)
        chain = above.get(os.path.dirname(folder), frozenset())
        if real in chain:
            raise ValueError(f"{folder} is a symbolic link back to {real}, a folder above it: remove the loop")
        above[folder] = chain | {real}


def image_folder(root: str | os.PathLike, split: str, transform: Callable | None, in_chans: int = 3) -> Dataset:
    """``root/split/<class>/*`` as a :class:`SkippingImageFolder`, with clear errors when empty."""
    directory = Path(root) / split
    if not directory.is_dir():
        raise FileNotFoundError(f"expected an image folder at {directory} (layout DIR/{split}/<class>/<image>)")
    refuse_link_loops(directory)
    empty = [d.name for d in sorted(directory.iterdir()) if d.is_dir() and not any(p.is_file() for p in d.rglob("*"))]
    if empty:
        raise ValueError(f"{directory}: class folder(s) with no files: {', '.join(empty)}")
    try:
        from .folders import SkippingImageFolder  # torchvision, imported where image folders are read

        return SkippingImageFolder(str(directory), transform, 1 if in_chans == 1 else 3)
    except FileNotFoundError as exc:  # torchvision's message for "no valid images"
        raise ValueError(f"{directory}: {exc}") from exc


def take_unreadable(dataset: Dataset) -> list[str]:
    """Unreadable files met in ``dataset`` (through Subset wrappers) since the last call; [] for others."""
    while not hasattr(dataset, "take_unreadable") and hasattr(dataset, "dataset"):
        dataset = dataset.dataset
    return dataset.take_unreadable() if hasattr(dataset, "take_unreadable") else []


class ReadableCollate:
    """Batches of the samples that could be read. A batch of nothing but unreadable files becomes one
    padding sample (the dataset's first readable one, label -1) that the loop gives zero weight, so that
    every rank of a distributed run still takes part in each step."""

    def __init__(self, dataset: Dataset, pad_label: int = -1):
        self.dataset, self.pad_label = dataset, pad_label

    def __call__(self, batch: list):
        from torch.utils.data import default_collate

        kept = [sample for sample in batch if sample is not None]
        if not kept:
            kept = [(first_readable(self.dataset)[0], self.pad_label)]
        return default_collate(kept)


def first_readable(dataset: Dataset, name: str = "the dataset"):
    """The first sample of ``dataset`` that could be read; ``ValueError`` naming ``name`` when none can."""
    for index in range(len(dataset)):
        sample = dataset[index]
        if sample is not None:
            return sample
    raise ValueError(f"not one of the {len(dataset)} files of {name} could be read (all corrupt or not images)")

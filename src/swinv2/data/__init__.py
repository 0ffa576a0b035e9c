"""Data: Fashion-MNIST IDX files, image folders, transforms and the dataset a run trains on."""

from __future__ import annotations

import torch

from .datasets import IMAGENET_MEAN, IMAGENET_STD, ClassificationData, TensorImageDataset, image_folder
from .fashion_mnist import CLASSES as FASHION_MNIST_CLASSES
from .fashion_mnist import find_fashion_mnist, load_fashion_mnist, read_idx
from .transforms import CROPS, BatchAugment, batch_mixer, eval_transform, train_transform


def build_classification_data(
    data: str | None,
    img_size: int,
    in_chans: int | None,
    train_tf: dict,
    train_limit: int | None = None,
    val_limit: int | None = None,
    labels_per_class: int | None = None,
) -> ClassificationData:
    """Fashion-MNIST when ``data`` is None, else the image folder ``data`` (``train/`` and ``val/``)."""
    train_batch = val_batch = None
    crop_pct = 1.0
    if data is None:
        from .fashion_mnist import MEAN, STD

        chans = in_chans or 1
        mean, std = MEAN * chans, STD * chans
        xtr, ytr = fashion_mnist_images("train", chans)
        xte, yte = fashion_mnist_images("test", chans)
        per_image = train_tf.get("randaugment", 0) > 0 or train_tf.get("random_erasing", 0) > 0
        crop = train_tf.get("crop", "pad")
        if crop not in CROPS:
            raise ValueError(f"crop must be one of {CROPS}, got {crop!r}")
        if per_image or crop == "rrc":
            train = TensorImageDataset(xtr, ytr, train_transform(img_size, mean, std, **train_tf))
        else:  # the fast path: raw uint8 batches, augmented as a batch in the training loop
            train = TensorImageDataset(xtr, ytr)
            hflip = train_tf.get("hflip", 0.5)
            train_batch = BatchAugment(img_size, mean, std, train=True, hflip=hflip, pad=crop == "pad")
        val = TensorImageDataset(xte, yte)
        val_batch = BatchAugment(img_size, mean, std, train=False)
        classes, name = FASHION_MNIST_CLASSES, "fashion-mnist"
    else:
        chans = in_chans or 3
        mean, std = (IMAGENET_MEAN, IMAGENET_STD) if chans == 3 else ((0.5,) * chans, (0.5,) * chans)
        train = image_folder(data, "train", train_transform(img_size, mean, std, **train_tf), chans)
        crop_pct = 0.875
        val = image_folder(data, "val", eval_transform(img_size, mean, std, crop_pct=crop_pct), chans)
        if train.classes != val.classes:
            raise ValueError(f"{data}: train classes {train.classes} differ from val classes {val.classes}")
        classes, name = tuple(train.classes), str(data)
    if len(train) == 0 or len(val) == 0:
        raise ValueError(f"{name}: empty dataset (train {len(train)}, val {len(val)} images)")
    if labels_per_class:
        train = balanced_subset(train, labels_per_class)
    if train_limit:
        train = limit_subset(train, train_limit, spread=data is not None)
    if val_limit:
        val = limit_subset(val, val_limit, spread=data is not None)
    return ClassificationData(
        train, val, classes, chans, tuple(mean), tuple(std), name, crop_pct, train_batch, val_batch
    )


def fashion_mnist_images(split: str, chans: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A Fashion-MNIST split as uint8 images (grey repeated over ``chans`` channels, a view) and labels."""
    images, labels = load_fashion_mnist(split)
    return (images if chans == 1 else images.unsqueeze(1).expand(-1, chans, -1, -1)), labels


def limit_subset(dataset, count: int, spread: bool):
    """``count`` samples of ``dataset`` (all of it when it is smaller): the first ones, or with ``spread``
    every (len / count)-th. An image folder lists its files class by class, so its first N would be one
    class; spread keeps each class's share. Fashion-MNIST's own order is already mixed: the first N."""
    from torch.utils.data import Subset

    total = len(dataset)
    if count >= total:
        return dataset
    return Subset(dataset, [i * total // count for i in range(count)] if spread else range(count))


def balanced_subset(dataset, per_class: int):
    """The first ``per_class`` images of every class, in dataset order (the few-label setting)."""
    from torch.utils.data import Subset

    labels = torch.as_tensor(dataset.labels if hasattr(dataset, "labels") else dataset.targets)
    picks = []
    for cls in labels.unique().tolist():
        where = (labels == cls).nonzero().flatten()
        if len(where) < per_class:
            raise ValueError(f"class {cls} has {len(where)} training images, fewer than {per_class} per class")
        picks.append(where[:per_class])
    return Subset(dataset, torch.cat(picks).sort().values.tolist())


__all__ = [
    "BatchAugment",
    "ClassificationData",
    "TensorImageDataset",
    "balanced_subset",
    "batch_mixer",
    "build_classification_data",
    "eval_transform",
    "fashion_mnist_images",
    "find_fashion_mnist",
    "image_folder",
    "limit_subset",
    "load_fashion_mnist",
    "read_idx",
    "train_transform",
]

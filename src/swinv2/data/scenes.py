"""Fashion-MNIST scenes: a detection and segmentation dataset built deterministically from real images.

Each scene is a black canvas with a few real Fashion-MNIST items pasted at random positions and scales,
without overlap. An item's instance mask is its own bright pixels, its box the mask's extent, its class
the item's class. Train scenes use Fashion-MNIST's train images, test scenes its test images, so no item
photo is shared between the splits.

The folder it writes is the layout real datasets use, so one set of loaders serves both::

    ROOT/semantic_classes.json         names of the mask values: background, then the item classes
    ROOT/<split>/images/000000.png     the scenes
    ROOT/<split>/instances.json        COCO format: boxes, RLE instance masks, categories 1..K
    ROOT/<split>/masks/000000.png      semantic masks: 0 background, k + 1 for class k
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .fashion_mnist import CACHE_DIR, CLASSES, load_fashion_mnist

SPLITS = {"train": "train", "test": "test"}  # scene split -> Fashion-MNIST split its items come from
ITEM_THRESHOLD = 24  # grey level above which an item pixel belongs to the item's mask


@dataclass(frozen=True)
class SceneSpec:
    """How scenes are drawn; every field takes part in the folder's identity (``spec.json``)."""

    size: int = 128
    train_scenes: int = 5000
    test_scenes: int = 1000
    min_items: int = 2
    max_items: int = 5
    min_scale: float = 1.0  # item side = 28 px x scale
    max_scale: float = 2.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.train_scenes < 1 or self.test_scenes < 1:
            raise ValueError(f"scene counts must be >= 1, got {self.train_scenes} train, {self.test_scenes} test")
        if self.size < 56 or not 1 <= self.min_items <= self.max_items or not 0 < self.min_scale <= self.max_scale:
            raise ValueError(f"invalid scene spec {self}: need size >= 56, 1 <= min <= max items, 0 < min <= max scale")
        if 28 * self.max_scale > self.size:
            raise ValueError(f"items of {28 * self.max_scale:.0f} px do not fit a {self.size} px canvas")

    def count(self, split: str) -> int:
        return self.train_scenes if split == "train" else self.test_scenes


BUILDING = ".scenes-building"  # present while a build writes the folder


def default_scenes_dir(spec: SceneSpec) -> Path:
    return CACHE_DIR.parent / f"fashion-mnist-scenes-{spec.size}-s{spec.seed}"


def ensure_scenes(root: str | os.PathLike | None = None, spec: SceneSpec | None = None) -> Path:
    """The scenes folder for ``spec``, written first if missing (or rewritten if written for another spec:
    the files of the earlier build are removed first, so none of a bigger build is left behind)."""
    spec = spec or SceneSpec()
    root = Path(root) if root is not None else default_scenes_dir(spec)
    marker = root / "spec.json"
    wanted = json.dumps(spec.__dict__, sort_keys=True)
    if marker.is_file() and marker.read_text() == wanted:
        return root
    building = root / BUILDING
    if root.is_dir() and any(root.iterdir()) and not (marker.is_file() or building.is_file()):
        raise FileExistsError(
            f"{root} holds files but no spec.json of a scenes build: it is not rebuilt (that would replace "
            "its instances.json and numbered images); give a new or empty folder"
        )
    root.mkdir(parents=True, exist_ok=True)
    building.write_text(wanted)  # an interrupted rebuild is ours to finish, never taken for a finished one
    marker.unlink(missing_ok=True)
    remove_scenes(root)
    write_scenes(root, spec)
    marker.write_text(wanted)
    building.unlink()
    return root


def remove_scenes(root: Path) -> None:
    """Delete the files a build writes (``NNNNNN.png`` scenes and masks, ``instances.json``), nothing else
    that may share the folder."""
    for split in SPLITS:
        for folder in ("images", "masks"):
            for path in (root / split / folder).glob("[0-9][0-9][0-9][0-9][0-9][0-9].png"):
                path.unlink()
        (root / split / "instances.json").unlink(missing_ok=True)


def write_scenes(root: str | os.PathLike, spec: SceneSpec) -> None:
    """Draw every split of ``spec`` and write images, masks and ``instances.json`` under ``root``."""
    from PIL import Image

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "semantic_classes.json").write_text(json.dumps(["background", *CLASSES]) + "\n")
    for split, source in SPLITS.items():
        items, labels = load_fashion_mnist(source)
        rng = np.random.default_rng([spec.seed, 0 if split == "train" else 1])
        images_dir, masks_dir = root / split / "images", root / split / "masks"
        images_dir.mkdir(parents=True, exist_ok=True)
        masks_dir.mkdir(parents=True, exist_ok=True)
        coco = _coco_header()
        for index in range(spec.count(split)):
            canvas, semantic, instances = draw_scene(spec, items, labels, rng)
            name = f"{index:06d}.png"
            Image.fromarray(canvas).save(images_dir / name)
            Image.fromarray(semantic).save(masks_dir / name)
            coco["images"].append({"id": index + 1, "file_name": name, "width": spec.size, "height": spec.size})
            for label, mask in instances:
                coco["annotations"].append(_annotation(len(coco["annotations"]) + 1, index + 1, label, mask))
        tmp = root / split / "instances.json.tmp"
        tmp.write_text(json.dumps(coco))
        os.replace(tmp, root / split / "instances.json")


def draw_scene(
    spec: SceneSpec, items: torch.Tensor, labels: torch.Tensor, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, list[tuple[int, np.ndarray]]]:
    """One scene: the grey canvas, its semantic mask and ``(class, instance mask)`` per item."""
    size = spec.size
    canvas = np.zeros((size, size), np.uint8)
    semantic = np.zeros((size, size), np.uint8)
    taken = np.zeros((size, size), bool)
    instances: list[tuple[int, np.ndarray]] = []
    for _ in range(int(rng.integers(spec.min_items, spec.max_items + 1))):
        pick = int(rng.integers(len(items)))
        side = round(28 * float(rng.uniform(spec.min_scale, spec.max_scale)))
        item = _resize(items[pick], side)
        mask = item > ITEM_THRESHOLD
        for _attempt in range(30):  # a free spot, or the item is left out of this scene
            y, x = (int(v) for v in rng.integers(0, size - side + 1, size=2))
            if not (taken[y : y + side, x : x + side] & mask).any():
                break
        else:
            continue
        full = np.zeros((size, size), bool)
        full[y : y + side, x : x + side] = mask
        taken |= _dilate(full)  # a one-pixel gap keeps neighbouring items apart
        canvas[y : y + side, x : x + side] = np.maximum(canvas[y : y + side, x : x + side], item)
        semantic[full] = int(labels[pick]) + 1
        instances.append((int(labels[pick]), full))
    return canvas, semantic, instances


def _resize(item: torch.Tensor, side: int) -> np.ndarray:
    x = F.interpolate(item[None, None].float(), size=(side, side), mode="bilinear", antialias=True, align_corners=False)
    return x[0, 0].round().clamp(0, 255).to(torch.uint8).numpy()


def _dilate(mask: np.ndarray) -> np.ndarray:
    t = torch.from_numpy(mask)[None, None].float()
    return (F.max_pool2d(t, 3, stride=1, padding=1)[0, 0] > 0).numpy()


def _coco_header() -> dict:
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(CLASSES)]
    return {"images": [], "annotations": [], "categories": categories}


def _annotation(ann_id: int, image_id: int, label: int, mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    ys, xs = np.nonzero(mask)
    x0, y0 = int(xs.min()), int(ys.min())
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": label + 1,
        "bbox": [x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1],
        "area": int(mask.sum()),
        "segmentation": rle,
        "iscrowd": 0,
    }

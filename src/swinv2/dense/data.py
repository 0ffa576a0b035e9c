"""Loaders for dense tasks: COCO-format detection folders and image + mask segmentation folders.

Both read the real datasets' layouts (COCO ``instances.json`` + images; ADE20K ``images/`` +
``annotations/``) and the Fashion-MNIST scenes written in them. Augmentations are torchvision's
transforms v2, which move boxes and masks with the image.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.datasets import CocoDetection, VisionDataset
from torchvision.transforms import v2

from ..data.decode import MarksUnreadable, UnreadableImage, read_image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
IGNORE_INDEX = 255
# The folder names a split goes by: this project's scenes (train/test), COCO and ADE20K.
SPLIT_ALIASES = {"train": ("train", "training", "train2017"), "val": ("val", "test", "validation", "val2017")}


class AnnotationError(ValueError):
    """An annotation file or mask that does not hold what the loaders expect (the CLI prints it)."""


@dataclass(frozen=True)
class SplitPaths:
    images: Path
    annotations: Path  # instances.json for detection, the mask folder for segmentation


def find_split(root: str | os.PathLike, split: str, task: str) -> SplitPaths:
    """Locate a split under ``root``: ``<split>/images`` with ``<split>/instances.json`` (detection) or
    ``<split>/masks`` (segmentation); or ADE20K's ``images/<split>`` + ``annotations/<split>``."""
    root = Path(root)
    tried = []
    for name in SPLIT_ALIASES[split]:
        ann = root / name / ("instances.json" if task == "detect" else "masks")
        candidates = [SplitPaths(root / name / "images", ann)]
        if task == "segment":
            candidates.append(SplitPaths(root / "images" / name, root / "annotations" / name))
        for paths in candidates:
            tried.append(f"{paths.images} + {paths.annotations}")
            if paths.images.is_dir() and paths.annotations.exists():
                return paths
    raise FileNotFoundError(f"no {split} split for {task} under {root}; looked for: {'; '.join(tried)}")


def read_semantic_classes(root: str | os.PathLike) -> list[str] | None:
    """Names of the mask values from ``ROOT/semantic_classes.json``, if the dataset has one."""
    path = Path(root) / "semantic_classes.json"
    if not path.is_file():
        return None
    try:
        names = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AnnotationError(f"{path} is not a JSON file ({exc})") from exc
    if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
        raise AnnotationError(f"{path}: {names!r:.80} is not a list of class names, one per mask value")
    return names


# ---------------------------------------------------------------------------------------------- detection
class CocoDetectionData(MarksUnreadable, Dataset):
    """A COCO-format split: ``(image float (3, H, W), target)`` with ``boxes`` (xyxy), ``labels``
    (1..K, in category-id order), ``masks`` (N, H, W; only with ``masks``) and ``image_id``.

    Crowd regions (``"iscrowd": 1``) are left out of the targets (COCO's convention); the annotation file
    is checked when loaded (:func:`read_coco`). Without ``masks`` (box detectors) annotations need no
    ``segmentation``, so box-only datasets load.
    """

    def __init__(self, paths: SplitPaths, transforms: v2.Transform | None = None, masks: bool = True):
        from torchvision.datasets import wrap_dataset_for_transforms_v2

        base = _CocoImages(paths.images, read_coco(paths.annotations, masks))
        if len(base) == 0:
            raise ValueError(f"{paths.annotations} lists no images")
        self.coco = base.coco
        self.category_ids = sorted(self.coco.getCatIds())
        self.classes = [self.coco.cats[c]["name"] for c in self.category_ids]
        self._label_of = {c: i + 1 for i, c in enumerate(self.category_ids)}
        self.image_ids = list(base.ids)
        self.masks = masks
        keys = ("image_id", "boxes", "labels", "masks") if masks else ("image_id", "boxes", "labels")
        self._data = wrap_dataset_for_transforms_v2(base, target_keys=keys)
        self.transforms = transforms
        self._init_marks(len(self.image_ids))

    def __len__(self) -> int:
        return len(self._data)

    def _sample_path(self, index: int) -> str:
        return self.coco.imgs[self.image_ids[index]]["file_name"]

    def __getitem__(self, index: int):
        try:
            image, target = self._data[index]
        except OSError:  # PIL: truncated, corrupt or not an image; skipped by the collate, counted per epoch
            self._mark(index)
            return None
        image = tv_tensors.Image(v2.functional.pil_to_tensor(image)) if not isinstance(image, torch.Tensor) else image
        h, w = image.shape[-2:]
        boxes = target.get("boxes", tv_tensors.BoundingBoxes(torch.zeros(0, 4), format="XYXY", canvas_size=(h, w)))
        labels = target.get("labels", torch.zeros(0, dtype=torch.int64))
        labels = torch.tensor([self._label_of[int(c)] for c in labels], dtype=torch.int64)
        target = {"boxes": boxes, "labels": labels, "image_id": int(target["image_id"]), "masks": target.get("masks")}
        if self.masks and target["masks"] is None:  # an image without objects
            target["masks"] = tv_tensors.Mask(torch.zeros(0, h, w, dtype=torch.uint8))
        elif not self.masks:
            del target["masks"]
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return v2.functional.to_dtype(image, torch.float32, scale=True), target

    def subset(self, limit: int | None) -> CocoDetectionData:
        """The first ``limit`` images (all when None), for quick runs."""
        if limit is not None:
            keep = list(range(min(limit, len(self))))
            self._data = torch.utils.data.Subset(self._data, keep)
            self.image_ids = self.image_ids[: len(keep)]
        return self


class _CocoImages(CocoDetection):
    """torchvision's ``CocoDetection`` over an index :func:`read_coco` checked, whose targets leave out
    crowd regions (``"iscrowd": 1``): by COCO's convention they are not objects to learn, and ``COCOeval``
    still reads them from the index to ignore detections that fall on them."""

    def __init__(self, root: Path, coco):
        VisionDataset.__init__(self, str(root))
        self.coco = coco
        self.ids = sorted(coco.imgs)

    def _load_target(self, id: int) -> list[dict]:
        return [a for a in super()._load_target(id) if not a.get("iscrowd", 0)]

    def _load_image(self, id: int):
        """Through :func:`read_image`, as every loader of the project: 16-bit files scaled to 8 bits, not
        clipped at 255 (torchvision's ``convert("RGB")`` turns them white); an unreadable file is an
        ``OSError``, which the dataset skips and counts."""
        from PIL import Image

        path = Path(self.root) / self.coco.loadImgs(id)[0]["file_name"]
        try:
            return Image.fromarray(read_image(path).permute(1, 2, 0).numpy())
        except UnreadableImage as exc:
            raise OSError(str(exc)) from exc


def read_coco(path: Path, masks: bool = True):
    """pycocotools' index of a COCO annotation file, parsed once and checked first, so that a malformed
    file is refused by name and entry instead of failing later with a ``KeyError`` deep in a loader
    (``masks``: each annotation must have a ``segmentation``)."""
    from pycocotools.coco import COCO

    if not path.is_file():
        raise FileNotFoundError(f"COCO annotation file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AnnotationError(f"{path} is not a JSON file ({exc})") from exc
    check_coco(data, path, masks)
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools reports its progress on stdout
        coco.createIndex()
    return coco


def check_coco(data: object, path: Path, masks: bool = True) -> None:
    """Refuse what the loaders and ``COCOeval`` would trip on; fill ``iscrowd`` (0) and ``area`` (the
    box's) where missing, as hand-made files often leave them out."""
    if not isinstance(data, dict):
        raise AnnotationError(f"{path}: expected a JSON object with 'images', 'annotations' and 'categories'")
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(data.get(k), list)]
    if missing:
        raise AnnotationError(f"{path}: no {', '.join(repr(k) for k in missing)} list (COCO format needs all three)")
    if not data["categories"]:
        raise AnnotationError(f"{path}: 'categories' is empty; expected one entry per class")
    _ids(data["images"], "images", ("id", "file_name", "width", "height"), path)
    sizes = {image["id"]: (image["width"], image["height"]) for image in data["images"]}
    category_ids = _ids(data["categories"], "categories", ("id", "name"), path)
    for i, ann in enumerate(data["annotations"]):
        _check_annotation(ann, f"{path}: annotations[{i}]", sizes, category_ids, masks)
    _ids(data["annotations"], "annotations", ("id",), path)  # repeated ids: pycocotools keeps one of them
    if not data["annotations"]:
        raise AnnotationError(f"{path}: 'annotations' is empty; there is no object to learn or score")
    if all(ann.get("iscrowd") for ann in data["annotations"]):
        raise AnnotationError(f"{path}: every annotation is a crowd region; there is no object to learn or score")


def _ids(entries: list, kind: str, keys: tuple[str, ...], path: Path) -> set:
    """The ids of ``images`` or ``categories`` entries, each checked to have ``keys``."""
    first: dict = {}
    for i, entry in enumerate(entries):
        absent = [k for k in keys if not isinstance(entry, dict) or k not in entry]
        if absent:
            raise AnnotationError(f"{path}: {kind}[{i}] has no {' or '.join(map(repr, absent))} ({entry!r:.120})")
        if not isinstance(entry["id"], int) or isinstance(entry["id"], bool):
            raise AnnotationError(f"{path}: {kind}[{i}] has id {entry['id']!r}; COCO ids are integers")
        if entry["id"] in first:  # pycocotools would index one of them and lose the other silently
            raise AnnotationError(f"{path}: {kind}[{first[entry['id']]}] and [{i}] share the id {entry['id']}")
        first[entry["id"]] = i
    return set(first)


def _check_annotation(ann: object, where: str, sizes: dict, category_ids: set, masks: bool) -> None:
    if not isinstance(ann, dict):
        raise AnnotationError(f"{where} is {ann!r:.80}, expected an object")
    where = f"{where} (id {ann.get('id')!r})"
    for key in ("id", "image_id", "category_id", "bbox"):
        if key not in ann:
            raise AnnotationError(f"{where} has no {key!r}")
    if masks and "segmentation" not in ann:
        raise AnnotationError(
            f"{where} has no 'segmentation': Mask R-CNN learns each object's mask (`--detector faster_rcnn` "
            "trains on boxes alone)"
        )
    if ann["image_id"] not in sizes:
        raise AnnotationError(f"{where}: image_id {ann['image_id']!r} is not the id of any entry of 'images'")
    if ann["category_id"] not in category_ids:
        raise AnnotationError(f"{where}: category_id {ann['category_id']!r} is not the id of any category")
    box = ann["bbox"]
    if not (isinstance(box, list) and len(box) == 4 and all(_is_number(v) for v in box)):
        raise AnnotationError(f"{where}: bbox {box!r:.80} is not 4 finite numbers [x, y, width, height]")
    if box[2] <= 0 or box[3] <= 0:
        raise AnnotationError(f"{where}: bbox {box} has no area (width and height must be > 0)")
    width, height = sizes[ann["image_id"]]
    if box[0] >= width or box[1] >= height or box[0] + box[2] <= 0 or box[1] + box[3] <= 0:
        raise AnnotationError(f"{where}: bbox {box} lies outside its {width} x {height} image")
    if masks and not _is_segmentation(ann["segmentation"]):
        raise AnnotationError(
            f"{where}: segmentation {ann['segmentation']!r:.80} is neither polygons (lists of >= 3 x, y pairs) "
            "nor run-length encoding ({'size': [h, w], 'counts': ...})"
        )
    ann.setdefault("iscrowd", 0)
    ann.setdefault("area", box[2] * box[3])


def _is_segmentation(value: object) -> bool:
    if isinstance(value, dict):
        return "counts" in value and isinstance(value.get("size"), list) and len(value["size"]) == 2
    return (
        isinstance(value, list)
        and len(value) > 0
        and all(
            isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0 and all(_is_number(v) for v in p) for p in value
        )
    )


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def detection_transforms(train: bool) -> v2.Transform | None:
    """Training: horizontal flips, then drop boxes a transform made degenerate. Testing: none."""
    if not train:
        return None
    return v2.Compose([v2.RandomHorizontalFlip(0.5), v2.SanitizeBoundingBoxes(labels_getter=_labels)])


def _labels(sample):
    return sample[1]["labels"]


def collate_detection(batch):
    """Lists of images and targets; None when no image of the batch could be read."""
    batch = [sample for sample in batch if sample is not None]
    if not batch:
        return None
    images, targets = zip(*batch)
    return list(images), list(targets)


# ------------------------------------------------------------------------------------------- segmentation
class SegmentationFolder(MarksUnreadable, Dataset):
    """Images paired by file stem with single-channel masks (class index per pixel, 255 = ignore).

    ``reduce_zero_label`` maps ADE20K's 0 ("other") to ignore and shifts classes 1..K down to 0..K-1.
    Grey, RGBA and 16-bit images are converted to 8-bit RGB. With ``num_classes``, each mask is checked
    when loaded (the image's size, values 0..K-1 or 255), so that a bad file is named instead of failing
    later inside the loss.
    """

    def __init__(
        self,
        paths: SplitPaths,
        transforms: v2.Transform | None = None,
        reduce_zero_label: bool = False,
        num_classes: int | None = None,
    ):
        images = sorted(p for p in paths.images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {paths.images}")
        masks = {p.stem: p for p in paths.annotations.iterdir() if p.suffix.lower() == ".png"}
        missing = [p.name for p in images if p.stem not in masks]
        if missing:
            raise ValueError(
                f"{len(missing)} images in {paths.images} have no mask in {paths.annotations}: {missing[:3]}"
            )
        self.samples = [(p, masks[p.stem]) for p in images]
        self._init_marks(len(self.samples))
        self.transforms = transforms
        self.reduce_zero_label = reduce_zero_label
        self.num_classes = num_classes

    def __len__(self) -> int:
        return len(self.samples)

    def _sample_path(self, index: int) -> str:
        return str(self.samples[index][0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        from PIL import Image

        image_path, mask_path = self.samples[index]
        try:
            image = tv_tensors.Image(read_image(image_path))
            with Image.open(mask_path) as m:
                mask = torch.as_tensor(_mask_array(m), dtype=torch.int64)
        except (UnreadableImage, OSError):  # skipped by the collate, counted per epoch
            self._mark(index)
            return None
        self._check_mask(mask, image.shape[-2:], mask_path)
        if self.reduce_zero_label:  # 0 ("other") and the ignore value stay ignored, 1..K become 0..K-1
            mask = torch.where((mask == 0) | (mask == IGNORE_INDEX), IGNORE_INDEX, mask - 1)
        mask = tv_tensors.Mask(mask)
        if self.transforms is not None:
            image, mask = self.transforms(image, mask)
        return image, mask.as_subclass(torch.Tensor)

    def _check_mask(self, mask: torch.Tensor, size: torch.Size, path: Path) -> None:
        """The mask covers its image and holds class indices (as stored: before ``reduce_zero_label``)."""
        if mask.shape != size:
            raise AnnotationError(
                f"{path}: mask is {mask.shape[-2]} x {mask.shape[-1]} (height x width), expected its image's "
                f"{size[0]} x {size[1]}"
            )
        if self.num_classes is None:
            return
        top = self.num_classes if self.reduce_zero_label else self.num_classes - 1
        bad = ((mask < 0) | (mask > top)) & (mask != IGNORE_INDEX)
        if bad.any():
            found = mask[bad].unique()[:5].tolist()
            meaning = " (0 = other, ignored with reduce_zero_label)" if self.reduce_zero_label else ""
            raise AnnotationError(
                f"{path}: mask values {found} out of range; expected 0..{top}{meaning} for "
                f"{self.num_classes} classes, or {IGNORE_INDEX} (ignore)"
            )

    def subset(self, limit: int | None) -> SegmentationFolder:
        if limit is not None:
            self.samples = self.samples[:limit]
        return self


def _mask_array(mask_img):
    import numpy as np

    if mask_img.mode not in ("L", "P", "I", "I;16"):
        raise ValueError(f"{mask_img.filename}: masks must be single-channel class indices, got mode {mask_img.mode}")
    return np.array(mask_img)


def segmentation_transforms(
    train: bool, size: int, mean: tuple[float, ...], std: tuple[float, ...], scale: tuple[float, float] = (0.75, 1.5)
) -> v2.Transform:
    """Training: random rescale, a ``size`` crop (padding with ignore), flips. Both: float and normalise."""
    steps: list[v2.Transform] = []
    if train:
        steps += [
            v2.RandomResize(int(size * scale[0]), int(size * scale[1]) + 1),
            v2.RandomCrop(size, pad_if_needed=True, fill={tv_tensors.Mask: IGNORE_INDEX, "others": 0}),
            v2.RandomHorizontalFlip(0.5),
        ]
    steps += [v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True), v2.Normalize(mean, std)]
    return v2.Compose(steps)

"""What differs between detection and segmentation runs: data, model, loss, metrics and pictures.

:mod:`swinv2.dense.engine` trains either on the engine of every task; :mod:`swinv2.dense.inference`
evaluates and draws a finished run.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset
from torchvision.transforms import v2

from ..data.scenes import ensure_scenes
from ..weights.checkpoint import refuse_partial_start
from .backbone import create_backbone
from .data import (
    IGNORE_INDEX,
    CocoDetectionData,
    SegmentationFolder,
    SplitPaths,
    collate_detection,
    detection_transforms,
    find_split,
    read_semantic_classes,
    segmentation_transforms,
)
from .detection import build_detector, coco_map, set_test_size, to_coco_results
from .recipe import DenseRecipe
from .segmentation import ConfusionMatrix, Segmenter, slide_inference

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class DenseTask:
    """Base: the data root and the backbone every task builds on."""

    main_metric = ""  # printed each epoch
    metrics: tuple[str, ...] = ()  # plotted

    def __init__(self, recipe: DenseRecipe):
        self.recipe = recipe
        self.classes: list[str] = []  # set by train_dataset(), or from a finished run's weights file
        self._root: Path | None = None

    @property
    def root(self) -> Path:
        """The data folder, resolved on first use: predicting needs none (the default one is written then)."""
        if self._root is None:
            self._root = Path(self.recipe.data) if self.recipe.data else ensure_scenes()
        return self._root

    def datasets(self) -> tuple[Dataset, Dataset]:
        """Training and validation sets; the training set names the classes."""
        train = self.train_dataset()
        return train, self.val_dataset()

    def train_dataset(self) -> Dataset:
        raise NotImplementedError

    def val_dataset(self) -> Dataset:
        """The validation split, checked against ``self.classes`` (the training set's or a run's)."""
        raise NotImplementedError

    def backbone(self):
        r = self.recipe
        overrides = {"img_size": r.img_size, "drop_path_rate": r.drop_path}
        for key in ("window_size", "position_bias"):
            if getattr(r, key) is not None:
                overrides[key] = getattr(r, key)
        backbone = create_backbone(r.model, pretrained=r.pretrained, **overrides)
        if r.pretrained:
            refuse_partial_start(backbone.load_report, r.pretrained, r.model)
        backbone.set_memory_savers(r.grad_checkpointing, r.sequential_attention, r.sequential_mlp)
        return backbone

    def loss_units(self, batch) -> int:
        """What the batch loss averages over: the data-parallel engine weights each rank's loss by its
        share of them, so that the ranks together train on the one-process mean. Images, by default."""
        return len(batch[0])

    def set_test_geometry(self, model: nn.Module) -> None:
        """Test at ``recipe.test_size`` with ``recipe.test_window`` (when given)."""
        if self.recipe.test_window is not None:
            self.backbone_of(model).set_window(self.recipe.test_window)

    @staticmethod
    def backbone_of(model: nn.Module):
        """The SwinV2 backbone inside a task's model (a detector keeps it under its feature pyramid)."""
        return model.backbone.body if hasattr(model.backbone, "body") else model.backbone


class DetectionTask(DenseTask):
    main_metric = "map50"
    metrics = ("map50", "map")

    def train_dataset(self) -> Dataset:
        train = CocoDetectionData(find_split(self.root, "train", "detect"), detection_transforms(True), self.masks)
        self.classes = train.classes
        return train.subset(self.recipe.train_limit)

    def val_dataset(self) -> Dataset:
        val = CocoDetectionData(find_split(self.root, "val", "detect"), detection_transforms(False), self.masks)
        if val.classes != self.classes:
            # the model's labels follow train's categories and scoring maps them back through val's: any
            # difference would score correct boxes as wrong, silently
            raise ValueError(
                f"the val annotations list other categories than train's: val {val.classes}, train (the model's) "
                f"{self.classes}; give both splits the same 'categories'"
            )
        return val.subset(self.recipe.val_limit)

    collate = staticmethod(collate_detection)

    @property
    def masks(self) -> bool:
        """Whether the detector learns masks (box detectors read box-only COCO files)."""
        return self.recipe.detector == "mask_rcnn"

    def build_model(self) -> nn.Module:
        r = self.recipe
        return build_detector(
            self.backbone(),
            len(self.classes),
            r.detector,
            min_size=r.img_size,
            max_size=r.img_size * 2,
            fpn_channels=r.fpn_channels,
            anchor_sizes=r.anchor_sizes,
            box_head_dim=r.box_head_dim,
            mask_head_dim=r.mask_head_dim,
            rois_per_image=r.rois_per_image,
            proposals=r.proposals,
            max_detections=r.max_detections,
            roi_sampling=r.roi_sampling,
            image_mean=MEAN,
            image_std=STD,
        )

    def loss(self, model: nn.Module, batch, device: torch.device) -> tuple[torch.Tensor, dict[str, float]]:
        images, targets = batch
        images = [im.to(device) for im in images]
        targets = [{k: v.to(device) if torch.is_tensor(v) else v for k, v in t.items()} for t in targets]
        parts = model(images, targets)
        return sum(parts.values()), {k: v.item() for k, v in parts.items()}

    def set_test_geometry(self, model: nn.Module) -> None:
        super().set_test_geometry(model)
        size = self.recipe.eval_size
        set_test_size(model, size, size * 2)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader, device: torch.device) -> dict[str, float]:
        model.eval()
        data: CocoDetectionData = loader.dataset
        results = []
        for batch in loader:
            if batch is None:  # nothing readable in this batch
                continue
            images, targets = batch
            outputs = model([im.to(device) for im in images])
            results += to_coco_results(outputs, [t["image_id"] for t in targets], data.category_ids)
        scores = coco_map(data.coco, results, data.image_ids, "bbox")
        if self.recipe.detector == "mask_rcnn":
            masks = coco_map(data.coco, results, data.image_ids, "segm")
            scores.update(mask_map=masks["map"], mask_map50=masks["map50"])
        return scores

    @torch.no_grad()
    def draw(self, model: nn.Module, images: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
        """Each image with its detections (score >= 0.5): masks, boxes, class names and scores."""
        from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

        model.eval()
        drawn = []
        for image, out in zip(images, model([im.to(device) for im in images])):
            keep = out["scores"] >= 0.5
            factor = enlargement(image)  # small images are drawn larger, so that the labels stay legible
            canvas = enlarge((image * 255).to(torch.uint8), factor)
            if "masks" in out and keep.any():
                masks = enlarge(out["masks"][keep, 0].cpu() > 0.5, factor)
                canvas = draw_segmentation_masks(canvas, masks, alpha=0.4)
            names = [f"{self.classes[int(c) - 1]} {s:.2f}" for c, s in zip(out["labels"][keep], out["scores"][keep])]
            boxes = out["boxes"][keep].float().cpu() * factor
            drawn.append(draw_bounding_boxes(canvas, boxes, names, colors="yellow", width=1) if len(boxes) else canvas)
        return drawn


class SegmentationTask(DenseTask):
    main_metric = "miou"
    metrics = ("miou", "pixel_acc")

    def train_dataset(self) -> Dataset:
        r = self.recipe
        paths = find_split(self.root, "train", "segment")
        names = read_semantic_classes(self.root)
        if names is None:
            raise ValueError(f"{self.root} has no semantic_classes.json naming the mask values (one name per class)")
        self.classes = names[1:] if r.reduce_zero_label else names
        transforms = segmentation_transforms(True, r.img_size, MEAN, STD, r.rescale)
        return self._folder(paths, transforms).subset(r.train_limit)

    def val_dataset(self) -> Dataset:
        transforms = segmentation_transforms(False, self.recipe.img_size, MEAN, STD)
        return self._folder(find_split(self.root, "val", "segment"), transforms).subset(self.recipe.val_limit)

    def _folder(self, paths: SplitPaths, transforms: v2.Transform) -> SegmentationFolder:
        """A split whose masks are checked against the classes (values 0..K-1, or 255)."""
        return SegmentationFolder(paths, transforms, self.recipe.reduce_zero_label, num_classes=len(self.classes))

    @staticmethod
    def collate(batch):
        batch = [sample for sample in batch if sample is not None]  # unreadable files, counted by the dataset
        if not batch:
            return None
        images, masks = zip(*batch)
        if len({im.shape for im in images}) == 1:
            return torch.stack(images), torch.stack(masks)
        return list(images), list(masks)

    def build_model(self) -> nn.Module:
        r = self.recipe
        return Segmenter(self.backbone(), len(self.classes), r.head_channels, r.head_dropout)

    def loss_units(self, batch) -> int:
        """Labelled pixels: the loss is their mean."""
        return int(sum((mask != IGNORE_INDEX).sum() for mask in batch[1]))

    def loss(self, model: nn.Module, batch, device: torch.device) -> tuple[torch.Tensor, dict[str, float]]:
        images, masks = (t.to(device) for t in batch)
        # the mean over labelled pixels; a batch without one (crops of ignored regions) weighs 0, not NaN
        labelled = (masks != IGNORE_INDEX).sum().clamp_min(1)
        loss = F.cross_entropy(model(images), masks, ignore_index=IGNORE_INDEX, reduction="sum") / labelled
        return loss, {"loss_ce": loss.item()}

    def predict_logits(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """Logits at the input's size, computed at ``test_size`` (whole image, or sliding windows)."""
        r = self.recipe
        h, w = images.shape[-2:]
        scale = r.eval_size / r.img_size
        x = F.interpolate(images, scale_factor=scale, mode="bilinear", align_corners=False) if scale != 1 else images
        logits = slide_inference(model, x, r.img_size, max(1, r.img_size * 2 // 3)) if r.slide else model(x)
        return F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False) if scale != 1 else logits

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader, device: torch.device) -> dict[str, float]:
        model.eval()
        confusion = ConfusionMatrix(len(self.classes))
        for batch in loader:
            if batch is None:  # nothing readable in this batch
                continue
            images, masks = batch
            groups = zip(images, masks) if isinstance(images, list) else [(images, masks)]
            for im, mask in groups:
                im = im if im.ndim == 4 else im[None]
                mask = mask if mask.ndim == 3 else mask[None]
                confusion.update(self.predict_logits(model, im.to(device)).argmax(1).cpu(), mask)
        return confusion.scores()

    @torch.no_grad()
    def draw(self, model: nn.Module, images: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
        """Each image beside its predicted classes, one colour per class (background left clear)."""
        from torchvision.utils import draw_segmentation_masks

        model.eval()
        mean, std = torch.tensor(MEAN)[:, None, None], torch.tensor(STD)[:, None, None]
        drawn = []
        for image in images:
            pred = self.predict_logits(model, image[None].to(device)).argmax(1)[0].cpu()
            factor = enlargement(image)
            plain = enlarge(((image * std + mean).clamp(0, 1) * 255).to(torch.uint8), factor)
            pred = enlarge(pred, factor)
            classes = torch.arange(1 if self.classes[0] == "background" else 0, len(self.classes))
            overlay = draw_segmentation_masks(plain, pred[None] == classes[:, None, None], alpha=0.6)
            drawn.append(torch.cat([plain, overlay], dim=2))
        return drawn


def enlargement(image: torch.Tensor, side: int = 256) -> int:
    """Integer factor that brings an image's shorter side to about ``side`` pixels (1 for large images)."""
    return max(1, round(side / min(image.shape[-2:])))


def enlarge(t: torch.Tensor, factor: int) -> torch.Tensor:
    """Nearest-neighbour enlargement of the last two axes (pixels stay sharp, labels and masks exact)."""
    return t if factor == 1 else t.repeat_interleave(factor, -2).repeat_interleave(factor, -1)


def make_task(recipe: DenseRecipe) -> DenseTask:
    return DetectionTask(recipe) if recipe.task == "detect" else SegmentationTask(recipe)

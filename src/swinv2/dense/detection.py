"""Faster R-CNN and Mask R-CNN (torchvision's) with an FPN over a SwinV2 backbone, and COCO evaluation.

torchvision provides the detectors: region proposals, RoI heads, losses, resizing and post-processing.
This module supplies the backbone with its feature pyramid, sizes the heads for the task, and scores
predictions with the COCO protocol through pycocotools.
"""

from __future__ import annotations

import contextlib
import io
from collections import OrderedDict

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from .backbone import SwinV2Backbone
from .roi_align import GatherMultiScaleRoIAlign

DETECTORS = ("mask_rcnn", "faster_rcnn")


class SwinV2FPN(nn.Module):
    """The backbone's four stages through a feature pyramid (plus a max-pooled fifth level), all with
    ``out_channels`` channels, named ``"0"`` .. ``"3"``, ``"pool"`` as torchvision's detectors expect."""

    def __init__(self, backbone: SwinV2Backbone, out_channels: int = 256):
        super().__init__()
        self.body = backbone
        self.fpn = FeaturePyramidNetwork(backbone.out_channels, out_channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels

    def forward(self, images: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        features = self.body(images)
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(features.values())))


def build_detector(
    backbone: SwinV2Backbone,
    num_classes: int,
    kind: str = "mask_rcnn",
    *,
    min_size: int = 800,
    max_size: int = 1333,
    fpn_channels: int = 256,
    anchor_sizes: tuple[int, ...] = (32, 64, 128, 256, 512),
    box_head_dim: int = 1024,
    mask_head_dim: int = 256,
    rois_per_image: int = 512,
    proposals: tuple[int, int] = (2000, 1000),
    max_detections: int = 100,
    roi_sampling: int = 2,
    image_mean: tuple[float, ...] = (0.485, 0.456, 0.406),
    image_std: tuple[float, ...] = (0.229, 0.224, 0.225),
) -> nn.Module:
    """A torchvision Faster / Mask R-CNN over ``backbone``; ``num_classes`` excludes the background.

    Images are resized so their shorter side is ``min_size`` (the longer at most ``max_size``) before
    the backbone; one anchor size per pyramid level, three aspect ratios. ``proposals`` is the number of
    region proposals kept per image (training, testing); ``roi_sampling`` the bilinear samples per RoI
    bin side (0: adaptive, torchvision's own RoIAlign). Heads are torchvision's, with widths given here
    so that a small backbone is not outweighed by a 1024-wide box head and a 256-wide mask head.
    """
    if kind not in DETECTORS:
        raise ValueError(f"detector must be one of {DETECTORS}, got {kind!r}")
    if len(anchor_sizes) != 5:
        raise ValueError(f"anchor_sizes needs one size per pyramid level (5), got {anchor_sizes}")
    fpn = SwinV2FPN(backbone, fpn_channels)
    names = ["0", "1", "2", "3"]
    box_pool = _roi_pool(names, 7, roi_sampling)
    common = dict(
        min_size=min_size,
        max_size=max_size,
        image_mean=list(image_mean),
        image_std=list(image_std),
        rpn_anchor_generator=AnchorGenerator(tuple((s,) for s in anchor_sizes), ((0.5, 1.0, 2.0),) * 5),
        box_roi_pool=box_pool,
        box_head=TwoMLPHead(fpn_channels * 7 * 7, box_head_dim),
        box_predictor=FastRCNNPredictor(box_head_dim, num_classes + 1),
        box_batch_size_per_image=rois_per_image,
        rpn_pre_nms_top_n_train=proposals[0],
        rpn_post_nms_top_n_train=proposals[0],
        rpn_pre_nms_top_n_test=proposals[1],
        rpn_post_nms_top_n_test=proposals[1],
        box_detections_per_img=max_detections,
    )
    if kind == "faster_rcnn":
        return FasterRCNN(fpn, **common)
    mask_pool = _roi_pool(names, 14, roi_sampling)
    mask_head = MaskRCNNHeads(fpn_channels, (mask_head_dim,) * 4, dilation=1)
    mask_predictor = MaskRCNNPredictor(mask_head_dim, mask_head_dim, num_classes + 1)
    return MaskRCNN(fpn, mask_roi_pool=mask_pool, mask_head=mask_head, mask_predictor=mask_predictor, **common)


def _roi_pool(names: list[str], size: int, sampling: int) -> nn.Module:
    """The gather-based RoIAlign (same numbers, faster CPU backward), or torchvision's for adaptive sampling."""
    if sampling > 0:
        return GatherMultiScaleRoIAlign(names, size, sampling)
    return MultiScaleRoIAlign(names, output_size=size, sampling_ratio=sampling)


def set_test_size(detector: nn.Module, min_size: int, max_size: int) -> None:
    """Resize test images to this size from now on (the detector maps boxes back to the input size)."""
    detector.transform.min_size = (min_size,)
    detector.transform.max_size = max_size


def to_coco_results(outputs: list[dict], image_ids: list[int], category_ids: list[int]) -> list[dict]:
    """Detector outputs as COCO result entries (boxes ``xywh``, masks as RLE at 0.5), ids mapped back."""
    from pycocotools import mask as mask_utils

    results = []
    for out, image_id in zip(outputs, image_ids):
        boxes = out["boxes"].float().cpu()
        boxes[:, 2:] -= boxes[:, :2]
        masks = (out["masks"][:, 0] > 0.5).cpu().numpy() if "masks" in out else None
        for j, (box, score, label) in enumerate(zip(boxes.tolist(), out["scores"].tolist(), out["labels"].tolist())):
            entry = {"image_id": image_id, "category_id": category_ids[label - 1], "bbox": box, "score": score}
            if masks is not None:
                rle = mask_utils.encode(masks[j].astype("uint8", order="F"))
                entry["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
            results.append(entry)
    return results


def coco_map(coco_gt, results: list[dict], image_ids: list[int], iou_type: str = "bbox") -> dict[str, float]:
    """COCO AP over IoU 0.5:0.95 (``map``) and at 0.5 (``map50``) on ``image_ids``, in percent (0 when
    nothing was detected)."""
    from pycocotools.cocoeval import COCOeval

    if not results:
        return {"map": 0.0, "map50": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its whole table
        detections = coco_gt.loadRes(results)
        evaluator = COCOeval(coco_gt, detections, iou_type)
        evaluator.params.imgIds = sorted(image_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {"map": 100 * max(float(evaluator.stats[0]), 0.0), "map50": 100 * max(float(evaluator.stats[1]), 0.0)}

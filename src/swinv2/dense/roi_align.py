"""RoIAlign written with gathers, so that its backward pass is a parallel ``index_add`` instead of
torchvision's serial CPU kernel (a large share of a Mask R-CNN training step on a CPU: docs/dense.md).

Same sampling as ``torchvision.ops.roi_align(..., aligned=False)`` with a fixed ``sampling_ratio``, and
the same level assignment as ``torchvision.ops.MultiScaleRoIAlign`` (FPN paper, eq. 1); the tests
compare outputs and gradients with torchvision's. It pays off with one sample per bin on a CPU;
with 2 x 2 samples it gathers four times the rows and torchvision's kernel wins, so the pooler below
uses torchvision's there and on GPUs (``benchmarks/roi_align.py``; docs/dense.md has the figures).
"""

from __future__ import annotations

import math

import torch
from torchvision.ops import MultiScaleRoIAlign


def _axis(coords: torch.Tensor, size: int):
    """Neighbouring indices and bilinear weights along one axis; samples outside [-1, size] get weight 0."""
    valid = (coords >= -1.0) & (coords <= size)
    c = coords.clamp(min=0)
    low = c.floor().long()
    edge = low >= size - 1
    low = low.clamp(max=size - 1)
    high = torch.where(edge, low, low + 1)
    frac = torch.where(edge, torch.zeros_like(c), c - low.to(c.dtype)) * valid
    return low, high, (1 - frac) * valid, frac


def roi_align(
    features: torch.Tensor, rois: torch.Tensor, output_size: int, spatial_scale: float, sampling_ratio: int
) -> torch.Tensor:
    """``features`` (N, C, H, W), ``rois`` (K, 5) as ``(image index, x1, y1, x2, y2)`` -> (K, C, S, S)."""
    if sampling_ratio < 1:
        raise ValueError(f"sampling_ratio must be >= 1 here (adaptive sampling is not supported), got {sampling_ratio}")
    n, c, h, w = features.shape
    k, s, ratio = rois.shape[0], output_size, sampling_ratio
    if k == 0:
        return features.new_zeros(0, c, s, s)
    image = rois[:, 0].long()
    x1, y1, x2, y2 = (rois[:, 1:] * spatial_scale).unbind(1)
    steps = (torch.arange(s * ratio, device=rois.device, dtype=rois.dtype) + 0.5) / ratio  # in bins
    ys = y1[:, None] + (y2 - y1).clamp(min=1.0)[:, None] / s * steps  # (K, S * ratio)
    xs = x1[:, None] + (x2 - x1).clamp(min=1.0)[:, None] / s * steps
    y_lo, y_hi, wy_lo, wy_hi = _axis(ys, h)
    x_lo, x_hi, wx_lo, wx_hi = _axis(xs, w)
    flat = features.permute(0, 2, 3, 1).reshape(n * h * w, c)  # one row per pixel
    base = (image * h * w)[:, None, None]
    out = None
    for yi, wy in ((y_lo, wy_lo), (y_hi, wy_hi)):
        for xi, wx in ((x_lo, wx_lo), (x_hi, wx_hi)):
            index = (base + yi[:, :, None] * w + xi[:, None, :]).reshape(-1)
            weight = (wy[:, :, None] * wx[:, None, :]).reshape(-1, 1).to(features.dtype)
            term = flat.index_select(0, index) * weight
            out = term if out is None else out + term
    out = out.view(k, s, ratio, s, ratio, c).mean(dim=(2, 4))  # average the samples of each bin
    return out.permute(0, 3, 1, 2).contiguous()


class GatherMultiScaleRoIAlign(MultiScaleRoIAlign):
    """Drop-in for ``torchvision.ops.MultiScaleRoIAlign`` (fixed sampling ratio): :func:`roi_align` for CPU
    tensors at one sample per bin (or always, with ``always_gather``), torchvision's kernel otherwise."""

    def __init__(self, featmap_names: list[str], output_size: int, sampling_ratio: int, always_gather: bool = False):
        if sampling_ratio < 1:
            raise ValueError(f"sampling_ratio must be >= 1, got {sampling_ratio}")
        super().__init__(list(featmap_names), output_size, sampling_ratio)  # detectors check the type
        self.always_gather, self.size = always_gather, output_size
        self.canonical_scale, self.canonical_level = 224, 4

    def forward(
        self, x: dict[str, torch.Tensor], boxes: list[torch.Tensor], image_shapes: list[tuple[int, int]]
    ) -> torch.Tensor:
        features = [x[name] for name in self.featmap_names]
        largest = [max(s[0] for s in image_shapes), max(s[1] for s in image_shapes)]
        scales = [_infer_scale(f, largest) for f in features]
        rois = torch.cat(
            [torch.cat([b.new_full((len(b), 1), i), b], dim=1) for i, b in enumerate(boxes)], dim=0
        )  # (K, 5)
        levels = self._levels(torch.cat(boxes), scales)
        result = features[0].new_zeros(len(rois), features[0].shape[1], self.size, self.size)
        for level, (feature, scale) in enumerate(zip(features, scales)):
            index = torch.where(levels == level)[0]
            if len(index):
                gather = self.always_gather or (feature.device.type == "cpu" and self.sampling_ratio == 1)
                align = roi_align if gather else _torchvision_roi_align
                pooled = align(feature, rois[index], self.size, scale, self.sampling_ratio)
                result = result.index_copy(0, index, pooled.to(result.dtype))
        return result

    def _levels(self, boxes: torch.Tensor, scales: list[float]) -> torch.Tensor:
        k_min, k_max = -math.log2(scales[0]), -math.log2(scales[-1])
        side = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).sqrt()
        level = torch.floor(self.canonical_level + torch.log2(side / self.canonical_scale) + 1e-6)
        return (level.clamp(k_min, k_max) - k_min).long()


def _torchvision_roi_align(features, rois, output_size: int, spatial_scale: float, sampling_ratio: int):
    from torchvision.ops import roi_align as tv_roi_align

    return tv_roi_align(features, rois, output_size, spatial_scale, sampling_ratio, aligned=False)


def _infer_scale(feature: torch.Tensor, image_size: list[int]) -> float:
    """The power of two closest to feature height / image height (torchvision's rule)."""
    return 2.0 ** round(math.log2(feature.shape[-2] / image_size[0]))

"""Semantic segmentation: a UperNet head (Xiao et al., 2018) on a SwinV2 backbone, mIoU, and inference
on whole images or by sliding windows at a larger size than training."""

from __future__ import annotations

import torch
import torch.distributed as tdist
import torch.nn.functional as F
from torch import nn

from .backbone import SwinV2Backbone
from .data import IGNORE_INDEX


class BatchNorm2d(nn.BatchNorm2d):
    """BatchNorm that also trains on a single value per channel, as the 1x1 pyramid pooling level gives for a
    one-image batch (``--batch-size 1``, a one-image training set, a batch that lost unreadable files):
    batch statistics are undefined there, so it normalises with its running statistics, leaving them as they
    are. Weights, buffers and every other batch are exactly ``nn.BatchNorm2d``'s.

    With ``synchronized`` set, training under torch.distributed takes the statistics of the global batch
    over all ranks (as SyncBatchNorm does, on CPU processes with gloo too), so that a data-parallel run
    normalises as one process with the whole batch does."""

    synchronized = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.synchronized and tdist.is_initialized() and tdist.get_world_size() > 1:
            return self._synchronized(x)
        if self.training and x.numel() == x.shape[1]:
            return self._running(x)
        return super().forward(x)

    def _running(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)

    def _synchronized(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():  # one all-reduce for the global count and the sums behind the mean
            local = torch.cat([x.float().sum((0, 2, 3)).double(), x.new_tensor([x.numel() // x.shape[1]]).double()])
            sums = tdist_sum(local)
        count = sums[-1].item()
        if count == 1:
            return self._running(x)
        mean = (sums[:-1] / count).float()
        y, var = GlobalBatchNorm.apply(x, self.weight, self.bias, self.eps, count, mean)
        with torch.no_grad():
            m = self.momentum
            self.running_mean.mul_(1 - m).add_(mean, alpha=m)
            self.running_var.mul_(1 - m).add_(var * count / (count - 1), alpha=m)
            self.num_batches_tracked += 1
        return y


def tdist_sum(t: torch.Tensor) -> torch.Tensor:
    """``t`` summed over the ranks (in place)."""
    tdist.all_reduce(t)
    return t


class GlobalBatchNorm(torch.autograd.Function):
    """Batch normalisation of NCHW ``x`` with the ``mean`` (given) and variance of all ranks' batches
    together (``count`` values per channel); its backward pass sums the statistics' gradients over the
    ranks, so the inputs get the gradient of the normalisation of one global batch. The weight's and bias's
    gradients stay this rank's (data parallelism averages them). Returns the output and, for the running
    statistics, the biased batch variance."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps: float, count: float, mean: torch.Tensor):
        centred = x.float() - mean[None, :, None, None]
        var = tdist_sum((centred * centred).sum((0, 2, 3))) / count
        invstd = torch.rsqrt(var + eps)
        xhat = centred * invstd[None, :, None, None]
        ctx.save_for_backward(xhat, invstd, weight)
        ctx.count = count
        ctx.mark_non_differentiable(var)
        y = xhat * weight[None, :, None, None] + bias[None, :, None, None]
        return y.to(x.dtype), var

    @staticmethod
    def backward(ctx, grad_y, _grad_var):
        xhat, invstd, weight = ctx.saved_tensors
        gy, dims = grad_y.float(), (0, 2, 3)
        grad_bias, grad_weight = gy.sum(dims), (gy * xhat).sum(dims)
        sums = tdist_sum(torch.cat([grad_bias, grad_weight])) / ctx.count
        mean_gy, mean_gy_xhat = sums.chunk(2)
        scale = (weight * invstd)[None, :, None, None]
        grad_x = scale * (gy - mean_gy[None, :, None, None] - xhat * mean_gy_xhat[None, :, None, None])
        return grad_x.to(grad_y.dtype), grad_weight, grad_bias, None, None, None


def synchronize_batchnorm(model: nn.Module) -> int:
    """Have every :class:`BatchNorm2d` of ``model`` normalise over all ranks; the count changed."""
    norms = [m for m in model.modules() if isinstance(m, BatchNorm2d)]
    for norm in norms:
        norm.synchronized = True
    return len(norms)


def conv_bn_relu(c_in: int, c_out: int, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=False), BatchNorm2d(c_out), nn.ReLU(inplace=True)
    )


class PyramidPooling(nn.Module):
    """Pool the coarsest map to 1x1, 2x2, 3x3 and 6x6 grids, project, upsample, fuse with the map."""

    def __init__(self, c_in: int, channels: int, scales: tuple[int, ...] = (1, 2, 3, 6)):
        super().__init__()
        self.scales = scales
        self.branches = nn.ModuleList(conv_bn_relu(c_in, channels, 1) for _ in scales)
        self.fuse = conv_bn_relu(c_in + len(scales) * channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        pooled = [
            F.interpolate(branch(F.adaptive_avg_pool2d(x, s)), size=size, mode="bilinear", align_corners=False)
            for s, branch in zip(self.scales, self.branches)
        ]
        return self.fuse(torch.cat([x, *pooled], dim=1))


class UperNetHead(nn.Module):
    """Pyramid pooling on the last stage, a top-down FPN over the others, all levels upsampled to the
    finest (stride 4) and fused, then a 1x1 classifier."""

    def __init__(self, in_channels: list[int], num_classes: int, channels: int = 512, dropout: float = 0.1):
        super().__init__()
        self.ppm = PyramidPooling(in_channels[-1], channels)
        self.lateral = nn.ModuleList(conv_bn_relu(c, channels, 1) for c in in_channels[:-1])
        self.smooth = nn.ModuleList(conv_bn_relu(channels, channels) for _ in in_channels[:-1])
        self.fuse = conv_bn_relu(len(in_channels) * channels, channels)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        levels = [lat(f) for lat, f in zip(self.lateral, features[:-1])] + [self.ppm(features[-1])]
        for i in range(len(levels) - 1, 0, -1):  # top-down: coarse context into finer maps
            levels[i - 1] = levels[i - 1] + _resize(levels[i], levels[i - 1])
        outs = [smooth(level) for smooth, level in zip(self.smooth, levels[:-1])] + [levels[-1]]
        fused = self.fuse(torch.cat([outs[0]] + [_resize(o, outs[0]) for o in outs[1:]], dim=1))
        return self.classifier(self.dropout(fused))


def _resize(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


class Segmenter(nn.Module):
    """Backbone + UperNet: images ``(B, 3, H, W)`` -> per-pixel class logits ``(B, K, H, W)``."""

    def __init__(self, backbone: SwinV2Backbone, num_classes: int, channels: int = 512, dropout: float = 0.1):
        super().__init__()
        self.backbone = backbone
        self.head = UperNetHead(backbone.out_channels, num_classes, channels, dropout)
        self.num_classes = num_classes

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.head(list(self.backbone(images).values()))
        return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)


@torch.no_grad()
def slide_inference(model: Segmenter, images: torch.Tensor, crop: int, stride: int) -> torch.Tensor:
    """Logits averaged over ``crop`` x ``crop`` windows every ``stride`` pixels (edges included), for
    images larger than the model was trained on."""
    b, _, h, w = images.shape
    if stride < 1 or crop < 1:
        raise ValueError(f"crop and stride must be >= 1, got {crop}, {stride}")
    logits = images.new_zeros(b, model.num_classes, h, w)
    count = images.new_zeros(1, 1, h, w)
    for y in _starts(h, crop, stride):
        for x in _starts(w, crop, stride):
            window = images[:, :, y : y + crop, x : x + crop]
            logits[:, :, y : y + crop, x : x + crop] += model(window)
            count[:, :, y : y + crop, x : x + crop] += 1
    return logits / count


def _starts(length: int, crop: int, stride: int) -> list[int]:
    if length <= crop:
        return [0]
    starts = list(range(0, length - crop, stride))
    return [*starts, length - crop]


class ConfusionMatrix:
    """Accumulates a K x K pixel confusion matrix (ignore pixels skipped); IoU per class and mIoU."""

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        keep = target != IGNORE_INDEX
        if (target[keep] >= self.num_classes).any() or (target[keep] < 0).any():
            raise ValueError(f"mask values must be 0..{self.num_classes - 1} or {IGNORE_INDEX} (ignore)")
        index = target[keep] * self.num_classes + prediction[keep]
        self.matrix += torch.bincount(index.cpu(), minlength=self.num_classes**2).view(self.num_classes, -1)

    def iou(self) -> torch.Tensor:
        """IoU per class (NaN for classes absent from both prediction and ground truth)."""
        tp = self.matrix.diag().double()
        union = self.matrix.sum(0).double() + self.matrix.sum(1).double() - tp
        return tp / union.where(union > 0, torch.tensor(float("nan"), dtype=torch.double))

    def scores(self) -> dict[str, float]:
        iou = self.iou()
        total = self.matrix.sum().item()
        return {
            "miou": 100 * float(iou.nanmean()),
            "pixel_acc": 100 * self.matrix.diag().sum().item() / max(total, 1),
        }

"""Windows over any number of axes: padding, partition, reverse and the shift / padding mask.

The video model uses three axes. The image model keeps its 2-D versions (``swinv2.layers.window``),
which TorchScript compiles; these reuse their per-axis region and padding rules.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .window import PAD_MASK_VALUE, SHIFT_MASK_VALUE, _is_padding, _region_ids

Window = tuple[int, ...]


def pad_to_window(x: torch.Tensor, window: Window) -> tuple[torch.Tensor, Window]:
    """Zero-pad ``(B, *S, C)`` at the end of each axis to multiples of ``window``; return it and the pads."""
    sizes = x.shape[1:-1]
    pads = tuple((w - s % w) % w for s, w in zip(sizes, window))
    if any(pads):
        spec = [0, 0]  # channels
        for p in reversed(pads):
            spec += [0, p]
        x = F.pad(x, spec)
    return x, pads


def window_partition(x: torch.Tensor, window: Window) -> torch.Tensor:
    """``(B, *S, C)`` -> ``(B * nW, prod(window), C)``; every axis of S a multiple of its window."""
    b, *sizes, c = x.shape
    d = len(window)
    shape = [b]
    for s, w in zip(sizes, window):
        shape += [s // w, w]
    x = x.view(*shape, c)
    order = [0, *range(1, 2 * d, 2), *range(2, 2 * d + 1, 2), 2 * d + 1]  # window counts, then offsets
    return x.permute(order).reshape(-1, math.prod(window), c)


def window_reverse(windows: torch.Tensor, window: Window, sizes: Window) -> torch.Tensor:
    """Inverse of :func:`window_partition`: ``(B * nW, prod(window), C)`` -> ``(B, *sizes, C)``."""
    c, d = windows.shape[-1], len(window)
    x = windows.view(-1, *(s // w for s, w in zip(sizes, window)), *window, c)
    order = [0]
    for i in range(d):
        order += [1 + i, 1 + d + i]
    return x.permute(*order, 2 * d + 1).reshape(-1, *sizes, c)


def attention_mask(
    padded: Window, window: Window, shift: Window, valid: Window, mask_padding: bool, device: torch.device
) -> torch.Tensor | None:
    """Additive mask ``(nW, N, N)`` for the windows of a padded map rolled by ``-shift``; None when
    nothing is masked. Shift regions (three per shifted axis) are kept apart, padded keys hidden."""
    has_pad = mask_padding and any(p > v for p, v in zip(padded, valid))
    if not any(shift) and not has_pad:
        return None
    region = torch.zeros(padded, dtype=torch.long, device=device)
    pad = torch.zeros(padded, dtype=torch.bool, device=device)
    for axis, (size, w, s, v) in enumerate(zip(padded, window, shift, valid)):
        view = [1] * len(padded)
        view[axis] = size
        region = region * 3 + _region_ids(size, w, s, device).view(view)
        pad = pad | _is_padding(size, s, v, device).view(view)
    region = window_partition(region[None, ..., None], window).squeeze(-1)  # (nW, N)
    mask = torch.zeros(*region.shape, region.shape[1], device=device)
    mask.masked_fill_(region[:, :, None] != region[:, None, :], SHIFT_MASK_VALUE)
    if has_pad:
        pad = window_partition(pad[None, ..., None], window).squeeze(-1)
        mask.masked_fill_(pad[:, None, :], PAD_MASK_VALUE)
    return mask

"""Patch embedding (image -> tokens) and SwinV2 patch merging (2x2 tokens -> 1, channels doubled).

Both work on channels-last maps ``(B, H, W, C)`` and pad odd or non-multiple sizes with zeros, so any
image size is accepted.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .linear import linear
from .symbolic_windows import is_symbolic


class PatchEmbed(nn.Module):
    """Non-overlapping ``patch x patch`` convolution then LayerNorm: ``(B, C_in, H, W)`` -> ``(B, H/p, W/p, C)``."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.patch_size
        pad_h, pad_w = (-x.shape[-2]) % p, (-x.shape[-1]) % p
        if _pads(pad_h, pad_w):
            x = F.pad(x, (0, pad_w, 0, pad_h))
        return self.norm(self.proj(x).permute(0, 2, 3, 1))  # (B, H/p, W/p, C)


class PatchMerging(nn.Module):
    """SwinV2 merging: concatenate each 2x2 neighbourhood, ``Linear(4C, 2C)``, then LayerNorm (V2 order).

    ``norm_first`` normalises the concatenation before the linear layer instead (Swin V1's order).
    """

    def __init__(self, dim: int, out_dim: int | None = None, norm_first: bool = False):
        super().__init__()
        self.out_dim = out_dim or 2 * dim
        self.norm_first = norm_first
        self.reduction = nn.Linear(4 * dim, self.out_dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim if norm_first else self.out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, h, w, _ = x.shape
        pad_h, pad_w = (-h) % 2, (-w) % 2  # this form: a tracer proves the padded size even
        if _pads(pad_h, pad_w):
            x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        # The order (0,0), (1,0), (0,1), (1,1) of (row, col) offsets is what every released checkpoint uses.
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        if self.norm_first:
            return self._reduce(self.norm(x))
        return self.norm(self._reduce(x))  # (B, H/2, W/2, 2C)

    def _reduce(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():
            return self.reduction(x)
        return linear(x, self.reduction)


def _pads(a: int, b: int) -> bool:
    """Whether to pad by these amounts: where either is not zero, and always on symbolic sizes (a graph
    traced for every size pads by the amounts it computes; testing them would fix them)."""
    if torch.jit.is_scripting():
        return a != 0 or b != 0
    else:
        return is_symbolic((a, b)) or a != 0 or b != 0

"""Relative position bias for window attention.

* :class:`ContinuousPositionBias` - SwinV2's continuous position bias (CPB): a small meta network maps
  each relative offset ``(dy, dx)`` to one bias per head, so any window size gets a bias. With log-spaced
  coordinates (Log-CPB, the paper's default) the offsets are first normalised by the pretrained window,
  scaled to [-8, 8] and squashed with ``sign(x) * log2(1 + |x|) / log2(8)``, which keeps the
  extrapolation to larger windows small. ``log_spaced=False`` gives the paper's linear-spaced CPB baseline.
* :class:`RelativePositionTable` - Swin V1's parameterised table, one learned entry per offset, resized by
  bicubic interpolation when the window changes (the paper's transfer baseline).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

Window = tuple[int, ...]  # (h, w) for images, (t, h, w) for video


def window_tokens(window: list[int]) -> int:
    """Tokens in a window, the product of its sides (``math.prod``, which TorchScript lacks)."""
    n = 1
    for side in window:
        n *= side
    return n


def relative_position_index(window: list[int], device: torch.device | None = None) -> torch.Tensor:
    """Index ``(N, N)`` into a table of ``prod(2w - 1)`` offsets, for the N tokens of a window (2-D or 3-D)."""
    axes = [torch.arange(w, device=device) for w in window]
    coords = torch.stack(torch.meshgrid(axes, indexing="ij")).flatten(1)  # (D, N)
    rel = coords[:, :, None] - coords[:, None, :]  # (D, N, N), offsets in [-(w - 1), w - 1]
    index = torch.zeros_like(rel[0])
    for axis, w in enumerate(window):  # mixed radix, first axis most significant
        index = index * (2 * w - 1) + rel[axis] + w - 1
    return index


def relative_coords_table(
    window: list[int], pretrained_window: list[int], log_spaced: bool = True, device: torch.device | None = None
) -> torch.Tensor:
    """Normalised offsets ``(prod(2w - 1), D)`` fed to the CPB meta network (D = 2 axes, or 3 for video).

    Offsets are divided by ``pretrained_window - 1`` so that a model fine-tuned at a larger window sees
    the same coordinates for the same offsets it was trained on; a window of 1 has no offsets to scale
    (the official code divides by zero there), so the divisor is kept at least 1.
    """
    axes = [torch.arange(-(w - 1), w, dtype=torch.float32, device=device) for w in window]
    table = torch.stack(torch.meshgrid(axes, indexing="ij"), dim=-1)  # (2wh - 1, 2ww - 1, D)
    divisor = torch.tensor([max(p - 1, 1) for p in pretrained_window], dtype=torch.float32, device=device)
    table = table / divisor
    if log_spaced:
        table = table * 8
        table = torch.sign(table) * torch.log2(table.abs() + 1.0) / 3.0  # log2(8): [-8, 8] -> [-1, 1]
    return table.flatten(0, -2)


class ContinuousPositionBias(nn.Module):
    """Bias ``(heads, N, N)`` for a window, from a 2-layer meta network over relative coordinates."""

    def __init__(self, num_heads: int, pretrained_window: Window, log_spaced: bool = True, hidden: int = 512):
        super().__init__()
        self.num_heads = num_heads
        self.pretrained_window = tuple(pretrained_window)
        self.log_spaced = log_spaced
        self.mlp = nn.Sequential(
            nn.Linear(len(self.pretrained_window), hidden, bias=True),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, num_heads, bias=False),
        )
        self._geometry: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def _coords_and_index(self, window: Window, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        key = (window, device)
        if key not in self._geometry:
            with torch.inference_mode(False):  # cached: must stay usable by a later training pass
                coords = relative_coords_table(window, self.pretrained_window, self.log_spaced, device=device)
                self._geometry[key] = (coords, relative_position_index(window, device=device).flatten())
        return self._geometry[key]

    def forward(self, window: list[int]) -> torch.Tensor:
        weight = self.mlp[0].weight
        if torch.jit.is_scripting():  # TorchScript keeps no Python-side cache: the geometry is built per call
            coords = relative_coords_table(window, list(self.pretrained_window), self.log_spaced, weight.device)
            index = relative_position_index(window, weight.device).flatten()
        else:
            coords, index = self._coords_and_index(tuple(window), weight.device)
        table = 16 * torch.sigmoid(self.mlp(coords.to(weight.dtype)))  # (offsets, heads)
        n = window_tokens(window)
        # contiguous: a heads-last bias slows every broadcast add over the logits (CPU, bf16; docs/results.md)
        return table[index].view(n, n, self.num_heads).permute(2, 0, 1).contiguous()  # (heads, N, N)

    def extra_repr(self) -> str:
        return f"heads={self.num_heads}, pretrained_window={self.pretrained_window}, log_spaced={self.log_spaced}"


def resize_position_table(table: torch.Tensor, old_window: Window, new_window: Window) -> torch.Tensor:
    """Resize a ``(prod(2w - 1), heads)`` table to another window: bicubic in 2-D (Swin V1 transfer),
    trilinear in 3-D."""
    if tuple(old_window) == tuple(new_window):
        return table
    heads = table.shape[1]
    old = tuple(2 * w - 1 for w in old_window)
    new = tuple(2 * w - 1 for w in new_window)
    mode = "bicubic" if len(old) == 2 else "trilinear"
    grid = table.T.reshape(1, heads, *old)  # (1, heads, 2wh - 1, 2ww - 1)
    grid = F.interpolate(grid.float(), size=new, mode=mode, align_corners=False).to(table.dtype)
    return grid.reshape(heads, -1).T


def _crop_position_table(table: torch.Tensor, old_window: Window, new_window: Window) -> torch.Tensor:
    """The offsets of a smaller window are a centred sub-grid of a larger window's table: take them."""
    heads = table.shape[1]
    grid = table.view(*(2 * w - 1 for w in old_window), heads)
    crop = tuple(slice(o - n, (2 * o - 1) - (o - n)) for o, n in zip(old_window, new_window))
    return grid[crop].reshape(-1, heads)


class RelativePositionTable(nn.Module):
    """Swin V1 bias: one learned value per (offset, head); other windows crop or bicubic-resize it."""

    def __init__(self, num_heads: int, window: Window):
        super().__init__()
        self.num_heads = num_heads
        self.window = tuple(window)
        self.table = nn.Parameter(torch.empty(math.prod(2 * w - 1 for w in window), num_heads))
        self.reset_parameters()
        self._index: dict[tuple, torch.Tensor] = {}

    def reset_parameters(self) -> None:
        nn.init.trunc_normal_(self.table, std=0.02)

    def resize_(self, window: Window) -> None:
        """Re-parameterise for a new window by bicubic interpolation (what V1 fine-tuning does)."""
        window = tuple(window)
        with torch.no_grad():
            self.table = nn.Parameter(resize_position_table(self.table.data, self.window, window))
        self.window = window

    def forward(self, window: list[int]) -> torch.Tensor:
        if torch.jit.is_scripting():  # TorchScript: the table at its own window (the model's windows)
            if window != list(self.window):
                raise ValueError("a scripted V1 position table runs only at the window it was built for")
            n = window_tokens(window)
            index = relative_position_index(window, self.table.device).flatten()
            return self.table[index].view(n, n, self.num_heads).permute(2, 0, 1).contiguous()
        window = tuple(window)
        table = self.table
        if window != self.window:
            smaller = all(n <= o for n, o in zip(window, self.window))
            table = (_crop_position_table if smaller else resize_position_table)(table, self.window, window)
        key = (window, table.device)
        if key not in self._index:
            with torch.inference_mode(False):  # cached: must stay usable by a later training pass
                self._index[key] = relative_position_index(window, device=table.device).flatten()
        n = window_tokens(window)
        return table[self._index[key]].view(n, n, self.num_heads).permute(2, 0, 1).contiguous()

    def extra_repr(self) -> str:
        return f"heads={self.num_heads}, window={self.window}"

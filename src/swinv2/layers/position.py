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

Window = tuple[int, int]


def relative_position_index(window: Window, device: torch.device | None = None) -> torch.Tensor:
    """Index ``(N, N)`` into a ``(2wh - 1) * (2ww - 1)`` table of offsets, for the N tokens of a window."""
    coords = torch.stack(
        torch.meshgrid(torch.arange(window[0], device=device), torch.arange(window[1], device=device), indexing="ij")
    ).flatten(1)  # (2, N)
    rel = coords[:, :, None] - coords[:, None, :]  # (2, N, N), offsets in [-(w - 1), w - 1]
    return (rel[0] + window[0] - 1) * (2 * window[1] - 1) + (rel[1] + window[1] - 1)


def relative_coords_table(
    window: Window, pretrained_window: Window, log_spaced: bool = True, device: torch.device | None = None
) -> torch.Tensor:
    """Normalised offsets ``((2wh - 1) * (2ww - 1), 2)`` fed to the CPB meta network.

    Offsets are divided by ``pretrained_window - 1`` so that a model fine-tuned at a larger window sees
    the same coordinates for the same offsets it was trained on; a window of 1 has no offsets to scale
    (the official code divides by zero there), so the divisor is kept at least 1.
    """
    axes = [torch.arange(-(w - 1), w, dtype=torch.float32, device=device) for w in window]
    table = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)  # (2wh - 1, 2ww - 1, 2)
    divisor = torch.tensor([max(p - 1, 1) for p in pretrained_window], dtype=torch.float32, device=device)
    table = table / divisor
    if log_spaced:
        table = table * 8
        table = torch.sign(table) * torch.log2(table.abs() + 1.0) / math.log2(8)
    return table.flatten(0, 1)


class ContinuousPositionBias(nn.Module):
    """Bias ``(heads, N, N)`` for a window, from a 2-layer meta network over relative coordinates."""

    def __init__(self, num_heads: int, pretrained_window: Window, log_spaced: bool = True, hidden: int = 512):
        super().__init__()
        self.num_heads = num_heads
        self.pretrained_window = tuple(pretrained_window)
        self.log_spaced = log_spaced
        self.mlp = nn.Sequential(
            nn.Linear(2, hidden, bias=True), nn.ReLU(inplace=True), nn.Linear(hidden, num_heads, bias=False)
        )
        self._geometry: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def _coords_and_index(self, window: Window, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        key = (window, device)
        if key not in self._geometry:
            with torch.inference_mode(False):  # cached: must stay usable by a later training pass
                coords = relative_coords_table(window, self.pretrained_window, self.log_spaced, device=device)
                self._geometry[key] = (coords, relative_position_index(window, device=device).flatten())
        return self._geometry[key]

    def forward(self, window: Window) -> torch.Tensor:
        weight = self.mlp[0].weight
        coords, index = self._coords_and_index(tuple(window), weight.device)
        table = 16 * torch.sigmoid(self.mlp(coords.to(weight.dtype)))  # (offsets, heads)
        n = window[0] * window[1]
        return table[index].view(n, n, self.num_heads).permute(2, 0, 1)  # (heads, N, N)

    def extra_repr(self) -> str:
        return f"heads={self.num_heads}, pretrained_window={self.pretrained_window}, log_spaced={self.log_spaced}"


def resize_position_table(table: torch.Tensor, old_window: Window, new_window: Window) -> torch.Tensor:
    """Bicubic resize of a ``((2wh - 1) * (2ww - 1), heads)`` table to another window (Swin V1 transfer)."""
    if tuple(old_window) == tuple(new_window):
        return table
    heads = table.shape[1]
    old = (2 * old_window[0] - 1, 2 * old_window[1] - 1)
    new = (2 * new_window[0] - 1, 2 * new_window[1] - 1)
    grid = table.T.reshape(1, heads, *old)  # (1, heads, 2wh - 1, 2ww - 1)
    grid = F.interpolate(grid.float(), size=new, mode="bicubic", align_corners=False).to(table.dtype)
    return grid.reshape(heads, -1).T


def _crop_position_table(table: torch.Tensor, old_window: Window, new_window: Window) -> torch.Tensor:
    """The offsets of a smaller window are a centred sub-grid of a larger window's table: take them."""
    heads = table.shape[1]
    grid = table.view(2 * old_window[0] - 1, 2 * old_window[1] - 1, heads)
    dh, dw = old_window[0] - new_window[0], old_window[1] - new_window[1]
    return grid[dh : grid.shape[0] - dh, dw : grid.shape[1] - dw].reshape(-1, heads)


class RelativePositionTable(nn.Module):
    """Swin V1 bias: one learned value per (offset, head); other windows crop or bicubic-resize it."""

    def __init__(self, num_heads: int, window: Window):
        super().__init__()
        self.num_heads = num_heads
        self.window = tuple(window)
        self.table = nn.Parameter(torch.empty((2 * window[0] - 1) * (2 * window[1] - 1), num_heads))
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

    def forward(self, window: Window) -> torch.Tensor:
        window = tuple(window)
        table = self.table
        if window != self.window:
            smaller = window[0] <= self.window[0] and window[1] <= self.window[1]
            table = (_crop_position_table if smaller else resize_position_table)(table, self.window, window)
        key = (window, table.device)
        if key not in self._index:
            with torch.inference_mode(False):  # cached: must stay usable by a later training pass
                self._index[key] = relative_position_index(window, device=table.device).flatten()
        n = window[0] * window[1]
        return table[self._index[key]].view(n, n, self.num_heads).permute(2, 0, 1)

    def extra_repr(self) -> str:
        return f"heads={self.num_heads}, window={self.window}"

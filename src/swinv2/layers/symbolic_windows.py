"""Shifted-window geometry as graph computations on the input size: one traced graph for every size.

Under ``torch.export`` with a dynamic height and width the sizes are symbols. The eager geometry
branches on them (clip the window to a small map, shift only where the map is larger than the window,
pad and mask only where needed): each branch becomes a guard, and an exported graph is valid at one size
only. Here nothing branches on a size:

* the window never shrinks. A map smaller than the window is padded up to it and the padded keys are
  masked, which gives the clipped window's outputs: the position bias of a token pair depends only on
  its offset (CPB normalises offsets by the pretrained window; V1 tables are cropped for smaller windows);
* the shift of an axis is ``shift * (size > window)``, a tensor, and the cyclic roll a gather at
  ``(i + shift) mod n``;
* the padding (possibly of zero) is always applied and the additive mask always built.

Channels-last maps ``(B, *S, C)`` with any number of axes: images have two, video three.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .window import PAD_MASK_VALUE, SHIFT_MASK_VALUE


def is_symbolic(sizes) -> bool:
    """Whether any of ``sizes`` is a symbol of an export trace (``export --dynamic``).

    ``torch.compile`` keeps the eager geometry: its tracer's shape simplifier stalls on the nested size
    expressions of this form, so a compiled model recompiles per window geometry instead."""
    return any(isinstance(s, torch.SymInt) for s in sizes) and not torch.compiler.is_dynamo_compiling()


def pad_always(x: torch.Tensor, window: list[int]) -> tuple[torch.Tensor, list]:
    """Zero-pad ``(B, *S, C)`` at the end of each axis to a multiple of its window (at least one window),
    whatever the amounts come to; return the padded map and its sizes."""
    sizes = list(x.shape[1:-1])
    pads = [(-s) % w for s, w in zip(sizes, window)]  # one Mod term: the tracer proves it is >= 0
    spec = [0, 0]  # channels
    for p in reversed(pads):
        spec += [0, p]
    return F.pad(x, spec), [s + p for s, p in zip(sizes, pads)]


def effective_shifts(sizes: list, window: list[int], shift: list[int], device: torch.device) -> list[torch.Tensor]:
    """Per axis, ``shift`` where the map is larger than the window and 0 where one window covers it
    (what :func:`~swinv2.layers.window.effective_window` decides in Python), as 1-element tensors."""
    return [(as_tensor(size, device) > w).long() * s for size, w, s in zip(sizes, window, shift)]


def roll(x: torch.Tensor, shifts: list[torch.Tensor], back: bool = False) -> torch.Tensor:
    """``torch.roll`` of the map's axes by ``-shifts`` (or ``+shifts`` with ``back``), as gathers."""
    for axis, s in enumerate(shifts, start=1):
        n = as_tensor(x.shape[axis], x.device)
        offset = n - s if back else s
        x = x.index_select(axis, (torch.arange(x.shape[axis], device=x.device) + offset) % n)
    return x


def as_tensor(size, device: torch.device) -> torch.Tensor:
    """A (possibly symbolic) size as a 1-element tensor: index arithmetic then stays tensor arithmetic,
    which every exporter writes (a remainder by a symbolic Python number is not)."""
    return torch.zeros(1, dtype=torch.long, device=device) + size


def attention_mask(
    padded: list,
    valid: list,
    window: list[int],
    shifts: list[torch.Tensor] | None,
    clip: bool,
    mask_padding: bool,
    device: torch.device,
) -> torch.Tensor:
    """Additive mask ``(nW, N, N)`` of the padded map rolled by ``-shifts`` (None: not shifted).

    Tokens of different shift regions get the shift value. Keys that are padding get the padding value
    where ``mask_padding`` says so, and always where they stand in for a clipped window (``clip`` and
    the map smaller than the window), so that the result is the clipped window's.
    """
    region = torch.zeros(padded, dtype=torch.long, device=device)
    hidden = torch.zeros(padded, dtype=torch.bool, device=device)
    for axis, (n, v, w) in enumerate(zip(padded, valid, window)):
        view = [1] * len(padded)
        view[axis] = n
        pos = torch.arange(n, device=device)
        size = as_tensor(n, device)
        s = shifts[axis] if shifts is not None else torch.zeros(1, dtype=torch.long, device=device)
        if shifts is not None:
            # after the roll the last window holds two regions, [n - w, n - s) and [n - s, n); with s = 0
            # the whole last window is one region, so nothing is masked
            ids = (pos >= size - w).long() + (pos >= size - s).long()
            region = region * 3 + ids.view(view)
        original = (pos + s) % size
        pad = original >= as_tensor(v, device)
        if not mask_padding:  # only the padding that replaces clipping, which lies inside the first window
            pad = pad & (original < w) if clip else torch.zeros_like(pad)
        hidden = hidden | pad.view(view)
    region = partition(region[None, ..., None], window).squeeze(-1)  # (nW, N)
    hidden = partition(hidden[None, ..., None], window).squeeze(-1)
    zero = torch.zeros((), device=device)
    mask = torch.where(region[:, :, None] != region[:, None, :], zero + SHIFT_MASK_VALUE, zero)
    return torch.where(hidden[:, None, :], zero + PAD_MASK_VALUE, mask)


def partition(x: torch.Tensor, window: list[int]) -> torch.Tensor:
    """``(B, *S, C)`` -> ``(B * nW, N, C)``. Each axis is split on its own (``unflatten``), the only form in
    which the tracer proves that the split sizes multiply back to the padded one."""
    b, c, d = x.shape[0], x.shape[-1], len(window)
    total, tokens = b, 1
    for axis, w in enumerate(window):
        n = x.shape[1 + 2 * axis] // w
        x = x.unflatten(1 + 2 * axis, (n, w))
        total, tokens = total * n, tokens * w
    order = [0, *range(1, 2 * d, 2), *range(2, 2 * d + 1, 2), 2 * d + 1]  # window counts, then offsets
    return x.permute(order).reshape(total, tokens, c)


def reverse(windows: torch.Tensor, window: list[int], sizes: list, batch) -> torch.Tensor:
    """Inverse of :func:`partition`: ``(B * nW, N, C)`` -> ``(B, *sizes, C)``."""
    c, d = windows.shape[-1], len(window)
    counts = [s // w for s, w in zip(sizes, window)]
    x = windows.view(batch, *counts, *window, c)
    order = [0]
    for i in range(d):
        order += [1 + i, 1 + d + i]
    x = x.permute(*order, 2 * d + 1)
    for axis in range(d):
        x = x.flatten(1 + axis, 2 + axis)
    return x


def crop(x: torch.Tensor, sizes: list) -> torch.Tensor:
    """The first ``sizes`` positions of each axis of ``(B, *S, C)``."""
    for axis, s in enumerate(sizes, start=1):
        x = x.narrow(axis, 0, s)
    return x

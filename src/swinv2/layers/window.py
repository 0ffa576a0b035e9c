"""Window partitioning, cyclic shift masks and padding for (shifted) window attention.

Pure functions on channels-last feature maps ``(B, H, W, C)``; the attention module wraps them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# The official implementation separates shifted regions with an additive -100, not -inf; matching its
# outputs requires the same value (with cosine attention logits are bounded by ln(100) + 16 anyway).
SHIFT_MASK_VALUE = -100.0
# Padded tokens must lose to every real token: logits are at most 100 + 16 in cosine attention.
PAD_MASK_VALUE = -1.0e4


def effective_window(
    feat_size: list[int], window: list[int], shift: list[int], clip: bool = True
) -> tuple[list[int], list[int]]:
    """Window and shift actually used on a feature map of ``feat_size`` (any number of axes).

    A dimension no larger than the window is covered by one window: with ``clip`` the window shrinks to
    the map (the official behaviour), otherwise the map is padded up to the window (torchvision's).
    Either way the shift in that dimension is 0, since one window has nothing to shift across.
    Lists, so that TorchScript compiles it; callers that key caches on them make tuples.
    """
    # ``f if f < w else w`` rather than ``min``: under export with symbolic sizes the comparison becomes a
    # guard and the window stays a plain int (position tables and masks are built per window size)
    win = [(f if f < w else w) if clip else w for f, w in zip(feat_size, window)]
    sft = [0 if f <= w else s for f, w, s in zip(feat_size, window, shift)]
    return win, sft


def pad_to_window(x: torch.Tensor, window: list[int]) -> tuple[torch.Tensor, int, int]:
    """Zero-pad ``(B, H, W, C)`` at the bottom/right to multiples of ``window``; return it and the pads."""
    _, h, w, _ = x.shape
    pad_h = (window[0] - h % window[0]) % window[0]
    pad_w = (window[1] - w % window[1]) % window[1]
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    return x, pad_h, pad_w


def window_partition(x: torch.Tensor, window: list[int]) -> torch.Tensor:
    """``(B, H, W, C)`` -> ``(B * nW, wh * ww, C)``; H and W must be multiples of the window."""
    b, h, w, c = x.shape
    x = x.view(b, h // window[0], window[0], w // window[1], window[1], c)
    # (B, nH, wh, nW, ww, C) -> (B, nH, nW, wh, ww, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window[0] * window[1], c)


def window_reverse(windows: torch.Tensor, window: list[int], h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: ``(B * nW, wh * ww, C)`` -> ``(B, H, W, C)``."""
    c = windows.shape[-1]
    x = windows.view(-1, h // window[0], w // window[1], window[0], window[1], c)
    # (B, nH, nW, wh, ww, C) -> (B, nH, wh, nW, ww, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, h, w, c)


def _region_ids(size: int, window: int, shift: int, device: torch.device) -> torch.Tensor:
    """Shift-region label per position along one axis of the padded, rolled map."""
    ids = torch.zeros(size, dtype=torch.long, device=device)
    if shift:
        # After rolling by -shift the last ``window`` positions hold two regions that must not mix.
        ids[size - window : size - shift] = 1
        ids[size - shift :] = 2
    return ids


def _is_padding(size: int, shift: int, valid: int, device: torch.device) -> torch.Tensor:
    """Whether each position of the padded map, rolled by -shift, came from the padding."""
    original = (torch.arange(size, device=device) + shift) % size
    return original >= valid


def attention_mask(
    padded_size: list[int],
    window: list[int],
    shift: list[int],
    valid_size: list[int],
    mask_padding: bool = True,
    device: torch.device | None = None,
    shift_value: float = SHIFT_MASK_VALUE,
    pad_value: float = PAD_MASK_VALUE,
) -> torch.Tensor | None:
    """Additive mask ``(nW, N, N)`` for windows of a padded, rolled map; ``None`` when nothing is masked.

    Tokens of different shift regions get ``shift_value``; with ``mask_padding``, keys that are padding
    get ``pad_value`` so that real tokens never attend to them. (The values are arguments because
    TorchScript reads no float globals.)
    """
    has_pad = mask_padding and (padded_size[0] > valid_size[0] or padded_size[1] > valid_size[1])
    if shift[0] == 0 and shift[1] == 0 and not has_pad:
        return None
    if device is None:
        device = torch.device("cpu")
    rows = _region_ids(padded_size[0], window[0], shift[0], device)
    cols = _region_ids(padded_size[1], window[1], shift[1], device)
    region = (rows[:, None] * 3 + cols[None, :])[None, :, :, None]
    region = window_partition(region, window).squeeze(-1)  # (nW, N)
    mask = torch.zeros(region.shape[0], region.shape[1], region.shape[1], device=device)
    mask.masked_fill_(region[:, :, None] != region[:, None, :], shift_value)
    if has_pad:
        pad_rows = _is_padding(padded_size[0], shift[0], valid_size[0], device)
        pad_cols = _is_padding(padded_size[1], shift[1], valid_size[1], device)
        pad = (pad_rows[:, None] | pad_cols[None, :])[None, :, :, None]
        pad = window_partition(pad, window).squeeze(-1)  # (nW, N)
        mask.masked_fill_(pad[:, None, :], pad_value)
    return mask

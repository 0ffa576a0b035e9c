"""Window partition, shift masks and padding masks against straightforward constructions."""

from __future__ import annotations

import torch

from swinv2.layers import attention_mask, effective_window, pad_to_window, window_partition, window_reverse
from swinv2.layers.window import PAD_MASK_VALUE, SHIFT_MASK_VALUE


def test_partition_round_trip_and_layout():
    x = torch.randn(2, 12, 8, 5)
    windows = window_partition(x, (4, 4))
    assert windows.shape == (2 * 3 * 2, 16, 5)
    assert torch.equal(windows[1].view(4, 4, 5), x[0, 0:4, 4:8])  # window (0, 1) of image 0
    assert torch.equal(window_reverse(windows, (4, 4), 12, 8), x)


def _reference_shift_mask(h: int, w: int, win: int, shift: int) -> torch.Tensor:
    """The official construction: label 9 slice regions of the map, compare labels within each window."""
    img = torch.zeros(1, h, w, 1)
    cnt = 0
    for hs in (slice(0, -win), slice(-win, -shift), slice(-shift, None)):
        for ws in (slice(0, -win), slice(-win, -shift), slice(-shift, None)):
            img[:, hs, ws, :] = cnt
            cnt += 1
    ids = window_partition(img, (win, win)).squeeze(-1)
    mask = ids[:, None, :] - ids[:, :, None]
    return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)


def test_shift_mask_matches_official_construction():
    for h, w, win in [(16, 16, 4), (8, 24, 8), (12, 12, 6)]:
        ours = attention_mask((h, w), (win, win), (win // 2, win // 2), (h, w))
        assert torch.equal(ours, _reference_shift_mask(h, w, win, win // 2))
    assert SHIFT_MASK_VALUE == -100.0


def test_no_mask_without_shift_or_padding():
    assert attention_mask((16, 16), (8, 8), (0, 0), (16, 16)) is None
    assert attention_mask((16, 16), (8, 8), (0, 0), (13, 16), mask_padding=False) is None


def test_padding_mask_hides_exactly_the_padded_keys():
    mask = attention_mask((8, 8), (4, 4), (0, 0), (6, 7))
    valid = torch.zeros(8, 8, dtype=torch.bool)
    valid[:6, :7] = True
    valid_windows = window_partition(valid[None, :, :, None], (4, 4)).squeeze(-1)  # (nW, N)
    expected = torch.where(valid_windows[:, None, :], 0.0, PAD_MASK_VALUE).expand(-1, 16, -1)
    assert torch.equal(mask, expected)


def test_padding_follows_the_roll():
    """With a shift, the padded positions move with the cyclic roll; the mask must follow them."""
    h, valid_h, win, shift = 8, 6, 4, 2
    mask = attention_mask((h, h), (win, win), (shift, shift), (valid_h, valid_h))
    rolled_valid = torch.roll(torch.arange(h) < valid_h, -shift)
    valid = rolled_valid[:, None] & rolled_valid[None, :]
    keys_valid = window_partition(valid[None, :, :, None], (win, win)).squeeze(-1)
    assert ((mask <= PAD_MASK_VALUE) == ~keys_valid[:, None, :]).all()


def test_effective_window_clips_and_unshifts_per_dimension():
    assert effective_window((8, 8), (16, 16), (8, 8)) == ([8, 8], [0, 0])
    assert effective_window((8, 32), (16, 16), (8, 8)) == ([8, 16], [0, 8])
    assert effective_window((8, 8), (16, 16), (8, 8), clip=False) == ([16, 16], [0, 0])
    assert effective_window((32, 32), (8, 8), (4, 4)) == ([8, 8], [4, 4])


def test_pad_to_window():
    x, ph, pw = pad_to_window(torch.ones(1, 5, 9, 2), (4, 4))
    assert x.shape == (1, 8, 12, 2) and (ph, pw) == (3, 3) and x[:, 5:].abs().sum() == 0

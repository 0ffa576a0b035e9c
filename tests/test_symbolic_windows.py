"""The window geometry traced for every input size (``swinv2.layers.symbolic_windows``) against the eager one.

The traced form never clips a window (it pads and masks instead), shifts by a tensor and always pads and
masks. Run on concrete sizes it must give the eager block's outputs wherever the eager block clips, pads,
shifts or does none of these. (The exported file itself is checked at many sizes in test_deploy.py.)
"""

from __future__ import annotations

import pytest
import torch

import swinv2
from helpers import randomize
from swinv2.video import create_video_model

# (h, w) token maps against a window of 4: clipped in one or both axes, padded, exact, larger
MAPS = [(3, 7), (2, 2), (4, 4), (5, 9), (8, 12), (13, 6), (1, 17)]


def _blocks(model):
    return [block for stage in model.stages for block in stage.blocks]


def _compare(block, x: torch.Tensor) -> float:
    with torch.no_grad():
        eager = block._window_attention(x)
        traced = block._symbolic_window_attention(x)
    diff = (eager - traced).abs()
    print(
        f"{block.__class__.__name__} shifted={block.shifted} map {list(x.shape[1:-1])}: "
        f"max |diff| {diff.max():.2e}, mean {diff.mean():.2e}"
    )
    return float(diff.max())


@pytest.mark.parametrize(
    "overrides",
    [{}, {"mask_padding": False}, {"clip_windows": False}, {"clip_windows": False, "mask_padding": False}],
    ids=["default", "unmasked-padding", "unclipped", "torchvision"],
)
def test_traced_geometry_gives_the_eager_blocks_outputs_at_every_map_size(overrides):
    model = randomize(swinv2.create_model("swinv2_micro_window4_32", **overrides)).eval()
    block_plain, block_shifted = _blocks(model)[:2]
    gen = torch.Generator().manual_seed(0)
    for h, w in MAPS:
        x = torch.randn(2, h, w, block_plain.attn.qkv.in_features, generator=gen)
        for block in (block_plain, block_shifted):
            assert _compare(block, x) < 1e-5


def test_traced_geometry_of_video_blocks_matches_eager_in_three_axes():
    model = randomize(create_video_model("swinv2_video_pico_window4x8_64")).eval()
    blocks = _blocks(model)[:2]
    dim = blocks[0].attn.qkv.in_features
    gen = torch.Generator().manual_seed(1)
    for sizes in [(2, 5, 9), (4, 8, 8), (3, 16, 6), (6, 3, 20)]:
        x = torch.randn(1, *sizes, dim, generator=gen)
        for block in blocks:
            assert _compare(block, x) < 1e-5

"""torchvision's ``swin3d_t/s/b`` (Video Swin, V1) layout -> this project's video model.

torchvision flattens the stages into ``features``: ``features.{2i}`` holds the blocks of stage i and
``features.{2i+1}`` the merging that starts stage i + 1. Build the model with the V1 switches
(:data:`TORCHVISION_V1`) to reproduce its outputs.
"""

from __future__ import annotations

import re

from ..weights.convert.common import StateDict, drop_buffers, rename, split_qkv_bias, unwrap
from ..weights.convert.torchvision import MLP_AND_HEAD

# The switches that make a VideoSwinV2 the network torchvision's swin3d_* builds.
TORCHVISION_V1 = {
    "norm": "pre",
    "attention": "dot",
    "position_bias": "table",
    "merge": "v1",
    "mask_padding": False,
}


def _move(key: str) -> str:
    m = re.match(r"features\.(\d+)\.(.*)", key)
    if not m:
        return key
    index, rest = int(m.group(1)), m.group(2)
    if index % 2 == 0:
        return f"stages.{index // 2}.blocks.{rest}"
    return f"stages.{(index + 1) // 2}.downsample.{rest}"


def from_torchvision_video(sd: StateDict) -> StateDict:
    """A torchvision ``SwinTransformer3d`` state dict in this project's video layout."""
    out = split_qkv_bias({_move(k): v for k, v in drop_buffers(unwrap(sd)).items()})
    return rename(out, [(r"\.attn\.relative_position_bias_table$", ".attn.rel_pos.table"), *MLP_AND_HEAD])

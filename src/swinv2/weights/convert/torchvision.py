"""torchvision's ``swin_v2_t/s/b`` layout -> this project's.

torchvision flattens the network into ``features``: ``features.0`` is the patch embedding,
``features.{2i+1}`` the blocks of stage i and ``features.{2i+2}`` the merging that starts stage i + 1.
Its qkv bias is one vector whose key third is zeroed at every forward, so only q and v thirds are kept.
torchvision never clips windows: build the model with ``clip_windows=False, mask_padding=False`` to
reproduce its outputs where a window is larger than the feature map.
"""

from __future__ import annotations

import re

from .common import StateDict, drop_buffers, rename, split_qkv_bias

# torchvision's MLP (Sequential: Linear, GELU, Dropout, Linear, Dropout) and head names, image and video.
MLP_AND_HEAD = [
    (r"(blocks\.\d+)\.mlp\.0\.", r"\1.mlp.fc1."),
    (r"(blocks\.\d+)\.mlp\.3\.", r"\1.mlp.fc2."),
    (r"^head\.(weight|bias)$", r"head.fc.\1"),
]


def _move(key: str) -> str:
    m = re.match(r"features\.(\d+)\.(.*)", key)
    if not m:
        return key
    index, rest = int(m.group(1)), m.group(2)
    if index == 0:
        return "patch_embed." + {"0": "proj", "2": "norm"}[rest.split(".")[0]] + "." + rest.split(".", 1)[1]
    if index % 2:
        return f"stages.{(index - 1) // 2}.blocks.{rest}"
    return f"stages.{index // 2}.downsample.{rest}"


def from_torchvision(sd: StateDict) -> StateDict:
    out = split_qkv_bias({_move(k): v for k, v in drop_buffers(sd).items()})
    return rename(out, [(r"\.attn\.cpb_mlp\.", ".attn.rel_pos.mlp."), *MLP_AND_HEAD])

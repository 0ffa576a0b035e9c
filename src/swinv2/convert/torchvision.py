"""torchvision's ``swin_v2_t/s/b`` layout -> this project's.

torchvision flattens the network into ``features``: ``features.0`` is the patch embedding,
``features.{2i+1}`` the blocks of stage i and ``features.{2i+2}`` the merging that starts stage i + 1.
Its qkv bias is one vector whose key third is zeroed at every forward, so only q and v thirds are kept.
torchvision never clips windows: build the model with ``clip_windows=False, mask_padding=False`` to
reproduce its outputs where a window is larger than the feature map.
"""

from __future__ import annotations

import re

from .common import StateDict, drop_buffers, rename


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
    out = {}
    for key, value in drop_buffers(sd).items():
        key = _move(key)
        if key.endswith(".attn.qkv.bias"):
            dim = value.shape[0] // 3
            base = key.removesuffix("qkv.bias")
            out[base + "q_bias"], out[base + "v_bias"] = value[:dim], value[2 * dim :]
            continue
        out[key] = value
    rules = [
        (r"\.attn\.cpb_mlp\.", ".attn.rel_pos.mlp."),
        (r"(blocks\.\d+)\.mlp\.0\.", r"\1.mlp.fc1."),
        (r"(blocks\.\d+)\.mlp\.3\.", r"\1.mlp.fc2."),
        (r"^head\.(weight|bias)$", r"head.fc.\1"),
    ]
    return rename(out, rules)

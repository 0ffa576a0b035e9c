"""Helpers shared by the per-layout converters: unwrapping, prefix handling, rebuildable buffers."""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

StateDict = dict[str, torch.Tensor]

# Buffers that every layout can rebuild from the config; files that carry them must not override ours.
REBUILT_BUFFERS = ("relative_position_index", "relative_coords_table", "attn_mask", "k_bias")
WRAPPER_KEYS = ("model", "state_dict", "model_state", "module", "model_ema")


def unwrap(checkpoint: Mapping) -> StateDict:
    """The tensor mapping inside a training checkpoint (``{"model": ...}`` and the like)."""
    obj = checkpoint
    for _ in range(3):
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            raise ValueError(
                "no state dict found: expected a mapping of names to tensors, or one under "
                f"{WRAPPER_KEYS}; top-level keys were {list(obj)[:8]}"
            )
        obj = inner
    return {k.removeprefix("module."): v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def drop_buffers(sd: StateDict) -> StateDict:
    return {k: v for k, v in sd.items() if k.rsplit(".", 1)[-1] not in REBUILT_BUFFERS}


def strip_prefix(sd: StateDict, prefix: str) -> StateDict:
    """Remove ``prefix`` from the keys that have it; keep the others unchanged."""
    return {k.removeprefix(prefix): v for k, v in sd.items()}


def rename(sd: StateDict, rules: list[tuple[str, str]]) -> StateDict:
    """Apply regex substitutions, in order, to every key."""
    out = {}
    for key, value in sd.items():
        for pattern, repl in rules:
            key = re.sub(pattern, repl, key)
        out[key] = value
    return out


def shift_downsample(sd: StateDict, offset: int) -> StateDict:
    """Move ``stages.i.downsample`` to ``stages.{i + offset}`` (end-of-stage vs start-of-next layouts)."""

    def move(key: str) -> str:
        m = re.match(r"stages\.(\d+)\.downsample\.(.*)", key)
        return f"stages.{int(m.group(1)) + offset}.downsample.{m.group(2)}" if m else key

    return {move(k): v for k, v in sd.items()}


# Block internals shared by the official and timm layouts -> this project's names.
BLOCK_RULES = [
    (r"\.attn\.(cpb_mlp|rpe_mlp)\.", ".attn.rel_pos.mlp."),
    (r"\.attn\.relative_position_bias_table$", ".attn.rel_pos.table"),
]


def split_qkv_bias(sd: StateDict) -> StateDict:
    """One fused ``attn.qkv.bias`` -> ``attn.q_bias`` and ``attn.v_bias`` (a key bias cancels in the softmax)."""
    out = {}
    for key, value in sd.items():
        if key.endswith(".attn.qkv.bias"):
            dim = value.shape[0] // 3
            base = key.removesuffix("qkv.bias")
            out[base + "q_bias"], out[base + "v_bias"] = value[:dim], value[2 * dim :]
        else:
            out[key] = value
    return out

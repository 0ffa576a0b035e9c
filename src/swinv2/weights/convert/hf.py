"""Hugging Face transformers' ``Swinv2Model`` / ``Swinv2ForImageClassification`` /
``Swinv2ForMaskedImageModeling`` layout -> this project's.

Hugging Face splits the fused qkv projection into ``query``/``key``/``value`` (the key has no bias), keeps
patch merging at the end of each stage like the official code, and names both post-norms
``layernorm_before``/``layernorm_after`` although both sit after their branch.
"""

from __future__ import annotations

import re

import torch

from .common import StateDict, drop_buffers, rename, shift_downsample, strip_prefix

_RULES = [
    (r"^embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
    (r"^embeddings\.norm\.", "patch_embed.norm."),
    (r"^embeddings\.mask_token$", "mask_token"),
    (r"^encoder\.layers\.", "stages."),
    (r"\.attention\.self\.continuous_position_bias_mlp\.", ".attn.rel_pos.mlp."),
    (r"\.attention\.self\.logit_scale$", ".attn.logit_scale"),
    (r"\.attention\.self\.query\.bias$", ".attn.q_bias"),
    (r"\.attention\.self\.value\.bias$", ".attn.v_bias"),
    (r"\.attention\.output\.dense\.", ".attn.proj."),
    (r"\.layernorm_before\.", ".norm1."),
    (r"\.layernorm_after\.", ".norm2."),
    (r"\.intermediate\.dense\.", ".mlp.fc1."),
    (r"\.output\.dense\.", ".mlp.fc2."),
    (r"^layernorm\.", "norm."),
    (r"^classifier\.", "head.fc."),
]


def from_hf(sd: StateDict) -> StateDict:
    sd = drop_buffers(strip_prefix(sd, "swinv2."))
    sd = _fuse_qkv(sd)
    return shift_downsample(rename(sd, _RULES), +1)


def _fuse_qkv(sd: StateDict) -> StateDict:
    """``query/key/value.weight`` -> one ``qkv.weight`` (rows q, k, v), as the other layouts store it."""
    out = dict(sd)
    for key in [k for k in sd if k.endswith(".attention.self.query.weight")]:
        base = key.removesuffix("query.weight")
        parts = [out.pop(f"{base}{name}.weight") for name in ("query", "key", "value")]
        block = re.sub(r"\.attention\.self\.$", "", base)
        out[f"{block}.attn.qkv.weight"] = torch.cat(parts, dim=0)
        out.pop(f"{base}key.bias", None)  # a key bias cancels in the softmax; HF has none anyway
    return out

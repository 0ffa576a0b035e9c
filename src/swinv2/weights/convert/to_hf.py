"""This project's layout -> Hugging Face transformers' (``Swinv2ForImageClassification``, or ``Swinv2Model``
without a head): the inverse of :func:`swinv2.weights.convert.hf.from_hf`, for publishing a model to transformers
users."""

from __future__ import annotations

import re

from .common import StateDict, rename, shift_downsample

_RULES = [
    (r"^patch_embed\.proj\.", "embeddings.patch_embeddings.projection."),
    (r"^patch_embed\.norm\.", "embeddings.norm."),
    (r"\.attn\.rel_pos\.mlp\.", ".attention.self.continuous_position_bias_mlp."),
    (r"\.attn\.logit_scale$", ".attention.self.logit_scale"),
    (r"\.attn\.q_bias$", ".attention.self.query.bias"),
    (r"\.attn\.v_bias$", ".attention.self.value.bias"),
    (r"\.attn\.proj\.", ".attention.output.dense."),
    (r"\.norm1\.", ".layernorm_before."),
    (r"\.norm2\.", ".layernorm_after."),
    (r"\.mlp\.fc1\.", ".intermediate.dense."),
    (r"\.mlp\.fc2\.", ".output.dense."),
    (r"^stages\.", "encoder.layers."),
    (r"^norm\.", "layernorm."),
]


def to_hf(sd: StateDict, head: bool = True) -> StateDict:
    """Keys of ``Swinv2ForImageClassification`` (``head=True``: ``swinv2.`` prefix and ``classifier.*``)
    or of a bare ``Swinv2Model``."""
    sd = {k: v for k, v in sd.items() if not k.startswith("head.")} | (
        {k.replace("head.fc.", "classifier."): v for k, v in sd.items() if k.startswith("head.fc.")} if head else {}
    )
    sd = _split_qkv(shift_downsample(sd, -1))  # patch merging back to the end of each stage
    out = {}
    for key, value in rename(sd, _RULES).items():
        out[key if key.startswith("classifier.") or not head else f"swinv2.{key}"] = value
    return out


def _split_qkv(sd: StateDict) -> StateDict:
    """One ``qkv.weight`` (rows q, k, v) -> ``query/key/value.weight``, under the attention's own names."""
    out = dict(sd)
    for key in [k for k in sd if k.endswith(".attn.qkv.weight")]:
        block = re.sub(r"\.attn\.qkv\.weight$", "", key)
        for name, part in zip(("query", "key", "value"), out.pop(key).chunk(3, dim=0)):
            out[f"{block}.attention.self.{name}.weight"] = part.contiguous()
    return out

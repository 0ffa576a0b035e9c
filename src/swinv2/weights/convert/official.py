"""Microsoft's official layout (Swin-Transformer and SimMIM repositories) <-> this project's.

Official files keep patch merging at the END of stage i (``layers.i.downsample``; here it starts stage
i + 1), name the head ``head.*``, and carry buffers that are rebuilt instead of loaded. SimMIM files
prefix the encoder with ``encoder.`` and some name the CPB meta network ``rpe_mlp``.
"""

from __future__ import annotations

from .common import BLOCK_RULES, StateDict, drop_buffers, rename, shift_downsample, strip_prefix


def from_official(sd: StateDict) -> StateDict:
    sd = drop_buffers(sd)
    if any(k.startswith("encoder.") for k in sd):  # SimMIM: encoder + mask token + decoder
        sd = strip_prefix(sd, "encoder.")
    sd = rename(sd, [(r"^layers\.", "stages."), (r"^head\.(weight|bias)$", r"head.fc.\1"), *BLOCK_RULES])
    return shift_downsample(sd, +1)


def to_official(sd: StateDict) -> StateDict:
    """This project's layout -> the official one (for tools that expect Microsoft's files)."""
    sd = shift_downsample(sd, -1)
    rules = [
        (r"^stages\.", "layers."),
        (r"^head\.fc\.", "head."),
        (r"\.attn\.rel_pos\.mlp\.", ".attn.cpb_mlp."),
        (r"\.attn\.rel_pos\.table$", ".attn.relative_position_bias_table"),
    ]
    return rename(sd, rules)

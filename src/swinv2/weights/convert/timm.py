"""timm's ``swin_transformer_v2`` layout -> this project's (the same tree under other names)."""

from __future__ import annotations

from .common import BLOCK_RULES, StateDict, drop_buffers, rename


def from_timm(sd: StateDict) -> StateDict:
    return rename(drop_buffers(sd), [(r"^layers\.", "stages."), *BLOCK_RULES])

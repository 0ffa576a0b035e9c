"""Building blocks of SwinV2: windows, position bias, attention, MLP, patch embedding and merging."""

from .attention import ATTENTION_TYPES, POSITION_BIASES, WindowAttention
from .drop import DropPath
from .mlp import Mlp
from .patch import PatchEmbed, PatchMerging
from .position import ContinuousPositionBias, RelativePositionTable, relative_coords_table, relative_position_index
from .window import attention_mask, effective_window, pad_to_window, window_partition, window_reverse

__all__ = [
    "ATTENTION_TYPES",
    "POSITION_BIASES",
    "ContinuousPositionBias",
    "DropPath",
    "Mlp",
    "PatchEmbed",
    "PatchMerging",
    "RelativePositionTable",
    "WindowAttention",
    "attention_mask",
    "effective_window",
    "pad_to_window",
    "relative_coords_table",
    "relative_position_index",
    "window_partition",
    "window_reverse",
]

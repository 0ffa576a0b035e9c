"""Parameter and FLOP counts of a configuration, computed on the meta device (no memory, no compute)."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from .config import SwinV2Config, to_pair
from .swinv2 import SwinV2


def count_params(cfg: SwinV2Config) -> int:
    with torch.device("meta"):
        model = SwinV2(cfg)
    return sum(p.numel() for p in model.parameters())


def count_gflops(cfg: SwinV2Config, img_size: int | tuple[int, int] | None = None) -> float:
    """Multiply-accumulates (the paper's "FLOPs") of one image's forward pass, in billions.

    Counted over matrix products and convolutions with the explicit attention path, as fvcore-style
    counters do; elementwise work (norms, softmax, GELU) is not included.
    """
    cfg = cfg.replace(fused_attention=False)
    h, w = to_pair(img_size or cfg.img_size)
    with torch.device("meta"):
        model = SwinV2(cfg).eval()
        x = torch.empty(1, cfg.in_chans, h, w)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return counter.get_total_flops() / 2 / 1e9

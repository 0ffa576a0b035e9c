"""Stochastic depth: a residual branch dropped for whole samples during training.

torchvision's ``StochasticDepth(p, "row")`` computes the same (and draws the same random numbers); it is
written here so that building a model imports no torchvision, whose ``ops`` package pulls in
``torch._dynamo`` and adds seconds to every process start.
"""

from __future__ import annotations

import torch
from torch import nn


class DropPath(nn.Module):
    """Zero a residual branch for each sample with probability ``p`` in training, scaling the kept ones
    by ``1 / (1 - p)`` so that the expectation is unchanged; the identity in evaluation."""

    def __init__(self, p: float):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"drop path rate must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        keep = 1 - self.p
        mask = torch.empty((x.shape[0],) + (1,) * (x.dim() - 1), dtype=x.dtype, device=x.device).bernoulli_(keep)
        return x * mask.div_(keep)  # (B, 1, ..., 1): one draw per sample

    def extra_repr(self) -> str:
        return f"p={self.p}"

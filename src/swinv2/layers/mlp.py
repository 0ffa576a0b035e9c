"""The transformer block's feed-forward network."""

from __future__ import annotations

import torch
from torch import nn


class Mlp(nn.Module):
    """``Linear -> GELU -> Dropout -> Linear -> Dropout``, applied on the last dimension."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))

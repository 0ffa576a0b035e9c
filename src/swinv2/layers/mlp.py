"""The transformer block's feed-forward network."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

# ``sequential=True`` sizes token chunks so that one chunk's hidden activations hold at most this many
# elements (16 MiB in fp32): SwinV2-T's stage 1 at 1024 px (65,536 tokens, 384 hidden) runs in 7 chunks.
AUTO_CHUNK_HIDDEN = 1 << 22


class Mlp(nn.Module):
    """``Linear -> GELU -> Dropout -> Linear -> Dropout``, applied on the last dimension.

    With ``sequential`` set (``True`` for automatic chunks, or tokens per chunk) the tokens are processed
    a chunk at a time, each chunk recomputed in the backward pass, so the 4x-wide hidden activations are
    never held for more than one chunk: the largest activations of a high-resolution training step.
    Outputs and gradients equal the unchunked MLP's; only dropout (0 in every SwinV2 recipe) would draw
    its masks in another order.
    """

    def __init__(self, dim: int, hidden: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop2 = nn.Dropout(drop)
        self.sequential: bool | int = False

    def _feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))

    def chunk_tokens(self) -> int | None:
        """Tokens per chunk, or None when the MLP runs on all tokens at once."""
        if self.sequential is True:
            return max(1, AUTO_CHUNK_HIDDEN // self.fc1.out_features)
        return int(self.sequential) or None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        chunk = self.chunk_tokens()
        tokens = x.reshape(-1, x.shape[-1])
        if chunk is None or chunk >= tokens.shape[0]:
            return self._feed_forward(x)
        recompute = torch.is_grad_enabled()
        size = math.ceil(tokens.shape[0] / math.ceil(tokens.shape[0] / chunk))  # balanced chunks
        outs = [
            checkpoint(self._feed_forward, part, use_reentrant=False) if recompute else self._feed_forward(part)
            for part in tokens.split(size)
        ]
        return torch.cat(outs).view(*x.shape[:-1], -1)

"""The transformer block's feed-forward network."""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .linear import linear, linear_gelu, linear_input_grad, linear_weight_grad, linear_weights

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
        self.recompute_gelu = False  # model.set_recompute_gelu(): see GeluLinear

    def _feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.recompute_gelu and torch.is_grad_enabled() and not (self.training and self.drop1.p > 0):
            return self.drop2(GeluLinear.apply(linear(x, self.fc1), self.fc2.weight, self.fc2.bias))
        if not self.training:  # dropouts are identities; GELU fuses into fc1 in CPU inference
            return linear(linear_gelu(x, self.fc1, self.act), self.fc2)
        return self.drop2(linear(self.drop1(self.act(linear(x, self.fc1))), self.fc2))

    def chunk_tokens(self) -> int | None:
        """Tokens per chunk, or None when the MLP runs on all tokens at once."""
        if self.sequential is True:
            return max(1, AUTO_CHUNK_HIDDEN // self.fc1.out_features)
        return int(self.sequential) or None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():  # no fused kernels or chunks in TorchScript: the plain layers
            return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))
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


class GeluLinear(torch.autograd.Function):
    """``linear(gelu(h), weight, bias)`` keeping only ``h`` for the backward pass, where ``gelu(h)`` is
    recomputed (one elementwise op). Autograd would keep both, and both are 4x the block's width: the
    MLP's widest tensors. Outputs and gradients are those of ``fc2(act(h))``, autocast included.

    The backward pass applies GELU's derivative in place on the incoming gradient, so next to ``h`` it
    holds one hidden-width tensor, not two: that, not the saved tensor alone, is what lowers the peak of a
    checkpointed block's backward pass. A memory saver, on with activation checkpointing and available
    alone (``model.set_recompute_gelu()``); it costs a GELU per MLP. ``benchmarks/memory.sh`` measures
    the peaks, docs/results.md has them and the time it costs."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        device = hidden.device.type
        autocast = torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device)  # not on meta
        ctx.cast = torch.get_autocast_dtype(device) if autocast else None
        ctx.save_for_backward(hidden, weight, bias)
        with torch.autocast(device, enabled=False) if autocast else contextlib.nullcontext():
            activated, w, b = _cast(F.gelu(hidden), weight, bias, ctx.cast)
            return linear_weights(activated, w, b)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        hidden, weight, bias = ctx.saved_tensors
        activated, w, _ = _cast(F.gelu(hidden), weight, None, ctx.cast)
        flat_grad = grad_out.reshape(-1, grad_out.shape[-1])
        grad_weight = linear_weight_grad(flat_grad, activated.reshape(-1, activated.shape[-1])).to(weight.dtype)
        grad_bias = None if bias is None else flat_grad.sum(0).to(bias.dtype)
        del activated
        grad_hidden = linear_input_grad(grad_out, w).to(hidden.dtype)
        if torch.is_grad_enabled():  # a double backward records this pass: out of place, differentiable
            return torch.ops.aten.gelu_backward(grad_hidden, hidden), grad_weight, grad_bias
        # GELU's derivative applied in place: no third hidden-width tensor next to hidden and its gradient
        torch.ops.aten.gelu_backward.grad_input(grad_hidden, hidden, grad_input=grad_hidden)
        return grad_hidden, grad_weight, grad_bias


def _cast(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The casts autocast applies to a linear layer's operands (none outside autocast)."""
    if dtype is None:
        return x, weight, bias
    return x.to(dtype), weight.to(dtype), None if bias is None else bias.to(dtype)

"""Window multi-head self-attention: SwinV2's scaled cosine attention or Swin V1's scaled dot product.

Scaled cosine attention (paper eq. 2): ``sim(q, k) = cos(q, k) / tau + B``, with a learned per-head
``logit_scale = ln(1 / tau)`` clamped at ln(100) so that tau >= 0.01. It keeps attention logits bounded,
which is what lets large models train stably together with res-post-norm.

Two numerically equivalent paths compute it: the explicit one (matrices as the paper writes them; the
reference in tests) and a fused one through ``F.scaled_dot_product_attention`` with the logit scale
folded into the normalised queries, ``scale=1.0``, and bias plus mask as one additive float mask.

In inference (eval mode, no autograd) the position bias, already merged with the shift mask, is cached:
the CPB meta network then runs once per window shape instead of on every forward pass. The cache is
keyed on the window, the mask, the dtype and the storage and version counters of the bias parameters,
and dropped on ``train()``, ``.to()`` and window changes, so loading weights and optimiser steps invalidate
it too. Writes through ``p.data`` bypass version counters: call ``clear_cache()`` after those.
"""

from __future__ import annotations

import math
import sys

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.checkpoint import checkpoint

from .linear import linear, linear_weights
from .position import ContinuousPositionBias, RelativePositionTable, Window

MAX_LOGIT_SCALE = math.log(1.0 / 0.01)
NORM_EPS = 1e-12  # F.normalize's
# Above this many elements (4 MiB in fp32) a merged bias is not kept between forward passes, which bounds
# the cache of a block; SwinV2-T's largest (stage 1, shifted) is 786k elements.
MAX_CACHED_BIAS_NUMEL = 1 << 20
# ``sequential=True`` sizes chunks so that one chunk's attention scores hold at most this many elements
# (16 MiB in fp32): a 1024 px image in SwinV2-T / window 8 runs stage 1 in 4 chunks, stage 2 in 2.
AUTO_CHUNK_SCORES = 1 << 22
# SDPA kernels this module lets PyTorch choose from. With an additive bias, flash (which takes none) is out,
# so this means the memory-efficient kernel, or the math path where that cannot run. cuDNN's kernel is left
# out by default: PyTorch >= 2.9 prefers it on Hopper whenever the bias needs no gradient, but it returns NaN
# gradients for sequence lengths N % 128 == 64 (pytorch#196678), which windows of 8 x 8 and 24 x 24 are,
# and it is slower than the memory-efficient kernel for small windows (pytorch#130482).
SDPA_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
# cuDNN enabled too where no gradient is asked for (so the NaN-gradient bug cannot bite), in bf16, with windows
# of at least CUDNN_MIN_TOKENS tokens: PyTorch's own order then picks it on Hopper, and there it beats the
# memory-efficient kernel end to end from about 256 tokens (benchmarks/attention_routes.py; the H100 figures
# are in docs/results.md). The list is not a priority order: where PyTorch would not pick cuDNN, or cannot run
# it (an older GPU), nothing changes.
SDPA_BACKENDS_CUDNN = [SDPBackend.CUDNN_ATTENTION, *SDPA_BACKENDS]
CUDNN_MIN_TOKENS = 256
ATTENTION_TYPES = ("cosine", "dot")
POSITION_BIASES = ("log_cpb", "linear_cpb", "table")


class WindowAttention(nn.Module):
    """Multi-head self-attention within windows of ``N`` tokens, with a relative position bias."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window: Window,
        pretrained_window: Window,
        attention: str = "cosine",
        position_bias: str = "log_cpb",
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        fused: bool = True,
        cpb_hidden: int = 512,
    ):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} must be divisible by num_heads {num_heads}")
        if attention not in ATTENTION_TYPES:
            raise ValueError(f"attention must be one of {ATTENTION_TYPES}, got {attention!r}")
        if position_bias not in POSITION_BIASES:
            raise ValueError(f"position_bias must be one of {POSITION_BIASES}, got {position_bias!r}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.attention = attention
        self.fused = fused
        self.attn_drop = attn_drop
        # q and v carry biases, k none (a key bias cancels in the softmax); stored apart as in the official layout.
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.q_bias = nn.Parameter(torch.empty(dim)) if qkv_bias else None
        self.v_bias = nn.Parameter(torch.empty(dim)) if qkv_bias else None
        if attention == "cosine":
            self.logit_scale = nn.Parameter(torch.empty(num_heads, 1, 1))
        if position_bias == "table":
            self.rel_pos = RelativePositionTable(num_heads, window)
        else:
            log_spaced = position_bias == "log_cpb"
            self.rel_pos = ContinuousPositionBias(num_heads, pretrained_window, log_spaced, cpb_hidden)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.sequential: bool | int = False
        self._bias_cache: dict[tuple, tuple[tuple, torch.Tensor | None, torch.Tensor]] = {}
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """This module's own parameters (its linears and position bias reset themselves): zero q / v
        biases and tau = 0.1 (``logit_scale = ln 10``), as the official code starts."""
        if self.q_bias is not None:
            nn.init.zeros_(self.q_bias)
            nn.init.zeros_(self.v_bias)
        if self.attention == "cosine":
            nn.init.constant_(self.logit_scale, math.log(10.0))

    def train(self, mode: bool = True) -> WindowAttention:
        self.clear_cache()
        return super().train(mode)

    def _apply(self, fn, recurse: bool = True):
        self.clear_cache()  # .to() / .half() replace parameters, possibly at the same address
        return super()._apply(fn, recurse)

    def clear_cache(self) -> None:
        """Drop cached inference biases (they are also re-validated on every use)."""
        self._bias_cache.clear()

    def _parameter_stamp(self) -> tuple | None:
        """Identity and in-place version of every bias parameter; None where it cannot be read."""
        try:
            return tuple((p.data_ptr(), p._version) for p in self.rel_pos.parameters())
        except RuntimeError:  # parameters created under inference_mode have no version counter
            return None

    def attention_bias(self, window: list[int], mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
        """Additive attention bias: ``(heads, N, N)``, or ``(nW, heads, N, N)`` with a mask."""
        if torch.jit.is_scripting():  # TorchScript keeps no cache
            return self._merge_bias(window, mask, dtype)
        cacheable = not (self.training or torch.is_grad_enabled() or torch.compiler.is_compiling())
        stamp = self._parameter_stamp() if cacheable else None
        if stamp is None:
            return self._merge_bias(window, mask, dtype)
        key = (tuple(window), None if mask is None else id(mask), dtype)
        hit = self._bias_cache.get(key)
        if hit is not None and hit[0] == stamp:
            return hit[2]
        bias = self._merge_bias(window, mask, dtype)
        if bias.numel() <= MAX_CACHED_BIAS_NUMEL:
            self._bias_cache[key] = (stamp, mask, bias)  # holding the mask keeps its id unique
        return bias

    def _merge_bias(self, window: list[int], mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
        bias = self.rel_pos(window).to(dtype)  # (heads, N, N)
        if mask is not None:
            # expanded, not broadcast: a traced graph would otherwise assume whether nW is 1
            nw, heads = mask.shape[0], bias.shape[0]
            bias = bias.unsqueeze(0).expand(nw, -1, -1, -1) + mask.unsqueeze(1).to(dtype).expand(-1, heads, -1, -1)
        return bias

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-head queries, keys and values, 3 x ``(B_, heads, N, hd)``; on the fused path q and k come
        pre-scaled (:meth:`_scale_queries_keys`)."""
        bias = None
        if self.q_bias is not None:
            bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))
        b, n, _ = x.shape
        qkv = linear_weights(x, self.qkv.weight, bias).view(b, n, 3, self.num_heads, self.head_dim)
        qkv = qkv.permute(2, 0, 3, 1, 4)  # (3, B_, heads, N, hd), a view
        if not self.fused:
            return qkv[0], qkv[1], qkv[2]
        qk = self._scale_queries_keys(qkv[:2])
        return qk[0], qk[1], qkv[2]

    def _scale_queries_keys(self, qk: torch.Tensor) -> torch.Tensor:
        """Queries and keys ``(2, B_, heads, N, hd)`` whose plain product is the attention logits: for
        cosine attention both normalised and ``1 / tau`` folded into q, in one norm and one multiply,
        none over the N x N logits. The result is contiguous, so the products and SDPA's window folding
        need no copies of q and k."""
        if self.attention == "cosine":
            scale = self.logit_scale_value().to(qk.dtype).view(1, 1, self.num_heads, 1, 1)
            scale = torch.cat((scale, torch.ones_like(scale)))  # q's 1 / tau, k's 1
            factor = _inverse_norm(qk) * scale  # contiguous (2, B_, heads, N, 1)
        else:
            factor = torch.tensor([self.head_dim**-0.5, 1.0], dtype=qk.dtype, device=qk.device).view(2, 1, 1, 1, 1)
            factor = factor.expand(2, qk.shape[1], qk.shape[2], qk.shape[3], 1).contiguous()  # q's 1/sqrt(hd), k's 1
        return factor * qk  # the first operand's layout wins: contiguous, though qk is a strided view

    def forward(self, x: torch.Tensor, window: list[int], mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x``: ``(B * nW, N, C)`` windows; ``mask``: additive ``(nW, N, N)`` or None."""
        if not torch.jit.is_scripting():  # sequential attention is a memory saver of eager training
            chunk = self.chunk_windows(x.shape[1])
            if chunk < x.shape[0]:
                return self.proj_drop(self._sequential(x, window, mask, chunk))
        q, k, v = self._qkv(x)
        bias = self.attention_bias(window, mask, q.dtype)
        if mask is not None:
            nw = mask.shape[0]
            q, k, v = _per_image(q, nw), _per_image(k, nw), _per_image(v, nw)
        out = self._fused(q, k, v, bias) if self.fused else self._explicit(q, k, v, bias)
        return self.proj_drop(self._merge_heads(out, x.shape))

    def _merge_heads(self, out: torch.Tensor, shape: list[int]) -> torch.Tensor:
        """Per-head outputs ``(B_, [nW,] heads, N, hd)`` -> output projection of ``(B_, N, C)``."""
        b_, n, c = shape
        out = out.reshape(b_, self.num_heads, n, self.head_dim).transpose(1, 2).reshape(b_, n, c)
        if torch.jit.is_scripting():
            return self.proj(out)
        return linear(out, self.proj)

    def chunk_windows(self, n: int) -> int:
        """Most windows per chunk of sequential attention (``sys.maxsize`` when it is off)."""
        if self.sequential is True:
            return max(1, AUTO_CHUNK_SCORES // (self.num_heads * n * n))
        return int(self.sequential) or sys.maxsize  # False, None and 0 mean off

    def _sequential(self, x: torch.Tensor, window: Window, mask: torch.Tensor | None, chunk: int) -> torch.Tensor:
        """Attention over chunks of windows, from the qkv projection to the output projection, each chunk
        recomputed in the backward pass: neither pass holds more than one chunk's q, k, v, scores, bias
        or mask rows, only the chunks' inputs and outputs (and the block's one cached shift mask).

        The paper's sequential self-attention: with activation checkpointing it is what lets stage 1
        train at 1536 px, where all windows' scores at once would not fit. Chunks are balanced
        (``B * nW`` windows in ``ceil(B * nW / chunk)`` near-equal parts).
        """
        table = self.attention_bias(window, None, x.dtype)  # (heads, N, N): cached in inference
        total = x.shape[0]
        parts = math.ceil(total / chunk)
        size = math.ceil(total / parts)
        recompute = torch.is_grad_enabled()
        outs = []
        for start in range(0, total, size):
            args = (x[start : start + size], table, mask, start)
            outs.append(checkpoint(self._chunk, *args, use_reentrant=False) if recompute else self._chunk(*args))
        return torch.cat(outs)

    def _chunk(self, x: torch.Tensor, table: torch.Tensor, mask: torch.Tensor | None, start: int) -> torch.Tensor:
        """Attention of the windows ``start .. start + len(x)`` of the flat batch."""
        q, k, v = self._qkv(x)
        bias = table.to(q.dtype)
        if mask is not None:
            bias = bias + _mask_rows(mask, start, x.shape[0]).unsqueeze(1).to(q.dtype)  # (c, heads, N, N)
        out = self._fused(q, k, v, bias) if self.fused else self._explicit(q, k, v, bias)
        return self._merge_heads(out, x.shape)

    def logit_scale_value(self, limit: float = MAX_LOGIT_SCALE) -> torch.Tensor:
        """``1 / tau`` per head, ``(heads, 1, 1)``, with ``ln(1 / tau)`` clamped at ``limit`` (an argument
        because TorchScript reads no float globals)."""
        return torch.clamp(self.logit_scale, max=limit).exp()

    def _explicit(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        if self.attention == "cosine":
            attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
            attn = attn * self.logit_scale_value()
        else:
            attn = (q * self.head_dim**-0.5) @ k.transpose(-2, -1)
        attn = torch.softmax(attn + bias, dim=-1)
        attn = F.dropout(attn, self.attn_drop, self.training)
        return attn @ v

    def _fused(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """Attention of pre-scaled q and k: SDPA, or explicit products where that loses."""
        if not sdpa_pays(q, bias):
            return self._matrices(q, k, v, bias)
        dropout = self.attn_drop if self.training else 0.0
        if torch.jit.is_scripting():  # no kernel selection in TorchScript: PyTorch's own order
            return self._sdpa(q, k, v, bias, dropout)
        with sdpa_kernel(sdpa_backends(q, k, v, bias)):
            return self._sdpa(q, k, v, bias, dropout)

    def _matrices(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """Attention as explicit products of pre-scaled q and k, the bias added in place: where SDPA's
        kernels lose (see :func:`sdpa_pays`), two fewer passes over the N x N logits than :meth:`_explicit`."""
        attn = q @ k.transpose(-2, -1)
        attn += bias
        attn = torch.softmax(attn, dim=-1)
        attn = F.dropout(attn, self.attn_drop, self.training)
        return attn @ v

    @staticmethod
    def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, dropout: float) -> torch.Tensor:
        if q.dim() == 5:
            # SDPA's kernels take 4-D inputs only (5-D falls back to the slower math path on a CPU):
            # fold the windows into the head axis so the (nW, heads, N, N) bias broadcasts over the batch.
            b, nw, h, n, d = q.shape
            q, k, v = q.reshape(b, nw * h, n, d), k.reshape(b, nw * h, n, d), v.reshape(b, nw * h, n, d)
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=bias.reshape(1, nw * h, n, n), dropout_p=dropout, scale=1.0
            )
            return out.view(b, nw, h, n, d)
        # A 3-D mask also sends SDPA to the math path; (1, heads, N, N) keeps the flash kernel.
        mask = bias if bias.dim() == 4 else bias.unsqueeze(0)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, scale=1.0)


def _per_image(t: torch.Tensor, windows: int) -> torch.Tensor:
    """``(B * nW, heads, N, hd)`` -> ``(B, nW, heads, N, hd)``, so that a per-window mask broadcasts."""
    return t.view(t.shape[0] // windows, windows, t.shape[1], t.shape[2], t.shape[3])


def _mask_rows(mask: torch.Tensor, start: int, count: int) -> torch.Tensor:
    """Shift-mask rows of windows ``start .. start + count`` of the flat batch: window i is window
    ``i % nW`` of its image. A view where the range stays within one image, a small gather otherwise."""
    nw = mask.shape[0]
    first = start % nw
    if first + count <= nw:
        return mask[first : first + count]
    return mask[torch.arange(start, start + count, device=mask.device) % nw]


def _inverse_norm(t: torch.Tensor, eps: float = NORM_EPS) -> torch.Tensor:
    """``1 / max(|t|, eps)`` over the last axis, as ``F.normalize`` divides by."""
    return torch.linalg.vector_norm(t, dim=-1, keepdim=True).clamp_min(eps).reciprocal()


def sdpa_backends(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> list[SDPBackend]:
    """The SDPA kernels this call may use: :data:`SDPA_BACKENDS`, with cuDNN's too where it pays."""
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v, bias))
    return SDPA_BACKENDS_CUDNN if cudnn_pays(q.device.type, q.dtype, q.shape[-2], needs_grad) else SDPA_BACKENDS


def cudnn_pays(device_type: str, dtype: torch.dtype, tokens: int, needs_grad: bool) -> bool:
    """Whether cuDNN's attention kernel should be enabled (see :data:`SDPA_BACKENDS_CUDNN`)."""
    return device_type == "cuda" and dtype == torch.bfloat16 and tokens >= CUDNN_MIN_TOKENS and not needs_grad


def sdpa_pays(q: torch.Tensor, bias: torch.Tensor) -> bool:
    """Whether SDPA beats explicit matrix products for this call (measured at SwinV2-T's shapes).

    On a CPU two cases lose: autograd through the additive bias (the CPB network is trained) sends SDPA
    to its math fallback, whose NaN-safe softmax is slower than the explicit product; and in bf16 / fp16
    the CPU flash kernel is no faster than the products. fp32 inference on a CPU and CUDA take SDPA,
    where it is faster. docs/results.md has the measurements.
    """
    if q.device.type != "cpu":
        return True
    return q.dtype == torch.float32 and not (torch.is_grad_enabled() and bias.requires_grad)

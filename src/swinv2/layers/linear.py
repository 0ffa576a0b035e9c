"""Linear layers on a CPU through oneDNN: inference with the MLP's GELU fused in, and fp32 training.

PyTorch's ``F.linear`` on a CPU copies the bias into the output and then runs the matrix product over
it, and GELU is a separate pass over the MLP's 4x-wide hidden tensor (slow for the exact erf form). oneDNN,
which PyTorch ships, adds the bias and applies GELU inside the product. Its fp32 products also run at
up to 460 GFLOP/s on this project's 2-core AMD Zen 5, where PyTorch's fp32 products (MKL) reach 210:
training takes oneDNN too, through :class:`_OneDnnLinear`, whose backward pass runs the input and weight
gradients on it (bf16 products, autocast's included, reach oneDNN through PyTorch already).
``benchmarks/speed.sh`` has the whole-model figures. It is the kernel inductor itself uses when it freezes
a model for CPU inference.

The oneDNN kernel is not part of any export format and has no forward-mode or functorch rules, so
autograd's forward mode and functorch transforms, ``torch.compile`` / export / tracing, Python dispatch
modes (FLOP counters, fake tensors), autocast, ``torch.backends.mkldnn.flags(enabled=False)``, other
devices, tensor subclasses, hooks on the layer and subclasses of ``nn.Linear`` get ``F.linear`` (and
``F.gelu``). The attention's qkv projection passes its weight with the q / zero / v bias directly, as every
SwinV2 implementation does, so hooks on ``attn.qkv`` do not run on any path. :func:`use_onednn`
(process-wide, not per thread) switches the kernel off.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

_enabled = True
_failed: set[torch.dtype] = set()  # dtypes whose kernel raised on this machine
# Below this many features on both sides a weight gradient runs on PyTorch's product (linear_weight_grad).
ONEDNN_MIN_GRAD_FEATURES = 192


@contextlib.contextmanager
def use_onednn(enabled: bool) -> Iterator[None]:
    """Within the block, take (or never take) the oneDNN path for eligible calls."""
    global _enabled
    previous, _enabled = _enabled, enabled
    try:
        yield
    finally:
        _enabled = previous


@functools.cache
def _kernel_available(dtype: torch.dtype) -> bool:
    if not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")):
        return False
    if dtype == torch.bfloat16:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return dtype == torch.float32


def _eligible(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
    """Whether this call may run the oneDNN kernel directly: nothing for autograd to record."""
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias)):
        return False
    return _kernel_allowed(x, weight, bias)


def _trainable(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
    """Whether this call may run the oneDNN kernel with :class:`_OneDnnLinear`'s backward: fp32 only, as
    PyTorch's own bf16 products already run on oneDNN."""
    return x.dtype == torch.float32 and _kernel_allowed(x, weight, bias)


def _kernel_allowed(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
    """The checks of the module docstring other than autograd's."""
    if not _enabled or not _plain_operands(x, weight, bias):
        return False
    if torch.compiler.is_compiling() or torch.jit.is_tracing() or torch.jit.is_scripting():
        return False
    if torch.is_autocast_enabled("cpu"):  # autocast casts F.linear's operands; a direct kernel call it would not
        return False
    if torch._C._len_torch_dispatch_stack() or torch._C._is_torch_function_mode_enabled():
        return False
    # forward-mode AD and functorch transforms (jvp, vmap) run under no_grad too; the kernel has no rules for them
    if torch.autograd.forward_ad._current_level >= 0 or torch._C._functorch.peek_interpreter_stack() is not None:
        return False
    if not torch._C._get_mkldnn_enabled():  # torch.backends.mkldnn.flags(enabled=False)
        return False
    return x.dtype not in _failed and _kernel_available(x.dtype)


def _plain_operands(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
    """Dense CPU tensors of one dtype whose shapes fit: anything else (tensor subclasses, fx proxies, nested
    or sparse tensors, mixed devices, a user's shape error) goes to ``F.linear``, which handles or names
    it, and never reaches the kernel, whose failures would switch it off for the dtype."""
    operands = (x, weight) if bias is None else (x, weight, bias)
    if any(type(t) not in (torch.Tensor, nn.Parameter) or t.layout != torch.strided or t.is_nested for t in operands):
        return False
    if any(t.device.type != "cpu" or t.dtype != x.dtype for t in operands):
        return False
    if weight.dim() != 2 or x.dim() < 1 or x.shape[-1] != weight.shape[1] or x.shape[-1] == 0:
        return False  # oneDNN builds no product over zero terms (a weight gradient of zero tokens)
    return bias is None or (tuple(bias.shape) == (weight.shape[0],) and bias.is_contiguous())  # read as dense


def _hooked(*modules: nn.Module) -> bool:
    """Whether calling these modules would run forward hooks that a direct kernel call would skip."""
    if nn.modules.module._global_forward_hooks or nn.modules.module._global_forward_pre_hooks:
        return True
    return any(m._forward_hooks or m._forward_pre_hooks for m in modules)


def _pointwise(*args) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(*args)


def _kernel(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, gelu: bool) -> torch.Tensor | None:
    """oneDNN's product (``gelu``: with GELU applied), or None where the kernel fails on this machine: it
    is then off for that dtype, with one warning, and the callers run PyTorch's own ops."""
    try:
        if gelu:
            return _pointwise(x, weight, bias, "gelu", [], "none")
        return _pointwise(x, weight, bias, "none", [], "")
    except RuntimeError as err:
        _failed.add(x.dtype)
        warnings.warn(f"oneDNN linear kernel failed, PyTorch's linear from now on for {x.dtype}: {err}", stacklevel=3)
        return None


def linear(x: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
    """``layer(x)``, through oneDNN on eligible CPU calls (plain ``nn.Linear`` only: a subclass or a
    swapped-in module, quantised or adapted, runs its own forward)."""
    if type(layer) is nn.Linear and not _hooked(layer):
        out = _onednn_linear(x, layer.weight, layer.bias)
        if out is not None:
            return out
    return layer(x)


def linear_weights(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.linear(x, weight, bias)``, through oneDNN on eligible CPU calls."""
    out = _onednn_linear(x, weight, bias)
    return F.linear(x, weight, bias) if out is None else out


def _onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor | None:
    """oneDNN's product, recorded for autograd where it needs to be; None where it may not run."""
    if _eligible(x, weight, bias):
        return _kernel(x, weight, bias, gelu=False)
    if _trainable(x, weight, bias):
        return _OneDnnLinear.apply(x, weight, bias)
    return None


class _OneDnnLinear(torch.autograd.Function):
    """``F.linear`` for fp32 CPU training with all three products on oneDNN (see :func:`linear_input_grad`
    and :func:`linear_weight_grad` for the backward pass). It saves what ``F.linear`` saves: the input
    where the weight needs a gradient, the weight where the input does. A double backward
    (``create_graph=True``) runs PyTorch's differentiable products."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        needs_x, needs_weight = ctx.needs_input_grad[:2]
        ctx.save_for_backward(x if needs_weight else None, weight if needs_x else None)  # as F.linear keeps
        ctx.has_bias = bias is not None
        out = _kernel(x, weight, bias, gelu=False)
        return F.linear(x, weight, bias) if out is None else out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        need_x, need_weight, need_bias = ctx.needs_input_grad
        flat = grad.reshape(-1, grad.shape[-1])
        grad_x = linear_input_grad(grad, weight) if need_x else None
        grad_weight = linear_weight_grad(flat, x.reshape(-1, x.shape[-1])) if need_weight else None
        grad_bias = flat.sum(0) if need_bias and ctx.has_bias else None
        return grad_x, grad_weight, grad_bias


def _product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b.T`` for ``a`` ``(..., K)`` and ``b`` ``(N, K)``, on oneDNN where it may run; PyTorch's
    differentiable product under grad mode (a double backward records it)."""
    if not torch.is_grad_enabled() and _kernel_allowed(a, b, None):
        out = _kernel(a, b, None, gelu=False)
        if out is not None:
            return out
    return a @ b.t()


def linear_input_grad(grad: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The gradient of a linear layer's input, ``grad @ weight``."""
    return _product(grad, weight.t())  # a view: oneDNN reads it as fast as a copy


def linear_weight_grad(grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The gradient of a linear layer's weight, ``grad.T @ x`` for ``grad`` ``(M, N)`` and ``x`` ``(M, K)``.

    oneDNN reduces over the M tokens fast when the wider of the two feature counts is its output's rows;
    where both are narrow (SwinV2-T's stage-1 projection, 96 x 96 over 32768 tokens) PyTorch's product is
    faster (96 and 128: 172 / 173 vs 117 / 149 GFLOP/s over 32768 tokens; 192: 183 vs 212). Measured per
    shape in docs/results.md."""
    n, k = grad.shape[1], x.shape[1]
    if max(n, k) < ONEDNN_MIN_GRAD_FEATURES:
        return grad.t() @ x
    if n > k:
        return _product(x.t(), grad.t()).t().contiguous()
    return _product(grad.t(), x.t())


def linear_gelu(x: torch.Tensor, layer: nn.Linear, act: nn.Module) -> torch.Tensor:
    """``act(layer(x))`` with ``act`` an exact ``nn.GELU``, GELU fused into the product where eligible."""
    exact_gelu = type(act) is nn.GELU and act.approximate == "none"
    if exact_gelu and type(layer) is nn.Linear and not _hooked(layer, act) and _eligible(x, layer.weight, layer.bias):
        out = _kernel(x, layer.weight, layer.bias, gelu=True)
        if out is not None:
            return out
    return act(layer(x))

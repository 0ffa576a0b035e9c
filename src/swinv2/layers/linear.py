"""Linear layers on a CPU through oneDNN where it is the faster library: inference with the MLP's GELU
fused in, and fp32 training.

PyTorch's ``F.linear`` on a CPU copies the bias into the output and then runs the matrix product over
it, and GELU is a separate pass over the MLP's 4x-wide hidden tensor (slow for the exact erf form). oneDNN,
which PyTorch ships, adds the bias and applies GELU inside the product, and on some CPUs its fp32 products
run faster than PyTorch's own (MKL); on others they tie, or its weight gradients lose. So each
product shape runs on the library measured faster on this machine (:mod:`.routing`): inference through
the oneDNN kernel directly, fp32 training through :class:`_OneDnnLinear`, whose forward product, input
gradient and weight gradient are each routed (bf16 products, autocast's included, reach oneDNN through
PyTorch already). oneDNN's is also the kernel inductor uses when it freezes a model for CPU inference.

The oneDNN kernel is not part of any export format and has no forward-mode or functorch rules, so
autograd's forward mode and functorch transforms, ``torch.compile`` / export / tracing, Python dispatch
modes (FLOP counters, fake tensors), autocast, ``torch.backends.mkldnn.flags(enabled=False)``, other
devices, tensor subclasses, hooks on the layer and subclasses of ``nn.Linear`` get ``F.linear`` (and
``F.gelu``). The attention's qkv projection passes its weight with the q / zero / v bias directly, as every
SwinV2 implementation does, so hooks on ``attn.qkv`` do not run on any path. :func:`use_onednn`
(process-wide, not per thread) forces the kernel on or off, as ``SWINV2_ONEDNN=on|off`` does for a whole
process (``auto``, the measured choice, by default).
"""

from __future__ import annotations

import contextlib
import functools
import os
import warnings
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .routing import ONEDNN, kernel_choices, shape_key

AUTO = "auto"
ENV_MODE = "SWINV2_ONEDNN"  # on / off / auto: the process's mode, for runs that must not depend on a measurement
MODES = {"on": True, "1": True, "off": False, "0": False, AUTO: AUTO}


def _mode_from_env() -> bool | str:
    value = os.environ.get(ENV_MODE, AUTO).strip().lower()
    if value not in MODES:
        warnings.warn(f"{ENV_MODE}={value!r} is not one of {sorted(MODES)}: using {AUTO}", stacklevel=2)
    return MODES.get(value, AUTO)


_mode: bool | str = _mode_from_env()  # True: oneDNN wherever eligible; False: never; "auto": the measured choice
_failed: set[torch.dtype] = set()  # dtypes whose kernel raised on this machine


@contextlib.contextmanager
def use_onednn(enabled: bool | str = True) -> Iterator[None]:
    """Within the block, take the oneDNN path for every eligible call (True), for none (False), or where
    it measured faster (``"auto"``, the default outside such a block)."""
    global _mode
    if enabled not in (True, False, AUTO):
        raise ValueError(f"use_onednn takes True, False or {AUTO!r}, got {enabled!r}")
    previous, _mode = _mode, enabled
    try:
        yield
    finally:
        _mode = previous


def _routed(
    kind: str, layer: tuple[torch.dtype, int, int, int], onednn: Callable[[], torch.Tensor | None], pytorch
) -> torch.Tensor:
    """``onednn()`` or ``pytorch()``, whichever the mode and the measured choice for this product of a
    ``(dtype, tokens, in, out)`` layer say (a failed oneDNN call, None, falls back to PyTorch's)."""
    if _mode is True:
        out = onednn()
        return pytorch() if out is None else out
    name, out = kernel_choices().pick(shape_key(kind, *layer), {ONEDNN: onednn, "pytorch": pytorch})
    if out is None:
        out = onednn() if name == ONEDNN else None
    return pytorch() if out is None else out


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
    if _mode is False or not _plain_operands(x, weight, bias):
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
    if torch.jit.is_scripting():
        return F.linear(x, weight, bias)
    out = _onednn_linear(x, weight, bias)
    return F.linear(x, weight, bias) if out is None else out


def _onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor | None:
    """The routed product, recorded for autograd where it needs to be; None where oneDNN may not run."""
    if _eligible(x, weight, bias):
        return _routed(
            "infer", _layer(x, weight), lambda: _kernel(x, weight, bias, gelu=False), lambda: F.linear(x, weight, bias)
        )
    if _trainable(x, weight, bias):
        return _OneDnnLinear.apply(x, weight, bias)
    return None


class _OneDnnLinear(torch.autograd.Function):
    """``F.linear`` for fp32 CPU training with each of its three products on the faster library (see
    :func:`linear_input_grad` and :func:`linear_weight_grad` for the backward pass). It saves what
    ``F.linear`` saves: the input where the weight needs a gradient, the weight where the input does. A
    double backward (``create_graph=True``) runs PyTorch's differentiable products."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        needs_x, needs_weight = ctx.needs_input_grad[:2]
        ctx.save_for_backward(x if needs_weight else None, weight if needs_x else None)  # as F.linear keeps
        ctx.has_bias = bias is not None
        return _routed(
            "forward",
            _layer(x, weight),
            lambda: _kernel(x, weight, bias, gelu=False),
            lambda: F.linear(x, weight, bias),
        )

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        need_x, need_weight, need_bias = ctx.needs_input_grad
        flat = grad.reshape(-1, grad.shape[-1])
        grad_x = linear_input_grad(grad, weight) if need_x else None
        grad_weight = linear_weight_grad(flat, x.reshape(-1, x.shape[-1])) if need_weight else None
        grad_bias = flat.sum(0) if need_bias and ctx.has_bias else None
        return grad_x, grad_weight, grad_bias


def _layer(x: torch.Tensor, weight: torch.Tensor) -> tuple[torch.dtype, int, int, int]:
    """``(dtype, tokens, in, out)`` of the product of ``x`` ``(..., in)`` by ``weight`` ``(out, in)``."""
    return x.dtype, x.numel() // x.shape[-1], weight.shape[1], weight.shape[0]


def _onednn_product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor | None:
    """``a @ b.T`` for ``a`` ``(..., K)`` and ``b`` ``(N, K)`` on oneDNN (None where the kernel failed)."""
    return _kernel(a, b, None, gelu=False)


def _routable(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether a backward product may leave PyTorch's differentiable ops (not under a double backward)."""
    return not torch.is_grad_enabled() and _kernel_allowed(a, b, None)


def linear_input_grad(grad: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The gradient of a linear layer's input, ``grad @ weight``."""
    wt = weight.t()  # a view: oneDNN reads it as fast as a copy
    if not _routable(grad, wt):
        return grad @ weight
    return _routed("input_grad", _layer(grad, weight), lambda: _onednn_product(grad, wt), lambda: grad @ weight)


def linear_weight_grad(grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The gradient of a linear layer's weight, ``grad.T @ x`` for ``grad`` ``(M, N)`` and ``x`` ``(M, K)``.

    oneDNN reduces over the M tokens fast only when the wider of the two feature counts is its output's
    rows, so that orientation is the one measured against PyTorch's product."""
    n, k = grad.shape[1], x.shape[1]
    xt, gt = x.t(), grad.t()
    if not _routable(xt, gt):
        return grad.t() @ x

    def onednn() -> torch.Tensor | None:
        if n > k:
            out = _onednn_product(xt, gt)
            return None if out is None else out.t().contiguous()
        return _onednn_product(gt, xt)

    return _routed("weight_grad", (grad.dtype, grad.shape[0], k, n), onednn, lambda: grad.t() @ x)


def linear_gelu(x: torch.Tensor, layer: nn.Linear, act: nn.Module) -> torch.Tensor:
    """``act(layer(x))`` with ``act`` an exact ``nn.GELU``, GELU fused into the product where eligible."""
    exact_gelu = type(act) is nn.GELU and act.approximate == "none"
    if exact_gelu and type(layer) is nn.Linear and not _hooked(layer, act) and _eligible(x, layer.weight, layer.bias):
        weight, bias = layer.weight, layer.bias
        return _routed(
            "infer_gelu",
            _layer(x, weight),
            lambda: _kernel(x, weight, bias, gelu=True),
            lambda: F.gelu(F.linear(x, weight, bias)),
        )
    return act(layer(x))

"""Linear layers of CPU inference through oneDNN, with the MLP's GELU fused into its first layer.

PyTorch's ``F.linear`` on a CPU copies the bias into the output and then runs the matrix product over
it, and GELU is a separate pass over the MLP's 4x-wide hidden tensor (slow for the exact erf form). oneDNN,
which PyTorch ships, adds the bias and applies GELU inside the product. Measured on this project's
2-core AVX-512 CPU at SwinV2-T's stage-1 MLP shapes: linear + GELU 68 -> 42 ms in fp32 and 32 -> 11 ms
in bf16; ``benchmarks/speed.sh`` has the whole-model figures. It is the kernel inductor itself uses when
it freezes a model for CPU inference.

The oneDNN kernel has no autograd formula and is not part of any export format, so :func:`linear` takes it
only in plain eager inference; training, autograd (forward mode and functorch transforms included),
``torch.compile`` / export / tracing, Python dispatch modes (FLOP counters, fake tensors), autocast,
``torch.backends.mkldnn.flags(enabled=False)``, other devices, tensor subclasses, hooks on the layer and
subclasses of ``nn.Linear`` get ``F.linear`` (and ``F.gelu``). The attention's qkv projection passes its
weight with the q / zero / v bias directly, as every SwinV2 implementation does, so hooks on ``attn.qkv``
do not run on any path. :func:`use_onednn` (process-wide, not per thread) switches the kernel off.
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
    """Whether this call may run the oneDNN kernel (see the module docstring)."""
    if not _enabled or torch.is_grad_enabled() or not _plain_operands(x, weight, bias):
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
    if weight.dim() != 2 or x.dim() < 1 or x.shape[-1] != weight.shape[1]:
        return False
    return bias is None or tuple(bias.shape) == (weight.shape[0],)


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
    """``layer(x)``, through oneDNN in eligible CPU inference (plain ``nn.Linear`` only: a subclass or a
    swapped-in module, quantised or adapted, runs its own forward)."""
    if type(layer) is nn.Linear and not _hooked(layer) and _eligible(x, layer.weight, layer.bias):
        out = _kernel(x, layer.weight, layer.bias, gelu=False)
        if out is not None:
            return out
    return layer(x)


def linear_weights(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.linear(x, weight, bias)``, through oneDNN in eligible CPU inference."""
    if _eligible(x, weight, bias):
        out = _kernel(x, weight, bias, gelu=False)
        if out is not None:
            return out
    return F.linear(x, weight, bias)


def linear_gelu(x: torch.Tensor, layer: nn.Linear, act: nn.Module) -> torch.Tensor:
    """``act(layer(x))`` with ``act`` an exact ``nn.GELU``, GELU fused into the product where eligible."""
    exact_gelu = type(act) is nn.GELU and act.approximate == "none"
    if exact_gelu and type(layer) is nn.Linear and not _hooked(layer, act) and _eligible(x, layer.weight, layer.bias):
        out = _kernel(x, layer.weight, layer.bias, gelu=True)
        if out is not None:
            return out
    return act(layer(x))

"""oneDNN linear layers: inference with GELU fused in, and fp32 training with a hand-written backward.

Every test here forces the kernel on (``use_onednn(True)``) wherever a call is eligible, so that kernel
counts and numbers do not depend on which library measured faster on this machine (tests/test_routing.py
covers that choice)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from helpers import blocks, diff, randomize, tiny
from swinv2.layers import linear as linear_module
from swinv2.layers.linear import _kernel_available, linear, linear_weight_grad, linear_weights, use_onednn

ONEDNN_OP = "mkldnn::_linear_pointwise"
needs_onednn = pytest.mark.skipif(not _kernel_available(torch.float32), reason="PyTorch built without oneDNN")


@pytest.fixture(autouse=True)
def onednn_forced():
    with use_onednn(True):
        yield


def onednn_calls(fn) -> int:
    """How many oneDNN linear kernels ``fn()`` runs (from the profiler's record of dispatched ops)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return sum(e.count for e in prof.key_averages() if e.key == ONEDNN_OP)


@needs_onednn
def test_onednn_inference_equals_pytorch_linear_in_fp32():
    model = randomize(tiny("swinv2_tiny_window8_256", pretrained_window_sizes=(12, 12, 12, 6))).eval()
    x = torch.randn(2, 3, 72, 72)  # padded and shifted windows
    with torch.no_grad():
        with use_onednn(False):
            assert onednn_calls(lambda: model(x)) == 0
            reference = model(x)
        per_block = 4  # qkv, proj, fc1 + GELU, fc2
        merges = len(model.stages) - 1
        assert onednn_calls(lambda: model(x)) == per_block * blocks(model) + merges
        out = model(x)
    print("oneDNN vs F.linear max / mean |diff|", *diff(out, reference))
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-5)


@needs_onednn
@pytest.mark.skipif(not _kernel_available(torch.bfloat16), reason="no bf16 oneDNN kernels on this CPU")
def test_onednn_bf16_inference_is_no_less_accurate_than_pytorch_bf16():
    """GELU fused into the product rounds to bf16 once, not twice: never further from fp32."""
    model = randomize(tiny("swinv2_tiny_window8_256")).eval()
    low = tiny("swinv2_tiny_window8_256").eval().to(torch.bfloat16)
    low.load_state_dict(model.state_dict())
    x = torch.randn(8, 3, 64, 64)
    with torch.no_grad():
        reference = model(x)
        with use_onednn(False):
            pytorch = low(x.bfloat16()).float()
        assert onednn_calls(lambda: low(x.bfloat16())) > 0
        fused = low(x.bfloat16()).float()
    err_pytorch, err_fused = diff(pytorch, reference)[1], diff(fused, reference)[1]
    print(f"mean |diff| from fp32: F.linear bf16 {err_pytorch:.3e}, oneDNN bf16 {err_fused:.3e}")
    assert err_fused <= 1.1 * err_pytorch


@needs_onednn
def test_onednn_is_left_out_of_tracing_counting_autocast_and_hooks():
    from torch.utils.flop_counter import FlopCounterMode

    model = randomize(tiny("swinv2_tiny_window8_256")).eval()
    x = torch.randn(1, 3, 64, 64)

    def flops() -> int:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(x)
        return counter.get_total_flops()

    flops()  # fills the position-bias cache, which the counted passes then share
    with use_onednn(False):
        expected = flops()
    assert flops() == expected, "FLOP counters see every product"
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert onednn_calls(lambda: model(x)) == 0, "autocast decides the dtype of every product"
    with torch.no_grad():
        traced = torch.jit.trace(model, x, check_trace=False)
    assert "mkldnn" not in str(traced.inlined_graph), "a traced graph must run without oneDNN's private op"

    seen = []
    model.stages[0].blocks[0].mlp.fc1.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    with torch.no_grad():
        model(x)
    assert seen, "a forward hook on a linear layer still runs"


@needs_onednn
def test_onednn_declines_calls_it_cannot_serve_and_stays_on(monkeypatch):
    from torch.func import jvp, vmap

    from swinv2.layers import linear as linear_module
    from swinv2.layers.linear import linear

    monkeypatch.setattr(linear_module, "_failed", set())
    layer = torch.nn.Linear(8, 4)
    x, t = torch.randn(3, 8), torch.randn(3, 8)
    with torch.no_grad():
        assert onednn_calls(lambda: linear(x, layer)) == 1  # the plain case does take it
        # forward-mode AD and functorch transforms run under no_grad; the kernel has no rule for them
        _, tangent = jvp(lambda a: linear(a, layer), (x,), (t,))
        torch.testing.assert_close(tangent, t @ layer.weight.T)
        assert onednn_calls(lambda: vmap(lambda a: linear(a, layer))(x)) == 0
        with torch.backends.mkldnn.flags(enabled=False):
            assert onednn_calls(lambda: linear(x, layer)) == 0

        class Shifted(torch.nn.Linear):  # a subclass's own forward must run (adapters, quantised layers)
            def forward(self, a):
                return super().forward(a) + 100

        shifted = Shifted(8, 4)
        torch.testing.assert_close(linear(x, shifted), shifted(x))
        with pytest.raises(RuntimeError, match="meta"):
            linear(x, torch.nn.Linear(8, 4, device="meta"))  # PyTorch names the mixed devices
        with pytest.raises(RuntimeError, match="cannot be multiplied"):
            linear(torch.randn(3, 7), layer)  # a user's shape error gets PyTorch's message...
        assert onednn_calls(lambda: linear(x, layer)) == 1  # ...and does not switch the kernel off
    assert not linear_module._failed


@needs_onednn
def test_a_failing_onednn_kernel_falls_back_to_pytorch_with_one_warning(monkeypatch):
    from swinv2.layers import linear as linear_module

    model = randomize(tiny("swinv2_tiny_window8_256")).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad(), use_onednn(False):
        reference = model(x)

    def broken(*args):
        raise RuntimeError("no oneDNN primitive for this CPU")

    monkeypatch.setattr(linear_module, "_pointwise", broken)
    monkeypatch.setattr(linear_module, "_failed", set())
    with torch.no_grad(), pytest.warns(UserWarning, match="oneDNN linear kernel failed") as caught:
        out = model(x)
        again = model(x)
    assert len(caught) == 1, "one warning, then the kernel is not tried again"
    assert torch.equal(out, reference) and torch.equal(again, reference)


# ------------------------------------------------------------------------ fp32 training through oneDNN
def linear_shapes(model) -> list[tuple[int, int]]:
    """(in, out) features of every linear layer that goes through ``swinv2.layers.linear`` (not the head)."""
    shapes = []
    for stage in model.stages:
        if hasattr(stage.downsample, "reduction"):
            shapes.append((stage.downsample.reduction.in_features, stage.downsample.reduction.out_features))
        for block in stage.blocks:
            for layer in (block.attn.qkv, block.attn.proj, block.mlp.fc1, block.mlp.fc2):
                shapes.append((layer.in_features, layer.out_features))
    return shapes


def train_step(model, x, y) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}


@needs_onednn
@pytest.mark.parametrize("saver", ["none", "recompute_gelu", "checkpointing"])
def test_onednn_training_step_is_as_exact_as_fp32_allows(saver):
    """Every product of a training step on oneDNN, its gradients as close to float64's as PyTorch's own fp32
    step is. oneDNN sums a long reduction less exactly than MKL (up to 2x the error of one product at 384-4096
    terms), and random tiny networks amplify rounding unevenly (PyTorch's fp32 gradients are 2e-5 to 7e-4
    from float64's, by seed), so the bound is relative to PyTorch's error on the same step."""
    model = randomize(tiny("swinv2_tiny_window8_256", pretrained_window_sizes=(12, 12, 12, 6), drop_path_rate=0.0))
    model.train()
    if saver == "recompute_gelu":
        model.set_recompute_gelu()
    elif saver == "checkpointing":
        model.set_grad_checkpointing()
    x, y = torch.randn(2, 3, 72, 72, generator=torch.Generator().manual_seed(0)), torch.tensor([1, 3])
    _, exact = train_step(copy.deepcopy(model).double(), x.double(), y)
    with use_onednn(False):
        assert onednn_calls(lambda: train_step(model, x, y)) == 0
        pytorch_loss, pytorch = train_step(model, x, y)
    calls = onednn_calls(lambda: train_step(model, x, y))
    loss, grads = train_step(model, x, y)
    shapes = linear_shapes(model)
    recomputed = 4 * blocks(model) if saver == "checkpointing" else 0  # merges run outside the checkpoints
    # forward, input gradient and weight gradient of every layer, and the checkpoints' recomputation
    assert calls == 3 * len(shapes) + recomputed

    def error(found: dict[str, torch.Tensor], names: list[str]) -> float:
        """Relative L2 distance from float64's gradients of the named parameters, taken together."""
        flat = torch.cat([found[n].double().flatten() for n in names])
        reference = torch.cat([exact[n].flatten() for n in names])
        return ((flat - reference).norm() / reference.norm()).item()

    names = list(exact)
    ours, theirs = error(grads, names), error(pytorch, names)
    print(f"{saver}: gradients' relative L2 distance from float64: oneDNN {ours:.1e}, PyTorch fp32 {theirs:.1e}")
    torch.testing.assert_close(loss, pytorch_loss, rtol=1e-5, atol=0.0)
    assert ours <= 2 * theirs
    for name in names:  # no tensor is wrong as such (a transposed or misplaced product is off by ~1)
        assert error(grads, [name]) < 1e-2, name


@needs_onednn
@pytest.mark.parametrize("features", [(96, 288), (384, 96), (96, 96), (200, 200)])
def test_onednn_linear_gradients_match_f_linear_for_every_input_needing_one(features):
    k, n = features
    layer = torch.nn.Linear(k, n)
    grad = torch.randn(40, 3, n).transpose(0, 1)  # a strided incoming gradient, as after a permute
    for wants in ({"x", "weight"}, {"x"}, {"weight"}):
        layer.requires_grad_("weight" in wants)
        x = torch.randn(3, 40, k, requires_grad="x" in wants)
        inputs = [t for t in (x, layer.weight, layer.bias) if t.requires_grad]
        results = []
        for on in (True, False):
            with use_onednn(on):
                out = linear(x, layer)
                results.append((out, *torch.autograd.grad(out, inputs, grad)))
        assert type(results[0][0].grad_fn).__name__ == "_OneDnnLinearBackward"
        for mine, ref in zip(*results, strict=True):
            torch.testing.assert_close(mine, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())


@needs_onednn
def test_onednn_linear_double_backward_equals_f_linear():
    """create_graph=True records PyTorch's products in the backward pass, so second derivatives exist."""
    layer = torch.nn.Linear(200, 224)
    x = torch.randn(4, 8, 200, requires_grad=True)

    def second_order(on: bool) -> tuple[torch.Tensor, ...]:
        with use_onednn(on):
            (first,) = torch.autograd.grad(linear(x, layer).pow(2).sum(), x, create_graph=True)
            return torch.autograd.grad(first.pow(2).sum(), (x, layer.weight, layer.bias))

    for mine, ref in zip(second_order(True), second_order(False), strict=True):
        torch.testing.assert_close(mine, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())


@needs_onednn
@pytest.mark.parametrize("features", [(96, 384), (384, 96), (256, 256), (96, 96)])
def test_weight_gradient_orientations_equal_the_plain_product(features):
    k, n = features
    grad, x = torch.randn(3000, n), torch.randn(3000, k)
    out = linear_weight_grad(grad, x)
    assert out.shape == (n, k) and out.is_contiguous()
    torch.testing.assert_close(out, grad.t() @ x, rtol=1e-5, atol=1e-4)


@needs_onednn
def test_only_fp32_training_without_autocast_takes_the_training_path():
    model = randomize(tiny("swinv2_tiny_window8_256")).train()
    x, y = torch.randn(2, 3, 64, 64), torch.tensor([0, 1])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert onednn_calls(lambda: train_step(model, x, y)) == 0, "autocast's bf16 products are PyTorch's"
    low = randomize(tiny("swinv2_tiny_window8_256")).train().to(torch.bfloat16)
    assert onednn_calls(lambda: train_step(low, x.bfloat16(), y)) == 0, "PyTorch's bf16 products run on oneDNN"


@needs_onednn
def test_a_failing_onednn_kernel_in_training_falls_back_with_one_warning(monkeypatch):
    model = randomize(tiny("swinv2_tiny_window8_256", drop_path_rate=0.0)).train()
    x, y = torch.randn(2, 3, 64, 64), torch.tensor([0, 1])
    with use_onednn(False):
        loss_ref, grads_ref = train_step(model, x, y)

    def broken(*args):
        raise RuntimeError("no oneDNN primitive for this CPU")

    monkeypatch.setattr(linear_module, "_pointwise", broken)
    monkeypatch.setattr(linear_module, "_failed", set())
    with pytest.warns(UserWarning, match="oneDNN linear kernel failed") as caught:
        loss, grads = train_step(model, x, y)
        train_step(model, x, y)
    assert len(caught) == 1, "one warning, then the kernel is not tried again"
    assert torch.equal(loss, loss_ref)
    for name, ref in grads_ref.items():
        torch.testing.assert_close(grads[name], ref, msg=name)


@needs_onednn
def test_strided_biases_and_empty_reductions_never_reach_the_kernel(monkeypatch):
    monkeypatch.setattr(linear_module, "_failed", set())
    weight, x = torch.randn(48, 64), torch.randn(5, 64)
    for bias in (torch.randn(96)[::2], torch.randn(1).expand(48)):  # the kernel would read them as dense
        for needs_grad in (False, True):
            inp = x.clone().requires_grad_(needs_grad)
            torch.testing.assert_close(linear_weights(inp, weight, bias), F.linear(inp, weight, bias))
    layer = torch.nn.Linear(200, 224)
    linear(torch.randn(0, 200, requires_grad=True), layer).sum().backward()  # zero tokens: a sum of no terms
    assert torch.equal(layer.weight.grad, torch.zeros_like(layer.weight))
    with torch.no_grad():
        assert linear(torch.randn(3, 0), torch.nn.Linear(0, 4, bias=False)).shape == (3, 4)
    assert not linear_module._failed, "the kernel stays on: none of these calls reached it"


@needs_onednn
def test_training_path_saves_only_what_f_linear_saves():
    """A frozen layer behind trainable ones keeps its weight, not its input, for the backward pass."""
    layer = torch.nn.Linear(256, 320)

    def saved(on: bool, x: torch.Tensor) -> list[tuple[int, ...]]:
        shapes = []
        pack = lambda t: shapes.append(tuple(t.shape)) or t  # noqa: E731
        with use_onednn(on), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            linear(x, layer)
        return shapes

    for weight_grad, input_grad in ((False, True), (True, False), (True, True)):
        layer.requires_grad_(weight_grad)
        x = torch.randn(4, 100, 256, requires_grad=input_grad)
        mine, theirs = saved(True, x), saved(False, x)
        assert sum(math.prod(s) for s in mine) == sum(math.prod(s) for s in theirs), (mine, theirs)

"""The inference fast paths: cached position bias, torch.compile without graph breaks, bf16."""

from __future__ import annotations

import pytest
import torch

from helpers import diff, randomize, tiny
from swinv2.layers import attention
from swinv2.layers.attention import WindowAttention
from swinv2.layers.linear import _kernel_available, use_onednn


def cpb_calls(model: torch.nn.Module) -> list[int]:
    """A counter of forward passes through every Log-CPB meta network of ``model``."""
    calls = [0]
    for module in model.modules():
        if isinstance(module, WindowAttention):
            module.rel_pos.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def blocks(model) -> int:
    return sum(len(stage.blocks) for stage in model.stages)


def test_bias_is_computed_once_in_inference():
    model = randomize(tiny("swinv2_tiny_window8_256")).eval()
    calls = cpb_calls(model)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        first = model(x)
        second = model(x)
    assert calls[0] == blocks(model), "one CPB pass per block, then cache hits"
    assert torch.equal(first, second)
    with torch.inference_mode():
        assert torch.equal(model(x), first)
    assert calls[0] == blocks(model)


def test_bias_is_recomputed_whenever_it_may_have_changed():
    model = randomize(tiny("swinv2_tiny_window8_256")).eval()
    calls = cpb_calls(model)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        model(x)
    n = blocks(model)
    model(x)  # autograd on: never served from the cache (the graph must reach the CPB weights)
    assert calls[0] == 2 * n
    model.train()
    model(x)
    model(x)
    assert calls[0] == 4 * n, "training recomputes every time"


def test_cache_follows_weight_loading_optimiser_steps_and_window_changes():
    model = randomize(tiny("swinv2_tiny_window8_256")).eval()
    other = randomize(tiny("swinv2_tiny_window8_256"), seed=1).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        model(x)  # fill the cache
        model.load_state_dict(other.state_dict())
        assert torch.equal(model(x), other(x)), "loading weights invalidates the cache"
        for p in model.parameters():  # an in-place update, as an optimiser step makes
            p.add_(0.01)
    fresh = tiny("swinv2_tiny_window8_256").eval()
    fresh.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(model(x), fresh(x)), "in-place updates invalidate the cache"
        model.set_input_size(window_size=4)
        fresh.set_input_size(window_size=4)
        uncached = fresh(x)  # fresh's cache for window 4 is empty: this computes the bias
        assert torch.equal(model(x), uncached), "a window change uses the new window's bias"


def test_dtype_round_trip_drops_the_cache():
    """.to() replaces parameters, possibly at the same address with the same version: the cache must go."""
    model = randomize(tiny("swinv2_tiny_window8_256")).eval()
    calls = cpb_calls(model)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        reference = model(x)
        model.to(torch.bfloat16).float()
        fresh = tiny("swinv2_tiny_window8_256").eval()
        fresh.load_state_dict(model.state_dict())  # the weights after the bf16 rounding
        assert torch.equal(model(x), fresh(x)) and not torch.equal(model(x), reference)
    assert calls[0] == 2 * blocks(model)


def test_cached_inference_equals_uncached_for_padded_shifted_and_pretrained_windows(monkeypatch):
    model = randomize(tiny("swinv2_tiny_window8_256", pretrained_window_sizes=(12, 12, 12, 6))).eval()
    x = torch.randn(2, 3, 72, 72)  # 18 x 18 tokens: padded and shifted windows
    with torch.no_grad():
        monkeypatch.setattr(attention, "MAX_CACHED_BIAS_NUMEL", 0)  # nothing is stored
        reference = model(x)
        monkeypatch.undo()
        model(x)
        cached = model(x)
    print("cached vs uncached max |diff|", *diff(cached, reference))
    assert torch.equal(cached, reference)


@pytest.mark.parametrize("dtype", [torch.bfloat16])
def test_low_precision_inference_agrees_with_fp32(dtype):
    model = randomize(tiny("swinv2_tiny_window8_256", num_classes=10)).eval()
    low = tiny("swinv2_tiny_window8_256", num_classes=10).eval().to(dtype)
    low.load_state_dict(model.state_dict())
    x = torch.randn(64, 3, 64, 64)
    with torch.no_grad():
        ref, out = model(x), low(x.to(dtype))
    agree = (ref.argmax(1) == out.float().argmax(1)).float().mean().item()
    print(f"{dtype} top-1 agreement {agree:.3f}, max |diff| {diff(ref, out)[0]:.3e}")
    assert out.dtype == dtype and agree >= 0.95


def test_compile_has_no_graph_breaks():
    """The whole forward traces as one graph (``fullgraph=True`` raises on any break)."""
    model = randomize(tiny("swinv2_tiny_window8_256")).eval()
    x = torch.randn(1, 3, 64, 64)
    explanation = torch._dynamo.explain(model)(x)
    print(explanation.break_reasons)
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1


# ------------------------------------------------------------------------------------ oneDNN linear layers
ONEDNN_OP = "mkldnn::_linear_pointwise"
needs_onednn = pytest.mark.skipif(not _kernel_available(torch.float32), reason="PyTorch built without oneDNN")


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
def test_onednn_is_left_out_of_autograd_tracing_counting_and_hooks():
    from torch.utils.flop_counter import FlopCounterMode

    model = randomize(tiny("swinv2_tiny_window8_256")).eval()
    x = torch.randn(1, 3, 64, 64)
    assert onednn_calls(lambda: model(x).sum().backward()) == 0, "autograd needs PyTorch's own linear"
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)

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

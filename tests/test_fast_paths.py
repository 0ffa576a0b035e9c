"""The inference fast paths: cached position bias, torch.compile without graph breaks, bf16."""

from __future__ import annotations

import pytest
import torch

from helpers import blocks, diff, randomize, tiny
from swinv2.layers import attention
from swinv2.layers.attention import WindowAttention


def cpb_calls(model: torch.nn.Module) -> list[int]:
    """A counter of forward passes through every Log-CPB meta network of ``model``."""
    calls = [0]
    for module in model.modules():
        if isinstance(module, WindowAttention):
            module.rel_pos.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


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

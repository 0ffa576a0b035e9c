"""The memory planner: state sharding per strategy, saver ordering, and activations against a real pass."""

from __future__ import annotations

import pytest
import torch

from swinv2 import create_model
from swinv2.layers import attention as attention_module
from swinv2.layers import mlp as mlp_module
from swinv2.tools.bench import peak_memory
from swinv2.tools.plan import GIB, count_activations, format_plan, largest_resolution, plan, state_bytes

MODEL = "swinv2_test_window4_32"


def test_states_shard_as_each_strategy_promises():
    p, block = 1000, 100
    single = state_bytes(p, block, "single", 8, "none")
    assert single == {"params": 4000, "grads": 4000, "optimizer": 8000}
    assert state_bytes(p, block, "ddp", 8, "none") == single
    assert state_bytes(p, block, "zero", 8, "none") == {"params": 4000, "grads": 4000, "optimizer": 1000}
    # autocast keeps a bf16 copy of the weights for the forward pass
    assert state_bytes(p, block, "zero", 8, "bf16") == {"params": 4000 + 2000, "grads": 4000, "optimizer": 1000}
    # FSDP: a shard of everything, plus two gathered bf16 blocks and one unsharded bf16 block gradient
    assert state_bytes(p, block, "fsdp", 8, "bf16") == {"params": 500 + 400, "grads": 500 + 200, "optimizer": 1000}


def test_savers_shrink_activations_in_order(monkeypatch):
    # automatic chunks (4M scores / hidden units) exceed this tiny model's stages: make them small
    monkeypatch.setattr(attention_module, "AUTO_CHUNK_SCORES", 4096)
    monkeypatch.setattr(mlp_module, "AUTO_CHUNK_HIDDEN", 4096)
    result = plan(MODEL, img_size=128, world_size=4, strategy="fsdp", amp="none")
    acts = {r["savers"]: r["activations"] for r in result["rows"]}
    print(format_plan(result))
    assert acts["none"] > acts["checkpointing"] > acts["checkpointing+seq_attention"]
    assert acts["checkpointing+seq_attention"] > acts["checkpointing+seq_attention+seq_mlp"] > 0
    assert result["params"] == sum(p.numel() for p in create_model(MODEL).parameters())
    assert "| checkpointing+seq_attention+seq_mlp |" in format_plan(result)
    with pytest.raises(ValueError, match="strategy must be one of"):
        plan(MODEL, strategy="zero3")


def test_activation_count_matches_what_a_real_forward_keeps():
    """The planner's saved-tensor count (run here on the CPU) against the bytes a real forward leaves live."""
    torch.manual_seed(0)
    model = create_model(MODEL, img_size=64).train()
    x = torch.randn(2, 3, 64, 64)
    kept = []
    # the peak of the forward pass: what it leaves for the backward plus its last transient tensors
    retained = peak_memory(lambda: kept.append(model(x)), torch.device("cpu"))
    # both include the shift masks: the measured pass is the model's first, which builds and caches them
    counted = count_activations(model, 64, 2, sequential=False).total(checkpointing=False)
    print(f"forward keeps {retained / 2**20:.2f} MiB, planner counts {counted / 2**20:.2f} MiB")
    assert 0.8 * retained <= counted <= 1.1 * retained
    assert GIB == 1 << 30


def test_largest_resolution_is_the_edge_of_the_budget():
    args = {"model_name": MODEL, "strategy": "single", "amp": "none"}
    budget = 0.02  # GiB
    best = largest_resolution(budget, step=32, limit=512, **args)
    print(best)
    assert 0 < best["none"] <= best["checkpointing"] <= best["checkpointing+seq_attention+seq_mlp"] <= 512
    for name, side in best.items():
        rows = {r["savers"]: r["total"] for r in plan(img_size=side, **args)["rows"]}
        assert rows[name] <= budget * GIB
        if side < 512:
            rows = {r["savers"]: r["total"] for r in plan(img_size=side + 32, **args)["rows"]}
            assert rows[name] > budget * GIB

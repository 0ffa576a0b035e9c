"""Memory savers: sequential (chunked) window attention and selective activation checkpointing.

Both must leave outputs and gradients unchanged; the memory they save is measured by ``swinv2 bench-memory``.
"""

from __future__ import annotations

import pytest
import torch

from helpers import diff, randomize, tiny
from swinv2 import create_model
from swinv2.layers import attention as attention_module
from swinv2.layers import mlp as mlp_module
from swinv2.layers.linear import use_onednn


def _forward_backward(model, x, seed: int = 0):
    """Output and parameter gradients of one pass (drop path and dropout draw from ``seed``)."""
    torch.manual_seed(seed)
    model.zero_grad(set_to_none=True)
    out = model(x)
    (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.detach(), grads


def _assert_same(ref, got, label: str, tol: float = 1e-5) -> None:
    (out_a, grads_a), (out_b, grads_b) = ref, got
    mx, mean = diff(out_a, out_b)
    print(f"{label}: output max {mx:.2e} mean {mean:.2e}")
    assert mx <= tol
    assert grads_a.keys() == grads_b.keys()
    worst = max(((a - grads_b[n]).abs().max() / a.abs().max().clamp_min(1e-12)).item() for n, a in grads_a.items())
    print(f"{label}: worst relative gradient diff {worst:.2e} over {len(grads_a)} tensors")
    assert worst <= tol


# 44 px / window 4: stage 1 has 11 x 11 tokens (padded to 12 x 12, shifted, 9 windows); stage 2 pads 6 -> 8;
# pretrained windows make Log-CPB rescale its coordinates.
CASES = {
    "shifted_padded": dict(img_size=44, window_size=4),
    "pretrained_window": dict(img_size=32, window_size=4, pretrained_window_sizes=(2, 2, 2, 2)),
    "clipped": dict(img_size=64, window_size=8),
}


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "explicit"])
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("chunk", [1, 4, True])
def test_sequential_attention_equals_batched(case, chunk, fused, monkeypatch):
    # automatic chunks hold ~4M scores, more than these tiny models have: shrink them to 3 windows of 16 tokens
    monkeypatch.setattr(attention_module, "AUTO_CHUNK_SCORES", 3 * 16 * 16)
    # Training in float64: in fp32 a one-head logit scale's gradient, a sum with heavy cancellation, moves by
    # 1e-5 of itself when the batched products are split; float64 leaves only the chunking to compare.
    model = randomize(tiny("swinv2_tiny_window8_256", fused_attention=fused, **CASES[case])).double().train()
    x = torch.randn(2, 3, *(2 * (CASES[case]["img_size"],)), dtype=torch.float64)
    ref = _forward_backward(model, x)
    model.set_sequential_attention(chunk)
    _assert_same(ref, _forward_backward(model, x), f"{case} chunk={chunk} fused={fused}", tol=1e-9)
    model.float()
    x = x.float()
    with torch.no_grad():  # fp32 inference: SDPA on the fused path, chunked and batched
        model.eval()
        got = model(x)
        model.set_sequential_attention(False)
        mx, _ = diff(got, model(x))
    assert mx <= 1e-5


def test_sequential_attention_really_chunks(monkeypatch):
    """The chunked path runs (not the batched one), with the expected number of chunks per block."""
    model = randomize(tiny("swinv2_tiny_window8_256", img_size=64, window_size=4)).train()
    calls = []
    original = attention_module.WindowAttention._chunk
    monkeypatch.setattr(
        attention_module.WindowAttention,
        "_chunk",
        lambda self, x, *a: calls.append(x.shape[0]) or original(self, x, *a),
    )
    model.set_sequential_attention(5, stages=[0])
    model(torch.randn(2, 3, 64, 64)).sum().backward()
    # stage 1: 16 x 16 tokens, 16 windows per image, 32 in the batch -> chunks of 5, 7 chunks per block;
    # the forward pass and the backward recompute (last chunk first) each run every chunk once, in both blocks.
    assert sorted(calls) == [2] * 4 + [5] * 24


def test_sequential_attention_with_checkpointing_and_dropout():
    """Nested recompute (block checkpoint around chunk checkpoints) keeps dropout masks and gradients."""
    model = randomize(tiny("swinv2_tiny_window8_256", img_size=44, window_size=4, attn_drop_rate=0.3)).train()
    # float64: chunks sum their gradients in another order than one pass does, and in fp32 that alone moves
    # a small tensor's gradient by up to 6e-5 of its largest entry (AVX2 kernels); what must match is masks
    # and recomputation, exactly
    model.double()
    x = torch.randn(2, 3, 44, 44, dtype=torch.float64)
    ref = _forward_backward(model, x)
    model.set_grad_checkpointing(True)
    model.set_sequential_attention(2)
    _assert_same(ref, _forward_backward(model, x), "checkpointing + sequential + attention dropout", tol=1e-10)


def test_create_model_switches_and_selective_stages():
    model = create_model("swinv2_pico_window7_28", grad_checkpointing=True, sequential_attention=3)
    assert all(s.grad_checkpointing for s in model.stages)
    assert all(b.attn.sequential == 3 for s in model.stages for b in s.blocks)
    assert not any(b.mlp.sequential for s in model.stages for b in s.blocks)
    chunked = create_model("swinv2_pico_window7_28", sequential_mlp=True)
    assert all(b.mlp.sequential is True for s in chunked.stages for b in s.blocks)
    model.set_grad_checkpointing(False, stages=[1, 2])
    assert [s.grad_checkpointing for s in model.stages] == [True, False, False]
    model.set_sequential_attention(False)
    assert all(b.attn.sequential is False for s in model.stages for b in s.blocks)
    with pytest.raises(ValueError, match=r"stages must be in 0\.\.2"):
        model.set_grad_checkpointing(True, stages=[3])
    with pytest.raises(ValueError, match="window count"):
        model.set_sequential_attention(-2)
    with pytest.raises(ValueError, match="token count"):
        model.set_sequential_mlp("yes")


@pytest.mark.parametrize(
    ("case", "chunk"), [("shifted_padded", 7), *((case, True) for case in CASES)], ids=lambda v: str(v)
)
def test_sequential_mlp_equals_batched(case, chunk, monkeypatch):
    monkeypatch.setattr(mlp_module, "AUTO_CHUNK_HIDDEN", 10 * 32)  # tiny stage 1 has 32 hidden: 10 tokens a chunk
    # drop path, not MLP dropout: chunks would draw dropout masks in another order (same distribution)
    # float64: summing weight gradients over 7-token chunks reorders fp32 additions (1e-5 relative); in
    # float64 any real difference would stand out above the 1e-10 bound.
    model = randomize(tiny("swinv2_tiny_window8_256", drop_path_rate=0.2, **CASES[case])).train().double()
    x = torch.randn(2, 3, *(2 * (CASES[case]["img_size"],)), dtype=torch.float64)
    ref = _forward_backward(model, x)
    model.set_sequential_mlp(chunk)
    model.set_sequential_attention(3)
    model.set_grad_checkpointing(True)
    _assert_same(ref, _forward_backward(model, x), f"{case} all savers, MLP chunk={chunk}", tol=1e-10)
    assert model.stages[0].blocks[0].mlp.chunk_tokens() == (7 if chunk == 7 else 10)


def test_training_recipe_and_cli_switch_the_savers():
    from types import SimpleNamespace

    from swinv2.cli import build_parser
    from swinv2.cli.common import train_recipe
    from swinv2.train.loop import build_model

    args = build_parser().parse_args(["train", "--grad-checkpointing", "on", "--sequential-attention", "yes"])
    recipe = train_recipe(args)
    assert (recipe.grad_checkpointing, recipe.sequential_attention, recipe.sequential_mlp) == (True, True, False)
    model = build_model(recipe, SimpleNamespace(classes=list("abc"), in_chans=1))
    assert all(s.grad_checkpointing for s in model.stages)
    assert all(b.attn.sequential is True and b.mlp.sequential is False for s in model.stages for b in s.blocks)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--sequential-mlp", "maybe"])


def test_sequential_attention_keeps_one_shift_mask_whatever_the_batch(monkeypatch):
    """A shifted block's chunks take their mask rows from the block's one cached mask: what it saves
    beyond an unshifted block is that mask (16 windows x 16 x 16 fp32), not a copy per image."""
    from swinv2.tools.plan import count_activations

    monkeypatch.setattr(attention_module, "AUTO_CHUNK_SCORES", 3 * 16 * 16)
    model = tiny("swinv2_tiny_window8_256", img_size=64, window_size=4)  # stage 1: 16 windows of 4 x 4
    plain, shifted = model.stages[0].blocks
    mask_bytes = 16 * 16 * 16 * 4
    for batch in (1, 8):
        count = count_activations(model, 64, batch, sequential=True, sequential_mlp=False)
        extra = count.per_block[shifted] - count.per_block[plain]
        print(f"batch {batch}: shifted block keeps {extra} bytes more than the unshifted one")
        assert mask_bytes <= extra < 1.1 * mask_bytes
    assert plain._masks is shifted._masks  # the stage's blocks share their mask cache


def test_training_after_inference_mode():
    """Geometry cached under torch.inference_mode (coordinates, indices, masks) must not break training."""
    for bias in ("log_cpb", "table"):
        model = tiny("swinv2_tiny_window8_256", img_size=44, window_size=4, position_bias=bias)
        x = torch.randn(1, 3, 44, 44)
        with torch.inference_mode():
            model.eval()(x)
        model.train()(x).sum().backward()
        model.set_sequential_attention(2)
        model(x).sum().backward()


@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16_autocast"])
def test_mlp_keeps_one_hidden_tensor_and_the_same_gradients(autocast):
    """The MLP's fc2 recomputes GELU in backward (``GeluLinear``): outputs and gradients are bitwise those of
    ``fc2(gelu(fc1(x)))``, and of the two hidden-width tensors autograd would keep, one is kept."""
    torch.manual_seed(0)
    mlp = mlp_module.Mlp(16, 64).train()
    mlp.recompute_gelu = True
    x = torch.randn(3, 10, 16, requires_grad=True)

    def run(module_call):
        mlp.zero_grad(set_to_none=True)
        x.grad = None
        hidden_kept = []

        def pack(t):
            if t.numel() == 3 * 10 * 64:  # a hidden activation (weights hold 16 * 64)
                hidden_kept.append(t.shape)
            return t

        hooks = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast), hooks:
            out = module_call(x)
        (out.float() * torch.linspace(-1, 1, 16)).sum().backward()
        return out.detach(), [x.grad.clone()] + [p.grad.clone() for p in mlp.parameters()], len(hidden_kept)

    out, grads, kept = run(mlp)
    ref_out, ref_grads, ref_kept = run(lambda t: mlp.fc2(mlp.act(mlp.fc1(t))))
    assert (kept, ref_kept) == (1, 2)
    assert torch.equal(out, ref_out)
    for got, ref in zip(grads, ref_grads):
        assert got.dtype == ref.dtype
        assert torch.equal(got, ref)


def test_mlp_recomputing_gelu_peaks_one_hidden_tensor_lower():
    """Forward and backward of an MLP: autograd peaks at three hidden-width tensors (the saved pre-activation
    and activation, then the gradient of the activation), ``GeluLinear`` at two: it keeps one and takes
    GELU's derivative in place."""
    from swinv2.tools.bench import peak_memory

    mlp = mlp_module.Mlp(32, 256).train()
    x = torch.randn(4096, 32, requires_grad=True)
    hidden = 4096 * 256 * 4

    def peak(recompute: bool) -> float:
        mlp.recompute_gelu = recompute

        def step():
            mlp(x).sum().backward()
            mlp.zero_grad(set_to_none=True)
            x.grad = None

        step()
        return peak_memory(step, torch.device("cpu")) / hidden

    plain, recomputed = peak(False), peak(True)
    print(f"peak in hidden-width tensors: autograd {plain:.2f}, GeluLinear {recomputed:.2f}")
    assert plain - recomputed > 0.95 and recomputed < 2.5


def test_mlp_with_hidden_dropout_takes_the_plain_path():
    mlp = mlp_module.Mlp(8, 32, drop=0.5).train()
    mlp.recompute_gelu = True
    x = torch.randn(2, 5, 8)
    seen = []
    with use_onednn(False):  # PyTorch's products on both sides, so equal masks give equal outputs
        with torch.autograd.graph.saved_tensors_hooks(lambda t: seen.append(t.shape) or t, lambda t: t):
            torch.manual_seed(0)
            out = mlp(x)
        torch.manual_seed(0)
        ref = mlp.drop2(mlp.fc2(mlp.drop1(mlp.act(mlp.fc1(x)))))
    assert torch.equal(out, ref)  # dropout drew the same mask: GeluLinear was not used
    assert sum(1 for s in seen if s.numel() == 2 * 5 * 32) >= 2


def test_gelu_recomputation_comes_with_checkpointing_and_has_its_own_switch():
    model = tiny("swinv2_tiny_window8_256")
    assert not any(b.mlp.recompute_gelu for s in model.stages for b in s.blocks)  # plain training: full speed
    model.set_grad_checkpointing(True, stages=[0, 1])
    assert [all(b.mlp.recompute_gelu for b in s.blocks) for s in model.stages] == [True, True, False, False]
    model.set_grad_checkpointing(False)
    assert not any(b.mlp.recompute_gelu for s in model.stages for b in s.blocks)
    model.set_recompute_gelu(True, stages=[3])  # a step without checkpointing may take it alone
    assert [all(b.mlp.recompute_gelu for b in s.blocks) for s in model.stages] == [False, False, False, True]
    assert not any(s.grad_checkpointing for s in model.stages)


def test_gelu_recomputation_supports_double_backward():
    """With create_graph=True ``GeluLinear`` applies GELU's derivative out of place, so it is differentiated."""
    torch.manual_seed(0)
    mlp = randomize(mlp_module.Mlp(64, 256)).train()
    x = torch.randn(3, 10, 64, requires_grad=True)

    def second_order(recompute: bool) -> tuple[torch.Tensor, ...]:
        mlp.recompute_gelu = recompute
        (first,) = torch.autograd.grad(mlp(x).pow(2).sum(), x, create_graph=True)
        return torch.autograd.grad(first.pow(2).sum(), (x, mlp.fc1.weight, mlp.fc2.weight, mlp.fc2.bias))

    for mine, ref in zip(second_order(True), second_order(False), strict=True):
        torch.testing.assert_close(mine, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())

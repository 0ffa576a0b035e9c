"""Model behaviour: every registry entry (tiny in width), odd sizes, checkpointing, windows, validation."""

from __future__ import annotations

import math

import pytest
import torch

from helpers import diff, randomize, tiny
from swinv2 import create_model, get_config, list_models
from swinv2.layers import attention


@pytest.mark.parametrize("name", list_models())
def test_every_entry_forward_backward_checkpointing(name):
    cfg = get_config(name)
    small = name.startswith(("swinv2_test", "swinv2_nano", "swinv2_pico", "swinv2_micro", "swinv2_mini"))
    img = cfg.img_size if small else 64  # any size works; keep the big entries cheap
    model = randomize(tiny(name, drop_path_rate=0.0).train())
    x = torch.randn(2, 3, img, img)
    out = model(x)
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    out.square().sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert len(grads) == sum(1 for _ in model.parameters()), "every parameter gets a gradient"
    model.zero_grad()
    model.set_grad_checkpointing(True)
    out2 = model(x)
    out2.square().sum().backward()
    assert torch.equal(out, out2)
    for n, p in model.named_parameters():
        assert torch.allclose(p.grad, grads[n], rtol=1e-5, atol=1e-6), n


@pytest.mark.parametrize("size", [(250, 333), (97, 130), (32, 32), (17, 64), (1, 1)])
def test_odd_input_sizes(size):
    model = randomize(tiny("swinv2_tiny_window8_256").eval())
    with torch.no_grad():
        out = model(torch.randn(2, 3, *size))
        feats = model.forward_intermediates(torch.randn(1, 3, *size), intermediates_only=True)
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    h, w = math.ceil(size[0] / 4), math.ceil(size[1] / 4)
    for i, f in enumerate(feats):
        assert f.shape == (1, 8 * 2**i, h, w) and torch.isfinite(f).all()
        h, w = math.ceil(h / 2), math.ceil(w / 2)


def test_padding_is_kept_out_of_attention():
    """A padded image gives the same features as the same image cropped to its real content
    when the padding lands entirely in the window padding (masked keys see no zeros)."""
    model = randomize(tiny("swinv2_tiny_window8_256", window_size=4).eval(), seed=3)
    x = torch.randn(1, 3, 40, 40)  # 10 x 10 tokens: padded to 12 x 12 in stage 1
    with torch.no_grad():
        masked = model.stages[0](model.patch_embed(x))
        unmasked_model = tiny("swinv2_tiny_window8_256", window_size=4, mask_padding=False).eval()
        unmasked_model.load_state_dict(model.state_dict())
        unmasked = unmasked_model.stages[0](unmasked_model.patch_embed(x))
    assert not torch.allclose(masked, unmasked), "padding must change something when it is attended to"
    # In the masked model no real token's attention weights land on padding: check via explicit attention.
    block = model.stages[0].blocks[0]
    from swinv2.layers import attention_mask

    mask = attention_mask((12, 12), (4, 4), (0, 0), (10, 10), True)
    assert mask is not None and (mask[-1] <= -1e4).any() and (mask[0] == 0).all()
    assert block.window == (4, 4)


def test_window_of_one_is_finite():
    model = randomize(tiny("swinv2_tiny_window8_256", window_size=1).eval())
    with torch.no_grad():
        assert torch.isfinite(model(torch.randn(1, 3, 64, 64))).all()


@pytest.mark.parametrize(
    "bad", [torch.randn(3, 64, 64), torch.randn(1, 1, 64, 64), torch.zeros(1, 3, 8, 8, dtype=torch.long)]
)
def test_bad_input_raises_value_error(bad):
    model = tiny("swinv2_tiny_window8_256")
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)|floating"):
        model(bad)


def test_unknown_name_suggests_close_matches():
    with pytest.raises(ValueError, match="did you mean swinv2_tiny_window8_256"):
        create_model("swinv2_tiny_window8_265")
    with pytest.raises(ValueError, match="unknown config field"):
        create_model("swinv2_tiny_window8_256", windowsize=8)


@pytest.mark.parametrize(
    "switches",
    [
        {"norm": "pre", "attention": "dot", "position_bias": "table"},
        {"norm": "res_post", "attention": "cosine", "position_bias": "linear_cpb"},
        {"norm": "pre", "attention": "cosine", "position_bias": "log_cpb"},
    ],
)
def test_ablation_switches(switches):
    model = randomize(tiny("swinv2_tiny_window8_256", **switches).eval())
    names = "".join(n for n, _ in model.named_parameters())
    assert ("logit_scale" in names) == (switches["attention"] == "cosine")
    assert ("rel_pos.table" in names) == (switches["position_bias"] == "table")
    with torch.no_grad():
        assert torch.isfinite(model(torch.randn(1, 3, 64, 64))).all()


def test_default_init_res_post_blocks_are_identities():
    model = create_model("swinv2_tiny_window8_256", embed_dim=8, num_heads=(1, 1, 1, 1), cpb_hidden=16).eval()
    block = model.stages[0].blocks[1]
    x = torch.randn(1, 16, 16, 8)
    with torch.no_grad():
        assert torch.equal(block(x), x)
    assert torch.allclose(block.attn.logit_scale, torch.full_like(block.attn.logit_scale, math.log(10)))


def test_logit_scale_clamped_at_ln_100():
    model = tiny("swinv2_tiny_window8_256")
    attn = model.stages[0].blocks[0].attn
    with torch.no_grad():
        attn.logit_scale.fill_(10.0)
    assert torch.allclose(attn.logit_scale_value(), torch.full_like(attn.logit_scale, 100.0))


@pytest.mark.parametrize("sdpa", [True, False], ids=["sdpa", "matrices"])
def test_fused_equals_explicit_forward_and_grad(monkeypatch, sdpa):
    """Shifted, clipped and padded windows with pretrained windows: the fused path is the explicit one.

    The fused path runs SDPA, or where that loses its own products of pre-scaled q and k; each is forced
    here so that its forward and backward (SDPA's through the folded 4-D layout) are compared.
    """
    monkeypatch.setattr(attention, "sdpa_pays", lambda q, bias: sdpa)
    for img, kw in [(64, {}), (72, {"pretrained_window_sizes": (12, 12, 12, 6)}), (40, {"window_size": 12})]:
        # drop_path off: train mode must be deterministic for the two paths to be compared
        fused = randomize(tiny("swinv2_tiny_window8_256", drop_path_rate=0.0, **kw).double())
        explicit = tiny("swinv2_tiny_window8_256", drop_path_rate=0.0, fused_attention=False, **kw).double()
        explicit.load_state_dict(fused.state_dict())
        x = torch.randn(2, 3, img, img, dtype=torch.float64)
        a, b = fused(x), explicit(x)
        a.sum().backward()
        b.sum().backward()
        print(img, kw, "max |diff|", *diff(a, b))
        assert torch.allclose(a, b, atol=1e-10)
        for (n, p), q in zip(fused.named_parameters(), explicit.parameters()):
            assert torch.allclose(p.grad, q.grad, atol=1e-9), n


def test_fused_inference_takes_sdpa_and_equals_explicit(monkeypatch):
    """fp32 inference on a CPU runs SDPA (folded windows for shifted/padded blocks) and matches explicit."""
    calls = []
    sdpa = attention.F.scaled_dot_product_attention
    monkeypatch.setattr(attention.F, "scaled_dot_product_attention", lambda *a, **k: calls.append(1) or sdpa(*a, **k))
    fused = randomize(tiny("swinv2_tiny_window8_256", pretrained_window_sizes=(12, 12, 12, 6))).eval()
    explicit = tiny("swinv2_tiny_window8_256", fused_attention=False, pretrained_window_sizes=(12, 12, 12, 6))
    explicit.load_state_dict(fused.state_dict())
    x = torch.randn(2, 3, 72, 72)
    with torch.no_grad():
        a, b = fused(x), explicit.eval()(x)
    print("fp32 fused vs explicit max |diff|", *diff(a, b))
    assert len(calls) == sum(len(s.blocks) for s in fused.stages)
    assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize(
    ("device", "dtype", "tokens", "needs_grad", "offered"),
    [
        ("cuda", torch.bfloat16, 576, False, True),  # inference, 24 x 24 windows: cuDNN measured 1.17x
        ("cuda", torch.bfloat16, 256, False, True),
        ("cuda", torch.bfloat16, 64, False, False),  # 8 x 8 windows: 0.95x the memory-efficient kernel
        ("cuda", torch.bfloat16, 576, True, False),  # gradients: cuDNN's NaN bug at N % 128 == 64
        ("cuda", torch.float32, 576, False, False),  # cuDNN has no fp32 kernel
        ("cuda", torch.float16, 576, False, False),  # not measured
        ("cpu", torch.bfloat16, 576, False, False),
    ],
)
def test_cudnn_attention_offered_only_where_measured_faster(device, dtype, tokens, needs_grad, offered):
    assert attention.cudnn_pays(device, dtype, tokens, needs_grad) is offered


def test_sdpa_backends_ask_about_gradients_tokens_and_dtype(monkeypatch):
    """The kernel list follows autograd: any of q, k, v or the bias needing a gradient counts as training
    (a frozen model but for v's bias still backpropagates through the kernel); no_grad does not."""
    asked = []
    monkeypatch.setattr(attention, "cudnn_pays", lambda *args: asked.append(args) or True)
    q, k, v = (torch.randn(1, 2, 144, 8, dtype=torch.bfloat16) for _ in range(3))
    bias = torch.randn(1, 2, 144, 144)
    assert attention.sdpa_backends(q, k, v, bias) == attention.SDPA_BACKENDS_CUDNN
    for needing in (q, k, v, bias):
        attention.sdpa_backends(*(t.requires_grad_(t is needing) for t in (q, k, v, bias)))
        with torch.no_grad():
            attention.sdpa_backends(q, k, v, bias)
    tokens = [("cpu", torch.bfloat16, 144)] * 9
    assert asked == [(*t, g) for t, g in zip(tokens, [False] + [True, False] * 4)]
    assert attention.SDPBackend.CUDNN_ATTENTION not in attention.SDPA_BACKENDS
    assert [attention.SDPBackend.CUDNN_ATTENTION, *attention.SDPA_BACKENDS] == attention.SDPA_BACKENDS_CUDNN


def test_set_input_size_keeps_pretrained_window_and_matches_fresh_model():
    model = randomize(tiny("swinv2_tiny_window8_256"))
    assert model.cfg.pretrained_window_sizes == (8, 8, 8, 8)
    model.set_input_size(img_size=384, window_size=12)
    assert model.cfg.pretrained_window_sizes == (8, 8, 8, 8) and model.stages[0].blocks[0].window == (12, 12)
    fresh = tiny("swinv2_tiny_window8_256", img_size=384, window_size=12, pretrained_window_sizes=8)
    fresh.load_state_dict(model.state_dict())
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), fresh.eval()(x))


def test_window_change_with_v1_table_resizes_by_bicubic():
    model = randomize(tiny("swinv2_tiny_window8_256", position_bias="table"))
    table = model.stages[0].blocks[0].attn.rel_pos.table
    assert table.shape[0] == 15 * 15
    model.set_input_size(window_size=12)
    assert model.stages[0].blocks[0].attn.rel_pos.table.shape[0] == 23 * 23
    with torch.no_grad():
        assert torch.isfinite(model.eval()(torch.randn(1, 3, 96, 96))).all()


def test_cpb_extrapolates_and_window_one_coordinates_are_finite():
    from swinv2.layers import relative_coords_table

    coords = relative_coords_table((16, 16), (8, 8))
    assert coords.abs().max() > 1.0  # larger windows extrapolate past the pretrained range
    assert torch.isfinite(relative_coords_table((1, 1), (1, 1))).all()
    # offsets +-(w - 1) map to +-8 before the log: log2(1 + 8) / log2(8)
    assert relative_coords_table((8, 8), (8, 8)).abs().max() == pytest.approx(math.log2(9) / 3)


def test_extra_norm_every_six_blocks_for_huge_and_giant():
    with torch.device("meta"):
        huge = create_model("swinv2_huge_window12_192")
    extra = [f"{i}.{j}" for i, s in enumerate(huge.stages) for j, b in enumerate(s.blocks) if b.extra_norm is not None]
    assert extra == ["2.5", "2.11", "2.17"]


def test_meta_device_construction_of_giant():
    with torch.device("meta"):
        model = create_model("swinv2_giant_window12to40_192to640")
    assert next(model.parameters()).is_meta
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(3.0e9, rel=0.015)


def test_api_helpers():
    model = tiny("swinv2_tiny_window8_256")
    nwd = model.no_weight_decay()
    assert nwd and all("logit_scale" in n or "rel_pos" in n for n in nwd)
    model.reset_classifier(3)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 3)
    assert model.forward_head(model.forward_features(torch.randn(1, 3, 64, 64)), pre_logits=True).shape == (1, 64)
    final, feats = model.forward_intermediates(torch.randn(1, 3, 64, 64), indices=[1, 3])
    assert [f.shape[1] for f in feats] == [16, 64] and final.shape == (1, 2, 2, 64)

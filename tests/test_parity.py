"""Forward parity with timm, Hugging Face transformers and torchvision on randomised weights.

Every parameter of the reference is randomised (default init makes SwinV2 blocks identities), the state
dict is converted to this project's layout and loaded strictly, and the explicit attention path with
PyTorch's own linear kernels is compared with the reference twice:
- in float64, where both must compute the same function to 1e-10;
- in fp32, where this project's rounding error (against its own float64 output) must stay within twice
  the reference's. fp32 alone cannot prove more: after twelve blocks on random weights each model's fp32
  logits sit 1-2e-5 from its float64 ones, and how far depends on the CPU's kernels.
The fast path (SDPA, oneDNN linear layers in CPU inference) is compared in fp32 at the rounding its folded
logit scale and other summation order allow (see ``test_fused_path_tracks_reference``).
"""

from __future__ import annotations

import copy

import pytest
import torch

from helpers import diff, randomize
from swinv2 import SwinV2, convert_state_dict, create_model
from swinv2.layers.linear import use_onednn
from swinv2.weights.convert import detect_source, to_official

timm = pytest.importorskip("timm")
transformers = pytest.importorskip("transformers")
torchvision = pytest.importorskip("torchvision")

PARITY = 1e-5
# (timm / registry name, overrides): window 8, window 16 (stage 4 clipped to 8), pretrained windows.
SETTINGS = [
    ("swinv2_tiny_window8_256", {}),
    ("swinv2_tiny_window16_256", {}),
    ("swinv2_tiny_window16_256", {"pretrained_window_sizes": (12, 12, 12, 6)}),
]


@pytest.fixture(autouse=True)
def reference_kernels():
    """Reference comparisons run PyTorch's own linear kernels (oneDNN's are checked against them in
    test_fast_paths, and against timm below)."""
    with use_onednn(False):
        yield


def explicit(model: SwinV2) -> SwinV2:
    for module in model.modules():
        if hasattr(module, "fused"):
            module.fused = False
    return model


def load_converted(name: str, ref_sd: dict, **overrides) -> SwinV2:
    model = create_model(name, **overrides).eval()
    model.load_state_dict(convert_state_dict(ref_sd), strict=True)
    return model


def check(name: str, a: torch.Tensor, b: torch.Tensor, tol: float = PARITY) -> None:
    mx, mean = diff(a, b)
    print(f"{name}: max |diff| {mx:.2e}, mean {mean:.2e}")
    assert a.shape == b.shape
    assert mx <= tol, f"{name}: max |diff| {mx:.3e} > {tol:.0e} (mean {mean:.3e})"


def check_models(name: str, ref: torch.nn.Module, mine: torch.nn.Module, x: torch.Tensor, read=None) -> None:
    """``mine`` computes ``ref``'s function (float64, 1e-10) and rounds no worse than it in fp32 (2x its
    fp32 error against float64); ``read`` takes a model's output apart (HF's ``.logits``)."""
    read = read or (lambda out: out)
    with torch.no_grad():
        ref32, mine32 = read(ref(x)), mine(x)
        ref64 = read(copy.deepcopy(ref).double()(x.double()))
        mine64 = copy.deepcopy(mine).double()(x.double())
    check(f"{name} (float64)", ref64, mine64, tol=1e-10)
    fp32_diff, _ = diff(ref32, mine32)
    ref_error, mine_error = diff(ref32.double(), ref64)[0], diff(mine32.double(), mine64)[0]
    print(f"{name} (fp32): max |diff| {fp32_diff:.2e}; vs float64: reference {ref_error:.2e}, ours {mine_error:.2e}")
    assert mine_error <= 2 * ref_error, f"{name}: fp32 error {mine_error:.3e} > 2x the reference's {ref_error:.3e}"


@pytest.mark.parametrize(("name", "overrides"), SETTINGS)
def test_timm(name, overrides):
    kw = {"pretrained_window_sizes": list(overrides["pretrained_window_sizes"])} if overrides else {}
    ref = randomize(timm.create_model(name, **kw).eval())
    assert detect_source(ref.state_dict()) == "timm"
    mine = explicit(load_converted(name, ref.state_dict(), **overrides))
    check_models(f"timm {name} {overrides}", ref, mine, torch.randn(2, 3, 256, 256))


def _hf_config(window: int, pretrained: tuple[int, ...]):
    return transformers.Swinv2Config(
        image_size=256,
        window_size=window,
        embed_dim=96,
        depths=[2, 2, 6, 2],
        num_heads=[3, 6, 12, 24],
        num_labels=1000,
        pretrained_window_sizes=list(pretrained),
    )


@pytest.mark.parametrize(("name", "overrides"), SETTINGS)
def test_hugging_face(name, overrides):
    window = 16 if "window16" in name else 8
    ref = transformers.Swinv2ForImageClassification(
        _hf_config(window, overrides.get("pretrained_window_sizes", (0, 0, 0, 0)))
    )
    randomize(ref.eval())
    assert detect_source(ref.state_dict()) == "hf"
    mine = explicit(load_converted(name, ref.state_dict(), **overrides))
    check_models(f"hf {name} {overrides}", ref, mine, torch.randn(2, 3, 256, 256), read=lambda out: out.logits)


def test_hugging_face_masked_image_modeling_file_loads_encoder():
    ref = transformers.Swinv2ForMaskedImageModeling(_hf_config(8, (0, 0, 0, 0)))
    randomize(ref.eval())
    converted = convert_state_dict(ref.state_dict())
    assert "mask_token" in converted and any(k.startswith("decoder.") for k in converted)
    mine = explicit(create_model("swinv2_tiny_window8_256", num_classes=0).eval())
    encoder = {k: v for k, v in converted.items() if k != "mask_token" and not k.startswith("decoder.")}
    mine.load_state_dict(encoder, strict=True)
    # Per-token features carry fp32 rounding that pooling averages out; float64 shows they are the same function.
    ref, mine = ref.double(), mine.double()
    x = torch.randn(1, 3, 256, 256, dtype=torch.float64)
    with torch.no_grad():
        ref_features = ref.swinv2(x).last_hidden_state  # (B, L, C) after the final norm
        check("hf MIM encoder (float64)", ref_features, mine.forward_features(x).flatten(1, 2), tol=1e-10)


def _torchvision_swin_v2_t(window: int):
    from torchvision.models import swin_transformer as tv

    return tv._swin_transformer(
        patch_size=[4, 4],
        embed_dim=96,
        depths=[2, 2, 6, 2],
        num_heads=[3, 6, 12, 24],
        window_size=[window, window],
        stochastic_depth_prob=0.2,
        weights=None,
        progress=False,
        block=tv.SwinTransformerBlockV2,
        downsample_layer=tv.PatchMergingV2,
    )


@pytest.mark.parametrize("window", [8, 16])
def test_torchvision(window):
    ref = randomize(_torchvision_swin_v2_t(window).eval())
    assert detect_source(ref.state_dict()) == "torchvision"
    # torchvision pads a window larger than the map instead of clipping it, and attends to the padding.
    compat = {"clip_windows": False, "mask_padding": False}
    mine = explicit(load_converted(f"swinv2_tiny_window{window}_256", ref.state_dict(), **compat))
    check_models(f"torchvision window {window}", ref, mine, torch.randn(2, 3, 256, 256))


def test_torchvision_builder_matches_swin_v2_t():
    """The builder above is torchvision's own ``swin_v2_t`` at window 8: same keys and shapes."""
    a, b = _torchvision_swin_v2_t(8).state_dict(), torchvision.models.swin_v2_t().state_dict()
    assert {k: v.shape for k, v in a.items()} == {k: v.shape for k, v in b.items()}


def test_official_layout_round_trip_through_timm_filter():
    """Our official-layout export is what timm's own official->timm filter expects, and loads back."""
    from timm.models.swin_transformer_v2 import checkpoint_filter_fn

    ref = randomize(timm.create_model("swinv2_tiny_window8_256").eval())
    mine = load_converted("swinv2_tiny_window8_256", ref.state_dict())
    official = to_official(mine.state_dict())
    assert "layers.0.downsample.reduction.weight" in official and "head.weight" in official
    assert detect_source(official) == "official"
    timm_model = timm.create_model("swinv2_tiny_window8_256").eval()
    timm_model.load_state_dict(checkpoint_filter_fn({"model": official}, timm_model), strict=True)
    back = explicit(load_converted("swinv2_tiny_window8_256", {"model": official}))
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        check("official via timm filter", ref(x), timm_model(x), tol=0.0)  # the same model, the same weights
    check_models("official -> swinv2", ref, back, x)


def test_official_simmim_file_with_rpe_mlp_and_buffers():
    ref = randomize(timm.create_model("swinv2_tiny_window8_256").eval())
    mine = load_converted("swinv2_tiny_window8_256", ref.state_dict())
    official = to_official(mine.state_dict())
    simmim = {f"encoder.{k.replace('cpb_mlp', 'rpe_mlp')}": v for k, v in official.items() if not k.startswith("head.")}
    simmim["encoder.mask_token"] = torch.zeros(1, 1, 96)
    simmim["encoder.layers.0.blocks.0.attn.relative_coords_table"] = torch.zeros(1, 15, 15, 2)
    simmim["encoder.layers.0.blocks.1.attn_mask"] = torch.zeros(64, 64, 64)
    simmim["decoder.0.weight"] = torch.zeros(32 * 32 * 3, 768, 1, 1)
    converted = convert_state_dict({"model": simmim})
    assert converted.pop("mask_token").shape == (1, 1, 96)
    assert converted.pop("decoder.0.weight").shape[0] == 3072
    expected = {k: v for k, v in mine.state_dict().items() if not k.startswith("head.")}
    assert converted.keys() == expected.keys()
    assert all(torch.equal(converted[k], expected[k]) for k in expected)


@pytest.mark.parametrize(("name", "overrides"), SETTINGS[:2])
def test_fused_path_tracks_reference(name, overrides):
    """SDPA folds the logit scale into q, oneDNN sums products in another order: fp32 noise, not a different
    function."""
    ref = randomize(timm.create_model(name).eval())
    fused = load_converted(name, ref.state_dict())
    x = torch.randn(2, 3, 256, 256)
    with torch.no_grad(), use_onednn(True):
        check(f"fused {name}", ref(x), fused(x), tol=1e-4)


def test_hugging_face_bare_swinv2model_and_named_source():
    """``Swinv2Model`` saves its keys without the ``swinv2.`` prefix and without a classifier."""
    ref = randomize(transformers.Swinv2Model(_hf_config(8, (0, 0, 0, 0))).eval())
    assert not any(k.startswith("swinv2.") for k in ref.state_dict())
    converted = convert_state_dict(ref.state_dict(), source="hf")
    assert converted.keys() == convert_state_dict(ref.state_dict()).keys()
    mine = explicit(create_model("swinv2_tiny_window8_256", num_classes=0).eval())
    mine.load_state_dict(converted, strict=True)
    ref, mine = ref.double(), mine.double()
    x = torch.randn(1, 3, 256, 256, dtype=torch.float64)
    with torch.no_grad():
        check("hf Swinv2Model pooled (float64)", ref(x).pooler_output, mine(x), tol=1e-10)
    with pytest.raises(ValueError, match="source must be one of"):
        convert_state_dict(ref.state_dict(), source="keras")

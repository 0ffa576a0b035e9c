"""The timm conventions that timm's own model suite checks, written here for the swinv2lib_* entries:
pretrained cfgs, ``head_hidden_size`` and ``global_pool``, the getter feature wrapper, FX tracing with
timm's leaf modules, and TorchScript (scripted, saved, reloaded). Every model is randomised first."""

from __future__ import annotations

import warnings

import pytest
import torch

pytest.importorskip("timm")
import timm
from timm.layers import set_layer_config
from timm.models import get_notrace_functions, get_notrace_modules
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

from helpers import randomize
from swinv2.deploy.timm_models import feature_model

NAME = "swinv2lib_test_window4_32"


def _model(name: str = NAME, **kwargs) -> torch.nn.Module:
    return randomize(timm.create_model(name, **kwargs)).eval()


def _report(label: str, ours: torch.Tensor, ref: torch.Tensor) -> float:
    diff = (ours - ref).abs()
    print(f"{label}: max |diff| {diff.max():.3g}, mean {diff.mean():.3g}")
    return diff.max().item()


def _same_gradients(label: str, ours: torch.nn.Module, ref: torch.nn.Module) -> None:
    """Every parameter's gradient, to fp32 rounding of its own scale (the eager step may run other CPU
    kernels, oneDNN's, whose sums round differently)."""
    grads = dict(ours.named_parameters())
    for name, p in ref.named_parameters():
        assert _report(f"{label} grad {name}", grads[name].grad, p.grad) <= 1e-5 * max(1.0, p.grad.abs().max())


def test_released_tags_are_registered_cfgs_that_name_real_modules():
    tagged = timm.list_models("swinv2lib_*", pretrained=True)
    assert "swinv2lib_tiny_window8_256.ms_in1k" in tagged
    assert "swinv2lib_base_window12to24_192to384.ms_in22k_ft_in1k" in tagged
    cfg = timm.get_pretrained_cfg("swinv2lib_base_window12to24_192to384.ms_in22k_ft_in1k").to_dict()
    assert cfg["input_size"] == (3, 384, 384)
    assert cfg["hf_hub_id"] == "timm/swinv2_base_window12to24_192to384.ms_in22k_ft_in1k"
    model = _model()
    modules = dict(model.named_modules())
    cfg = model.pretrained_cfg
    assert cfg["first_conv"] + ".weight" in dict(model.named_parameters()) and cfg["classifier"] in modules
    assert cfg["num_classes"] == model.num_classes and cfg["fixed_input_size"] is False


def test_head_hidden_size_global_pool_and_the_nhwc_token_map():
    model = _model()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        tokens = model.forward_features(x)
        assert tokens.shape[1:3] == model.pretrained_cfg["pool_size"] and model.output_fmt == "NHWC"
        pre = model.forward_head(tokens, pre_logits=True)
        assert pre.shape == (2, model.head_hidden_size)
        model.reset_classifier(0)
        assert torch.equal(model(x), pre)
        model.reset_classifier(5, global_pool="")
        assert model(x).shape == (*tokens.shape[:3], 5)  # the classifier per token
    unpooled = _model(global_pool="")
    assert unpooled(x).shape[:3] == tokens.shape[:3]
    with pytest.raises(ValueError, match="global_pool must be one of"):
        model.reset_classifier(5, global_pool="max")


def test_getter_features_match_the_model_stages():
    model = _model()
    features = timm.create_model(NAME, features_only=True, feature_cls="getter", out_indices=(1, 3))
    features.model.load_state_dict(model.state_dict())
    features.eval()
    x = torch.randn(1, 3, 36, 44)
    with torch.no_grad():
        maps = features(x)
        ref = model.forward_intermediates(x, indices=[1, 3], intermediates_only=True)
    assert [m.shape[1] for m in maps] == features.feature_info.channels()
    assert features.pretrained_cfg["first_conv"] == "patch_embed.proj"
    for got, want in zip(maps, ref):
        assert _report("getter", got, want) == 0


def _fx(model: torch.nn.Module) -> torch.nn.Module:
    """timm's FX route: trace with its registered leaf modules, take the last node."""
    kwargs = dict(leaf_modules=get_notrace_modules(), autowrap_functions=get_notrace_functions())
    train_nodes, eval_nodes = get_graph_node_names(model, tracer_kwargs=kwargs)
    return create_feature_extractor(
        model, train_return_nodes=[train_nodes[-1]], eval_return_nodes=[eval_nodes[-1]], tracer_kwargs=kwargs
    )


def test_fx_traced_model_matches_forward_and_backward():
    model = _model()
    traced = _fx(model)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        (out,) = traced.eval()(x).values()
        assert _report("fx eval", out, model(x)) <= 1e-6
    model.train()
    traced.train()
    model(x).sum().backward()
    (out,) = traced(x).values()
    out.sum().backward()
    _same_gradients("fx", traced, model)


def _script(model: torch.nn.Module, path) -> torch.nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, still what timm tests
        torch.jit.save(torch.jit.script(model), str(path))
        return torch.jit.load(str(path))


def test_torchscript_model_saved_and_reloaded_matches_eager(tmp_path):
    with set_layer_config(scriptable=True):
        model = _model()
    scripted = _script(model, tmp_path / "m.pt")  # runs with no Python source: a real TorchScript graph
    for size in ((32, 32), (45, 37)):  # the second pads the patch grid and the windows, with shift masks
        x = torch.randn(2, 3, *size)
        with torch.no_grad():
            assert _report(f"torchscript {size}", scripted(x), model(x)) <= 1e-5
    with pytest.raises(torch.jit.Error, match=r"expected images of shape \(B, 3, H, W\)"):
        scripted(torch.randn(1, 1, 32, 32))
    model.train()
    scripted.train()
    x = torch.randn(2, 3, 32, 32)
    model(x).sum().backward()
    scripted(x).sum().backward()
    _same_gradients("torchscript", scripted, model)


def test_fx_graph_scripts_too(tmp_path):
    model = _model()
    scripted = _script(_fx(model).eval(), tmp_path / "fx.pt")
    x = torch.randn(1, 3, 40, 40)
    with torch.no_grad():
        out = next(iter(scripted(x).values()))
        assert _report("fx + torchscript", out, model(x)) <= 1e-5


@pytest.mark.parametrize("feature_cls", ["hook", "list", "dict", "fx"])
def test_every_timm_feature_wrapper_gives_the_stage_maps(feature_cls):
    built = timm.create_model(NAME, features_only=True, feature_cfg={"feature_cls": feature_cls}, out_indices=(0, 2))
    model = _model()
    assert built.feature_info.channels() == [model.feature_info[i]["num_chs"] for i in (0, 2)]
    assert built.pretrained_cfg["classifier"] == "head.fc"
    ref_model = _model()  # the wrappers may rewrite the model they wrap: keep one untouched
    features = feature_model(NAME, model, (0, 2), feature_cls).eval()
    x = torch.randn(1, 3, 40, 36)
    with torch.no_grad():
        maps = features(x)
        maps = list(maps.values()) if isinstance(maps, dict) else maps
        ref = ref_model.forward_intermediates(x, indices=[0, 2], intermediates_only=True, output_fmt="NHWC")
    assert len(maps) == 2
    for got, want in zip(maps, ref):
        assert _report(feature_cls, got, want) == 0
    with pytest.raises(ValueError, match="feature_cls must be one of"):
        timm.create_model(NAME, features_only=True, feature_cls="pyramid")

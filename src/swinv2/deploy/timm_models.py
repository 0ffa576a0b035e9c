"""This project's models in timm's registry: ``swinv2_tiny_window8_256`` as ``swinv2lib_tiny_window8_256``.

``import swinv2.deploy.timm_models`` (or :func:`register`) and timm's ``create_model``, its training
script (``--model swinv2lib_tiny_window8_256``), ``resolve_data_config`` and ``features_only=True`` use
them. Weights: ``pretrained=True`` with ``pretrained_cfg_overlay=dict(file=PATH)``, any layout
:func:`swinv2.convert_state_dict` knows (timm's own SwinV2 files included); nothing is downloaded. The
overlay's preprocessing keys (``mean``, ``std``, ``input_size``, ``interpolation``, ``crop_pct``) win over
the file's, as in timm, also when ``in_chans`` adapts the weights to other input channels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from torch import nn

PREFIX = "swinv2lib_"
TIMM_KWARGS = {"num_classes", "in_chans", "img_size", "window_size", "drop_rate", "drop_path_rate", "cache_dir"}
IGNORED = {"pretrained_cfg"}
PREP_KEYS = ("input_size", "mean", "std", "interpolation", "crop_pct", "crop_mode")


def _entry(name: str) -> Callable[..., nn.Module]:
    def create(pretrained: bool = False, pretrained_cfg_overlay: dict | None = None, **kwargs) -> nn.Module:
        from ..pretrained.factory import create_model

        tag = _tag(kwargs.get("pretrained_cfg"))  # timm passes name.tag's tag (or a cfg)

        features_only = kwargs.pop("features_only", False)
        feature_cfg = dict(kwargs.pop("feature_cfg", None) or {})
        out_indices = kwargs.pop("out_indices", feature_cfg.pop("out_indices", None))
        feature_cls = kwargs.pop("feature_cls", feature_cfg.pop("feature_cls", "getter"))
        global_pool = kwargs.pop("global_pool", None)
        for key in IGNORED:
            kwargs.pop(key, None)
        unknown = set(kwargs) - TIMM_KWARGS
        if unknown:
            known = sorted(TIMM_KWARGS)
            raise ValueError(f"{timm_name(name)}: unsupported arguments {sorted(unknown)}; known: {known}")
        overlay = pretrained_cfg_overlay or {}
        file = overlay.get("file")
        if pretrained and not file and not tag:
            raise ValueError(
                f"{timm_name(name)} has no released weights; pass pretrained_cfg_overlay=dict(file=PATH) with weights "
                "of any known layout (official, timm, Hugging Face, torchvision, this project)"
            )
        _size_from_overlay(timm_name(name), overlay, kwargs)
        cache_dir = kwargs.pop("cache_dir", None)  # timm's keyword: the Hugging Face cache to read
        if pretrained and not file:  # a released tag, fetched as swinv2.create_model does
            model = create_model(f"{name}.{tag}", pretrained=True, cache_dir=cache_dir, **kwargs)
        else:
            model = create_model(name, pretrained=file if pretrained else None, **kwargs)
        _apply_overlay(timm_name(name), model, overlay)
        if global_pool is not None:
            model.head.set_pool(global_pool)
        if not features_only:
            return model
        return feature_model(timm_name(name), model, out_indices, feature_cls)

    create.__name__ = create.__qualname__ = timm_name(name)
    create.__module__ = __name__
    create.__doc__ = f"This project's {name} (see `swinv2 models`)."
    return create


def _tag(pretrained_cfg) -> str | None:
    """The released tag timm's ``create_model`` hands over: a string, a ``PretrainedCfg`` or a dict."""
    if isinstance(pretrained_cfg, str):
        return pretrained_cfg or None
    if isinstance(pretrained_cfg, dict):
        return pretrained_cfg.get("tag")
    return getattr(pretrained_cfg, "tag", None)


def feature_model(name: str, model: nn.Module, out_indices, feature_cls="getter") -> nn.Module:
    """``model`` in one of timm's feature wrappers, per stage: ``feature_cls`` ``"getter"`` (the default:
    ``forward_intermediates``, maps NCHW), ``"hook"``, ``"list"``, ``"dict"`` (forward hooks or the stages
    run in turn) or ``"fx"`` (a traced graph), those four with timm's default for SwinV2, NHWC maps; or
    a wrapper class. ``out_indices``: an int (the last n stages) or stage numbers (negative from the end)."""
    from timm.models._features import (
        FeatureDictNet,
        FeatureGetterNet,
        FeatureHookNet,
        FeatureListNet,
    )
    from timm.models._features_fx import FeatureGraphNet

    classes = {"getter": FeatureGetterNet, "hook": FeatureHookNet, "list": FeatureListNet, "dict": FeatureDictNet}
    classes["fx"] = FeatureGraphNet
    n = len(model.stages)
    if out_indices is None:
        indices = tuple(range(n))
    else:
        indices = tuple(range(n - out_indices, n)) if isinstance(out_indices, int) else tuple(out_indices)
    indices = tuple(i % n for i in indices)  # stage numbers (the wrappers index feature_info by them)
    cls = classes.get(feature_cls.lower()) if isinstance(feature_cls, str) else feature_cls
    if cls is None:
        raise ValueError(f"{name}: feature_cls must be one of {sorted(classes)} or a class, got {feature_cls!r}")
    if issubclass(cls, FeatureGetterNet):
        features = cls(model, out_indices=indices, prune=False)
    elif issubclass(cls, (FeatureDictNet, FeatureHookNet)):
        features = cls(model, out_indices=indices, output_fmt=model.output_fmt, flatten_sequential=True)
    else:
        features = cls(model, out_indices=indices, output_fmt=model.output_fmt)
    features.pretrained_cfg = features.default_cfg = model.pretrained_cfg  # as timm's builder sets them
    return features


def _size_from_overlay(name: str, overlay: dict, kwargs: dict) -> None:
    """An overlay's ``input_size`` (C, H, W) sets ``in_chans`` / ``img_size`` unless given (timm does the same
    for its fixed-size SwinV2); given ones must agree, or the preprocessing would not fit the model."""
    if "input_size" not in overlay:
        return
    size = tuple(overlay["input_size"])
    if len(size) != 3:
        raise ValueError(f"{name}: pretrained_cfg_overlay input_size must be (C, H, W), got {size}")
    c, h, w = size
    wanted = {"in_chans": c, "img_size": h if h == w else (h, w)}
    for key, value in wanted.items():
        given = kwargs.setdefault(key, value)
        if _pair(given) != _pair(value):
            raise ValueError(f"{name}: pretrained_cfg_overlay input_size {size} does not match {key}={given}")


def _pair(value) -> tuple:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def _apply_overlay(name: str, model: nn.Module, overlay: dict) -> None:
    """The overlay's preprocessing keys replace the model's (the file's, or the default for its channels):
    they are how a user states the statistics of weights adapted to other input channels."""
    from ..models.preprocess import model_preprocessing

    changes = {k: overlay[k] for k in PREP_KEYS if k in overlay}
    if not changes:
        return
    prep = model_preprocessing(model)
    channels = prep.input_size[0]
    for key in ("mean", "std"):
        if key in changes:
            values = tuple(float(v) for v in changes[key])
            if len(values) not in (1, channels):
                raise ValueError(
                    f"{name}: pretrained_cfg_overlay {key} {values} does not fit in_chans={channels}: give one "
                    "value per input channel, or a single value for all"
                )
            changes[key] = values * channels if len(values) == 1 else values
    changes.pop("input_size", None)  # already the model's size (see _size_from_overlay)
    model.preprocessing = replace(prep, **changes)


def timm_name(name: str) -> str:
    return PREFIX + name.removeprefix("swinv2_")


def pretrained_cfgs() -> dict:
    """timm's ``default_cfgs`` of every entry: the released tags (``swinv2lib_tiny_window8_256.ms_in1k``;
    ``pretrained=True`` fetches them as :func:`swinv2.create_model` does) and a tagless cfg, without
    weights, for the models that have none. Any input size runs, so none is fixed."""
    from timm.models import generate_default_cfgs

    from ..models.config import to_pair
    from ..models.preprocess import Preprocessing
    from ..models.registry import get_config, list_models
    from ..pretrained.tags import TAGS

    cfgs = {}
    for name in list_models():
        cfg = get_config(name)
        h, w = to_pair(cfg.img_size)
        prep = Preprocessing.for_model(cfg)
        released = [t for t in TAGS if t.model == name]
        for tag in released or [None]:
            size = (h, w) if tag is None else (tag.img_size, tag.img_size)
            entry = {
                "url": "",
                "num_classes": cfg.num_classes if tag is None else tag.num_classes,
                "input_size": (cfg.in_chans, *size),
                "pool_size": cfg.stage_feature_sizes(size)[-1],
                "crop_pct": prep.crop_pct if tag is None else tag.crop_pct,
                "interpolation": prep.interpolation if tag is None else tag.interpolation,
                "fixed_input_size": False,
                "mean": prep.mean if tag is None else tag.mean,
                "std": prep.std if tag is None else tag.std,
                "first_conv": "patch_embed.proj",
                "classifier": "head.fc",
                "license": "mit",
            }
            if tag is not None:
                entry["hf_hub_id"] = tag.sources.get("timm", "")  # where the weights live (torchvision's: a URL)
                entry["url"] = tag.sources.get("official") or tag.sources.get("torchvision", "")
            cfgs[timm_name(name) + ("" if tag is None else f".{tag.tag}")] = entry
    return generate_default_cfgs(cfgs)


def register() -> list[str]:
    """Register every model of the registry with timm (idempotent); returns the timm names. The blocks
    are leaves for timm's FX feature extraction (their windows depend on the input's size)."""
    from timm.layers import register_notrace_module
    from timm.models import is_model, register_model

    from ..layers import PatchEmbed
    from ..models.registry import list_models
    from ..models.swinv2 import ClassifierHead, SwinV2Stage

    for module in (PatchEmbed, SwinV2Stage, ClassifierHead):
        register_notrace_module(module)
    names = []
    for name in list_models():
        if not is_model(timm_name(name)):
            register_model(_entry(name))
        names.append(timm_name(name))
    return names


__all__: list[str] = []
default_cfgs = pretrained_cfgs()  # read by timm's register_model from this module
NAMES = register()

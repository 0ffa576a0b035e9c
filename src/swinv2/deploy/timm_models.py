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
TIMM_KWARGS = {"num_classes", "in_chans", "img_size", "window_size", "drop_rate", "drop_path_rate"}
IGNORED = {"pretrained_cfg", "cache_dir", "global_pool"}
PREP_KEYS = ("input_size", "mean", "std", "interpolation", "crop_pct", "crop_mode")


def _entry(name: str) -> Callable[..., nn.Module]:
    def create(pretrained: bool = False, pretrained_cfg_overlay: dict | None = None, **kwargs) -> nn.Module:
        from ..factory import create_model

        features_only = kwargs.pop("features_only", False)
        out_indices = kwargs.pop("out_indices", None)
        kwargs.pop("feature_cfg", None)
        for key in IGNORED:
            kwargs.pop(key, None)
        unknown = set(kwargs) - TIMM_KWARGS
        if unknown:
            known = sorted(TIMM_KWARGS)
            raise ValueError(f"{timm_name(name)}: unsupported arguments {sorted(unknown)}; known: {known}")
        overlay = pretrained_cfg_overlay or {}
        file = overlay.get("file")
        if pretrained and not file:
            raise ValueError(
                f"{timm_name(name)}: nothing is downloaded; pass pretrained_cfg_overlay=dict(file=PATH) with weights "
                "of any known layout (official, timm, Hugging Face, torchvision, this project)"
            )
        _size_from_overlay(timm_name(name), overlay, kwargs)
        model = create_model(name, pretrained=file if pretrained else None, **kwargs)
        _apply_overlay(timm_name(name), model, overlay)
        if not features_only:
            return model
        from timm.models._features import FeatureGetterNet

        n = len(model.stages)
        if out_indices is None:
            indices = tuple(range(n))
        else:  # timm takes an int (the last n stages) or stage numbers (negative ones from the end)
            indices = tuple(range(n - out_indices, n)) if isinstance(out_indices, int) else tuple(out_indices)
        return FeatureGetterNet(model, out_indices=indices, prune=False)

    create.__name__ = create.__qualname__ = timm_name(name)
    create.__module__ = __name__
    create.__doc__ = f"This project's {name} (see `swinv2 models`)."
    return create


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
    from ..deploy.hub import model_preprocessing

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


def register() -> list[str]:
    """Register every model of the registry with timm (idempotent); returns the timm names."""
    from timm.models import is_model, register_model

    from ..registry import list_models

    names = []
    for name in list_models():
        if not is_model(timm_name(name)):
            register_model(_entry(name))
        names.append(timm_name(name))
    return names


__all__: list[str] = []
NAMES = register()

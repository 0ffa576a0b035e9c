"""This project's models in timm's registry: ``swinv2_tiny_window8_256`` as ``swinv2lib_tiny_window8_256``.

``import swinv2.deploy.timm_models`` (or :func:`register`) and timm's ``create_model``, its training
script (``--model swinv2lib_tiny_window8_256``), ``resolve_data_config`` and ``features_only=True`` use
them. Weights: ``pretrained=True`` with ``pretrained_cfg_overlay=dict(file=PATH)``, any layout
:func:`swinv2.convert_state_dict` knows (timm's own SwinV2 files included); nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

PREFIX = "swinv2lib_"
TIMM_KWARGS = {"num_classes", "in_chans", "img_size", "window_size", "drop_rate", "drop_path_rate"}
IGNORED = {"pretrained_cfg", "cache_dir", "global_pool"}


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
        file = (pretrained_cfg_overlay or {}).get("file")
        if pretrained and not file:
            raise ValueError(
                f"{timm_name(name)}: nothing is downloaded; pass pretrained_cfg_overlay=dict(file=PATH) with weights "
                "of any known layout (official, timm, Hugging Face, torchvision, this project)"
            )
        model = create_model(name, pretrained=file if pretrained else None, **kwargs)
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

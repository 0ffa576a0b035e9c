"""``create_model``: build a registered SwinV2 by name, optionally loading weights of any known layout."""

from __future__ import annotations

import json
import os

from ..models.registry import get_config
from ..models.swinv2 import SwinV2


def create_model(
    name: str,
    *,
    pretrained: bool | str | os.PathLike | None = None,
    source: str = "auto",
    strict: bool = False,
    cache_dir: str | None = None,
    revision: str | None = None,
    grad_checkpointing: bool = False,
    sequential_attention: bool | int = False,
    sequential_mlp: bool | int = False,
    **overrides: object,
) -> SwinV2:
    """Build model ``name`` (a registered name, or timm's ``name.tag`` of released weights) with config
    fields replaced by ``overrides``.

    ``pretrained=True`` loads the released weights of the tag (the model's default tag without one; see
    ``swinv2 models --pretrained``) from ``source``: ``auto`` / ``timm`` (timm's Hub repository), ``hf``
    (Microsoft's transformers repository), ``official`` (the GitHub-release file) or ``torchvision``,
    through the Hugging Face cache (``cache_dir``, ``revision``, ``HF_HUB_OFFLINE``) or torch.hub's
    checkpoint folder, with their preprocessing and class names. A tag without ``pretrained`` builds the
    tag's configuration (its class count) with random weights.

    ``pretrained`` may also be a checkpoint file (``.safetensors``, or ``.pth``/``.bin`` read with
    ``weights_only=True``) in any layout :func:`swinv2.convert_state_dict` knows (``source`` names it,
    ``auto`` detects it). A differing class count re-creates the head, other windows rebuild the position
    tables, and files written by this project also bring the windows they were trained with (so Log-CPB
    keeps its coordinates) unless ``pretrained_window_sizes`` is given. Problems are logged by key name;
    ``strict=True`` raises instead. ``grad_checkpointing``, ``sequential_attention`` and ``sequential_mlp``
    are the memory savers of :meth:`SwinV2.set_grad_checkpointing`, :meth:`SwinV2.set_sequential_attention`
    and :meth:`SwinV2.set_sequential_mlp`.
    """
    from .tags import find_tag, split_name

    base, tag = split_name(name)
    if pretrained is True or tag is not None:
        from .released import fetch_released, load_released, released_overrides

        released = find_tag(base, tag)  # before anything is built: an unknown tag or a missing file is named
        fetched = fetch_released(released.name, source, cache_dir, revision) if pretrained is True else None
        model = SwinV2(get_config(base, **released_overrides(released, overrides)))
        if fetched is not None:
            load_released(model, fetched, strict)
    elif pretrained is None or pretrained is False:
        model = SwinV2(get_config(name, **overrides))
    else:
        from ..weights.checkpoint import load_converted, read_checkpoint

        tensors, meta = read_checkpoint(pretrained)
        if "config" in meta and "pretrained_window_sizes" not in overrides:
            trained = json.loads(meta["config"])["pretrained_window_sizes"]
            overrides["pretrained_window_sizes"] = tuple(p if isinstance(p, int) else tuple(p) for p in trained)
        model = SwinV2(get_config(name, **overrides))
        model.load_report = load_converted(model, tensors, source, strict, name=str(pretrained))
        _keep_preprocessing(model, meta)
    if grad_checkpointing:
        model.set_grad_checkpointing(True)
    if sequential_attention:
        model.set_sequential_attention(sequential_attention)
    if sequential_mlp:
        model.set_sequential_mlp(sequential_mlp)
    return model


def _keep_preprocessing(model: SwinV2, meta: dict[str, str]) -> None:
    """Weights written by this project bring their preprocessing and class names (at the model's size;
    adapted to other input channels, the default statistics for those with the file's resize and crop)."""
    from dataclasses import replace

    from ..models.config import to_pair
    from ..models.preprocess import Preprocessing

    if "preprocessing" in meta:
        prep = Preprocessing.from_dict(json.loads(meta["preprocessing"]))
        if prep.input_size[0] == model.cfg.in_chans:
            model.preprocessing = replace(prep, input_size=(model.cfg.in_chans, *to_pair(model.cfg.img_size)))
        else:  # weights adapted to other input channels: their statistics no longer apply, resize and crop do
            keep = {"interpolation": prep.interpolation, "crop_pct": prep.crop_pct}
            model.preprocessing = Preprocessing.for_model(model.cfg, **keep)
    classes = json.loads(meta.get("classes", "null"))
    if classes is not None and len(classes) == model.cfg.num_classes:
        model.classes = classes

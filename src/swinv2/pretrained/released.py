"""``create_model("name.tag", pretrained=True)``: a registered model with its released weights, their
preprocessing, their pretrained windows (the registered ``...12to24...`` models carry them) and their
class names."""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from .fetch import fetch
from .tags import SOURCES, PretrainedTag, find_tag, split_name


def resolve_source(tag: PretrainedTag, source: str) -> str:
    """The source to fetch ``tag`` from: ``auto`` is its first (timm's Hub copy for Microsoft's weights)."""
    if source == "auto":
        return tag.default_source
    if source not in tag.sources:
        where = ", ".join(tag.sources)
        extra = "" if source in SOURCES else f" (sources are {', '.join(SOURCES)})"
        raise ValueError(f"{tag.name} is published by {where}, not {source!r}{extra}")
    return source


def released_overrides(tag: PretrainedTag, overrides: dict) -> dict:
    """Config fields of the released weights (class count, torchvision's padding) under ``overrides``."""
    return {"num_classes": tag.num_classes, **tag.overrides, **overrides}


def fetch_released(
    name: str, source: str = "auto", cache_dir: str | None = None, revision: str | None = None
) -> tuple[PretrainedTag, str, Path, Path | None]:
    """``(tag, source, weights file, config.json or None)`` of the released weights ``name`` (``model.tag``,
    or a model's default tag), fetched before any model is built: a missing file is named at once."""
    tag = find_tag(*split_name(name))
    source = resolve_source(tag, source)
    return (tag, source, *fetch(tag, source, cache_dir, revision))


def load_released(
    model: nn.Module, fetched: tuple[PretrainedTag, str, Path, Path | None], strict: bool = False
) -> nn.Module:
    """Load weights :func:`fetch_released` brought into ``model``, with their preprocessing and classes."""
    from ..weights.checkpoint import load_converted, read_checkpoint

    tag, source, weights, config = fetched
    tensors, _ = read_checkpoint(weights)
    model.load_report = load_converted(model, tensors, source, strict, name=f"{tag.name} ({tag.sources[source]})")
    model.preprocessing = preprocessing(tag, model)
    model.classes = class_names(tag, model.cfg.num_classes, config if source == "hf" else None)
    model.pretrained_tag = {"name": tag.name, "source": source, "location": tag.sources[source]}
    return model


def preprocessing(tag: PretrainedTag, model: nn.Module):
    """The publisher's resize, crop and statistics, at the model's input size."""
    from ..models.config import to_pair
    from ..models.preprocess import Preprocessing

    size = (model.cfg.in_chans, *to_pair(model.cfg.img_size))
    if model.cfg.in_chans != 3:  # weights adapted to other channels: the statistics no longer apply
        return Preprocessing.for_model(model.cfg, interpolation=tag.interpolation, crop_pct=tag.crop_pct)
    return Preprocessing(size, tag.mean, tag.std, tag.interpolation, tag.crop_pct)


def class_names(tag: PretrainedTag, num_classes: int, config: Path | None = None) -> list[str] | None:
    """The names of the released head's classes, where the model kept that head: a transformers
    repository's own ``id2label``, else ImageNet-1K's (torchvision's list) or ImageNet-22K's (timm's, when
    installed); None for a re-created head."""
    if num_classes != tag.num_classes:
        return None
    if config is not None:
        names = id2label_names(json.loads(config.read_text()))
        if names is not None and len(names) == num_classes:
            return names
    return imagenet_class_names(num_classes)


def id2label_names(config: dict) -> list[str] | None:
    """A transformers config's ``id2label`` as a list, or None where it holds only placeholder names."""
    labels = config.get("id2label") or {}
    try:
        names = [labels[k] for k in sorted(labels, key=int)]
    except (TypeError, ValueError):
        return None
    if not names or all(n == f"LABEL_{i}" for i, n in enumerate(names)):
        return None
    return names


def imagenet_class_names(num_classes: int) -> list[str] | None:
    """ImageNet-1K's 1000 names (torchvision's, a core dependency), ImageNet-22K's 21841 (timm's)."""
    if num_classes == 1000:
        from torchvision.models._meta import _IMAGENET_CATEGORIES

        return list(_IMAGENET_CATEGORIES)
    if num_classes == 21841:
        try:
            from timm.data import ImageNetInfo
        except ImportError:
            return None
        info = ImageNetInfo("imagenet-22k")
        return [info.index_to_description(i) for i in range(num_classes)]
    return None

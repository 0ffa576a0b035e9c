"""``save_pretrained``'s writer: a folder holding ``config.json`` and ``model.safetensors`` (the Hub
layout), or the transformers layout of an image model. It takes the model's preprocessing as given, so
that it needs nothing from the model classes: the models call it, and :mod:`swinv2.deploy.hub` reads
what it writes."""

from __future__ import annotations

import json
import os
from pathlib import Path

from torch import nn

from .._version import __version__
from .checkpoint import save_weights, write_json, write_safetensors
from .convert.to_hf import to_hf
from .transformers_layout import image_processor_config, to_transformers_config

CONFIG, WEIGHTS = "config.json", "model.safetensors"
ARCHITECTURES = ("SwinV2", "VideoSwinV2")  # the classes swinv2.deploy.from_pretrained builds again
LAYOUTS = ("swinv2", "transformers")


def description(model: nn.Module, preprocessing, classes=None) -> dict:
    """What ``config.json`` holds for ``model``; ``preprocessing`` is a ``Preprocessing``."""
    arch = type(model).__name__
    if arch not in ARCHITECTURES:
        raise ValueError(f"save_pretrained handles {list(ARCHITECTURES)}, not {arch}")
    names = list(classes) if classes is not None else getattr(model, "classes", None)
    if names is not None and len(names) != model.cfg.num_classes:
        raise ValueError(f"{len(names)} class names for a model with {model.cfg.num_classes} classes")
    return {
        "architecture": arch,
        "config": model.cfg.to_dict(),
        "preprocessing": preprocessing.to_dict(),
        "classes": names,
        "library": "swinv2",
        "library_version": __version__,
    }


def write_pretrained(
    model: nn.Module,
    directory: str | os.PathLike,
    preprocessing,
    classes=None,
    layout: str = "swinv2",
) -> Path:
    """:func:`swinv2.save_pretrained` with the preprocessing resolved (see there)."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    directory = Path(directory)
    if layout == "transformers":
        return _save_transformers(model, directory, preprocessing, classes)
    directory.mkdir(parents=True, exist_ok=True)
    info = description(model, preprocessing, classes)
    meta = {
        "architecture": info["architecture"],
        "preprocessing": json.dumps(info["preprocessing"]),
        "classes": json.dumps(info["classes"]),
    }
    save_weights(model, directory / WEIGHTS, meta)
    write_json(directory / CONFIG, info)
    return directory


def _save_transformers(model: nn.Module, directory: Path, preprocessing, classes) -> Path:
    if type(model).__name__ != "SwinV2":
        raise ValueError(f"the transformers layout holds image SwinV2 models, not {type(model).__name__}")
    config = to_transformers_config(model, classes)  # refuses first: nothing is written for such a model
    directory.mkdir(parents=True, exist_ok=True)
    write_safetensors(to_hf(model.state_dict(), head=model.cfg.num_classes > 0), directory / WEIGHTS, {"format": "pt"})
    write_json(directory / CONFIG, config)
    write_json(directory / "preprocessor_config.json", image_processor_config(preprocessing))
    return directory

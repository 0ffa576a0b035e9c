"""Checkpoint layouts -> this project's: pure ``state_dict -> state_dict`` functions plus detection.

Supported sources: ``official`` (Microsoft's Swin-Transformer and SimMIM files), ``timm``, ``hf``
(Hugging Face transformers), ``torchvision`` and ``swinv2`` (this project, passed through).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from .common import StateDict, drop_buffers, unwrap
from .hf import from_hf
from .official import from_official, to_official
from .timm import from_timm
from .torchvision import from_torchvision

CONVERTERS: dict[str, Callable[[StateDict], StateDict]] = {
    "swinv2": drop_buffers,
    "official": from_official,
    "timm": from_timm,
    "hf": from_hf,
    "torchvision": from_torchvision,
}
SOURCES = ("auto", *CONVERTERS)


def detect_source(sd: Mapping) -> str:
    """Name the layout of a state dict from its keys; ``ValueError`` when it is none of the known ones."""
    keys = list(sd)
    if any(k.startswith("stages.") for k in keys):
        return "swinv2"
    if any("embeddings.patch_embeddings." in k or ".attention.self." in k for k in keys):
        return "hf"
    if any(k.startswith("features.0.0.") for k in keys):
        return "torchvision"
    if any(k.startswith("encoder.layers.") for k in keys):
        return "official"  # SimMIM pretraining file
    if any(k.startswith("layers.") for k in keys):
        # The official layout ends stage 0 with patch merging; timm starts stage 1 with it.
        return "official" if "layers.0.downsample.reduction.weight" in sd or "head.weight" in sd else "timm"
    raise ValueError(
        f"unrecognised checkpoint layout (first keys: {keys[:5]}); expected SwinV2 weights of this project, "
        "Microsoft's Swin-Transformer or SimMIM, timm, Hugging Face or torchvision"
    )


def convert_state_dict(state_dict: Mapping, source: str = "auto") -> StateDict:
    """Return ``state_dict`` (any known layout, possibly wrapped as ``{"model": ...}``) in this project's layout.

    Rebuildable buffers (position indices, coordinate tables, shift masks) are dropped; SimMIM's
    ``mask_token`` and ``decoder.*`` are kept under those names for the pretraining model.
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    sd = unwrap(state_dict)
    if source == "auto":
        source = detect_source(sd)
    return CONVERTERS[source](sd)


__all__ = ["CONVERTERS", "SOURCES", "convert_state_dict", "detect_source", "to_official", "unwrap"]

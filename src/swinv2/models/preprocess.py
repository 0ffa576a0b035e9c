"""How an image becomes the model's input: size, interpolation, centre crop, normalisation.

Stored with the weights (``config.json``, ``model.safetensors`` metadata, ONNX metadata) so that
``swinv2 predict``, ``from_pretrained`` users, timm's ``resolve_data_config`` and exported models all
prepare images the way the model was evaluated. The keys are timm's ``pretrained_cfg`` keys.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass

INTERPOLATIONS = ("bicubic", "bilinear", "nearest")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """Resize the shorter side to ``size / crop_pct`` with ``interpolation``, centre-crop ``size``,
    scale to [0, 1], normalise with ``mean`` and ``std``."""

    input_size: tuple[int, int, int]  # (C, H, W)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    interpolation: str = "bicubic"
    crop_pct: float = 0.9
    crop_mode: str = "center"

    def __post_init__(self) -> None:
        channels = self.input_size[0]
        if len(self.input_size) != 3 or len(self.mean) != channels or len(self.std) != channels:
            raise ValueError(f"input_size (C, H, W) {self.input_size} does not match mean {self.mean} / std {self.std}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}")
        if not 0 < self.crop_pct <= 1 or self.crop_mode != "center":
            raise ValueError(f"crop_pct must be in (0, 1] and crop_mode 'center', got {self.crop_pct} {self.crop_mode}")

    @classmethod
    def for_model(cls, cfg, **changes: object) -> Preprocessing:
        """The default for a model config: its size and channels, ImageNet statistics for RGB (timm's
        SwinV2 defaults: bicubic, crop 0.9), 0.5 / 0.5 otherwise."""
        from .config import to_pair

        (h, w), c = to_pair(cfg.img_size), cfg.in_chans
        stats = {} if c == 3 else {"mean": (0.5,) * c, "std": (0.5,) * c}
        return cls(**{"input_size": (c, h, w), **stats, **changes})

    @classmethod
    def from_dict(cls, data: dict) -> Preprocessing:
        fields = ("input_size", "mean", "std", "interpolation", "crop_pct", "crop_mode")
        return cls(**{k: tuple(data[k]) if isinstance(data[k], list) else data[k] for k in fields if k in data})

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @property
    def size(self) -> tuple[int, int]:
        return self.input_size[1], self.input_size[2]

    def transform(self, keep_aspect: bool = False) -> Callable:
        """A torchvision transform from a ``(C, H, W)`` uint8 tensor or PIL image to the model's input.

        ``keep_aspect`` (for a model that takes any size): the shorter side is resized to the input's and
        nothing is cropped, so the image keeps its aspect ratio."""
        import torch
        from torchvision.transforms import InterpolationMode, v2

        h, w = self.size
        mode = InterpolationMode(self.interpolation)
        if keep_aspect:
            geometry = [v2.Resize(min(h, w), interpolation=mode, antialias=True)]
        else:
            resize = (round(h / self.crop_pct), round(w / self.crop_pct)) if h != w else round(h / self.crop_pct)
            geometry = [v2.Resize(resize, interpolation=mode, antialias=True), v2.CenterCrop((h, w))]
        return v2.Compose(
            [v2.ToImage(), *geometry, v2.ToDtype(torch.float32, scale=True), v2.Normalize(self.mean, self.std)]
        )


def model_preprocessing(model) -> Preprocessing:
    """The model's preprocessing: what it was loaded with, else the default for its config."""
    prep = getattr(model, "preprocessing", None)
    return prep if prep is not None else Preprocessing.for_model(model.cfg)

"""Named video SwinV2 configurations and ``create_video_model``.

T/S/B follow the image family (widths, depths, heads) with 2 x 4 x 4 patches and 8 x 8 x 8 windows on
16-frame 256 px clips; the pico size trains on Moving Fashion-MNIST (8 grey frames of 64 px) on a CPU.
"""

from __future__ import annotations

import difflib
import json
import os

from ..models.registry import SIZES
from .config import VideoSwinV2Config
from .model import VideoSwinV2

VIDEO_MODELS: dict[str, VideoSwinV2Config] = {}

for _size in ("tiny", "small", "base"):
    _dim, _depths, _heads, _ = SIZES[_size]
    VIDEO_MODELS[f"swinv2_video_{_size}_window8_256"] = VideoSwinV2Config(
        img_size=256,
        num_frames=16,
        embed_dim=_dim,
        depths=_depths,
        num_heads=_heads,
        window_size=(8, 8, 8),
        drop_path_rate={"tiny": 0.1, "small": 0.2, "base": 0.3}[_size],
    )

VIDEO_MODELS["swinv2_video_pico_window4x8_64"] = VideoSwinV2Config(
    img_size=64,
    num_frames=8,
    in_chans=1,
    num_classes=8,
    embed_dim=32,
    depths=(2, 2, 2),
    num_heads=(1, 2, 4),
    window_size=(4, 8, 8),
    drop_path_rate=0.0,
    cpb_hidden=128,
)


def list_video_models() -> list[str]:
    return sorted(VIDEO_MODELS)


def get_video_config(name: str, **overrides: object) -> VideoSwinV2Config:
    """The named configuration with fields replaced; unknown names suggest the closest ones."""
    if name not in VIDEO_MODELS:
        close = difflib.get_close_matches(name, list(VIDEO_MODELS), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(list_video_models())}"
        raise ValueError(f"unknown video model {name!r}{hint}")
    cfg = VIDEO_MODELS[name]
    unknown = set(overrides) - set(cfg.to_dict())
    if unknown:
        raise ValueError(f"unknown config field(s) {sorted(unknown)}; valid: {sorted(cfg.to_dict())}")
    if "depths" in overrides and "pretrained_window_sizes" not in overrides:
        overrides["pretrained_window_sizes"] = 0
    return cfg.replace(**overrides) if overrides else cfg


def create_video_model(
    name: str, *, pretrained: str | os.PathLike | None = None, strict: bool = False, **overrides: object
) -> VideoSwinV2:
    """Build video model ``name``; ``pretrained`` is a video checkpoint of this project (built with the
    architecture saved in it, then ``overrides``), or an image SwinV2 checkpoint written by this project
    (its config travels with it), which is inflated into ``name``'s clip size, patch and window."""
    if pretrained is None:
        return VideoSwinV2(get_video_config(name, **overrides))
    from ..weights.checkpoint import load_state_dict_into, read_checkpoint
    from ..weights.convert.common import unwrap

    tensors, meta = read_checkpoint(pretrained)
    tensors = unwrap(tensors)  # {"model": ...} and the like, as training scripts save them
    saved = json.loads(meta["config"]) if "config" in meta else None
    if saved is not None and "num_frames" not in saved:  # an image model: inflate it
        from ..models.config import SwinV2Config
        from ..models.swinv2 import SwinV2
        from .inflate import inflate

        image = SwinV2(SwinV2Config(**saved))
        load_state_dict_into(image, tensors, strict=True)
        target = get_video_config(name, **overrides)
        keep = ("img_size", "num_frames", "patch_size", "window_size", "num_classes", "in_chans", "drop_path_rate")
        video = inflate(image, strict=False, **{k: getattr(target, k) for k in keep})  # its report: load_report
        return refuse_partial_load(video, pretrained)
    if saved is None and any(t.dim() == 4 for t in tensors.values()):  # a 2-D patch convolution
        raise ValueError(
            f"{pretrained} holds an image model without this project's config (official, timm, Hugging Face or "
            "torchvision layout), so its architecture is unknown here: inflate it with "
            "swinv2.video.inflate(path, image_name=NAME, **clip_settings), NAME the image model it holds"
        )
    if saved is not None:  # a video model of this project: its own architecture, then the overrides
        model = VideoSwinV2(VideoSwinV2Config(**saved).replace(**overrides))
    else:
        model = VideoSwinV2(get_video_config(name, **overrides))
    model.load_report = load_state_dict_into(model, tensors, strict=strict)
    return refuse_partial_load(model, pretrained)


def refuse_partial_load(model: VideoSwinV2, pretrained: str | os.PathLike) -> VideoSwinV2:
    """``model`` if every weight of ``pretrained`` found its place (a head re-created for another class
    count, resized tables and adapted input channels are fine); else the ``ValueError`` of
    :func:`~swinv2.weights.checkpoint.refuse_partial_start`, as for image runs."""
    from ..weights.checkpoint import refuse_partial_start

    where = f"video model (patch {model.cfg.patch_size}, window {model.cfg.window_size})"
    refuse_partial_start(model.load_report, pretrained, where)
    return model

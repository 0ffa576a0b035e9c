"""Initialise a video SwinV2 from an image SwinV2 (any checkpoint layout the image model loads).

* The patch embedding is inflated over time and divided by the temporal patch size, so a clip of
  identical frames embeds exactly as one frame does.
* Log-CPB's meta network gets a time input whose first-layer weights are zero: for a time offset of 0 it
  gives the image model's bias, and at the start the bias ignores time altogether.
* Swin V1 tables are repeated over time offsets (resized first if the spatial window changes).
* Every other tensor has the same name and shape in both models. The video model keeps the image model's
  pretrained spatial windows, so Log-CPB extrapolates to a larger video window as it does for images.

With these, the video model's features on a clip of identical frames equal the image model's features
of the frame at every time step (``tests/test_video.py``).
"""

from __future__ import annotations

import logging
import math
import os

import torch

from ..layers.position import resize_position_table
from ..models.config import to_pair
from ..models.swinv2 import SwinV2
from ..weights.checkpoint import LoadReport, load_state_dict_into
from .config import VideoSwinV2Config
from .model import VideoSwinV2

log = logging.getLogger("swinv2")


def video_config_from_image(image: SwinV2, **overrides: object) -> VideoSwinV2Config:
    """The video counterpart of ``image``'s architecture (same widths, depths, heads and switches);
    ``overrides`` set the clip size, 3-D patch and window."""
    c = image.cfg
    if c.extra_norm_every:
        raise ValueError("inflating models with extra main-branch norms (H, G) is not supported")
    window = overrides.pop("window_size", None) or (8, *to_pair(c.window_size))
    fields = dict(
        img_size=c.img_size,
        in_chans=c.in_chans,
        num_classes=c.num_classes,
        embed_dim=c.embed_dim,
        depths=c.depths,
        num_heads=c.num_heads,
        window_size=window,
        mlp_ratio=c.mlp_ratio,
        qkv_bias=c.qkv_bias,
        drop_path_rate=c.drop_path_rate,
        norm=c.norm,
        attention=c.attention,
        position_bias=c.position_bias,
        clip_windows=c.clip_windows,
        mask_padding=c.mask_padding,
        cpb_hidden=c.cpb_hidden,
    )
    fields.update(overrides)
    cfg = VideoSwinV2Config(**fields)
    if "pretrained_window_sizes" not in overrides:  # time from the video window, space from the image model
        pretrained = [(w[0], *p) for w, p in zip(_used_windows(cfg), image._pretrained_windows)]
        cfg = cfg.replace(pretrained_window_sizes=tuple(pretrained))
    return cfg


def _used_windows(cfg: VideoSwinV2Config):
    from .model import resolve_windows

    return resolve_windows(cfg)[0]


def inflate_state_dict(image_sd: dict[str, torch.Tensor], video: VideoSwinV2) -> dict[str, torch.Tensor]:
    """Image-model tensors (this project's layout) reshaped for ``video``."""
    own = video.state_dict()
    out = {}
    for key, value in image_sd.items():
        target = own.get(key)
        if target is None or target.shape == value.shape:
            out[key] = value
        elif key == "patch_embed.proj.weight" and value.dim() == 4:
            t = target.shape[2]
            out[key] = value.unsqueeze(2).repeat(1, 1, t, 1, 1) / t
        elif key.endswith("rel_pos.mlp.0.weight") and target.shape[1] == value.shape[1] + 1:
            out[key] = torch.cat([value.new_zeros(value.shape[0], 1), value], dim=1)  # time column first
        elif key.endswith("rel_pos.table"):
            out[key] = _inflate_table(value, target, video, key)
        else:
            out[key] = value  # reported as mis-shaped by the loader
    return out


def _inflate_table(table: torch.Tensor, target: torch.Tensor, video: VideoSwinV2, key: str) -> torch.Tensor:
    block = video.get_submodule(key.removesuffix(".attn.rel_pos.table"))
    wt, wh, ww = block.attn.rel_pos.window
    side = math.isqrt(table.shape[0])  # square image windows: (2w - 1)^2 offsets
    old = ((side + 1) // 2,) * 2
    heads = table.shape[1]
    grid = resize_position_table(table, old, (wh, ww)).view(2 * wh - 1, 2 * ww - 1, heads)
    if old[0] <= wh and old[1] <= ww:
        # The image model's window was smaller (a clipped last stage): its exact table becomes the centre,
        # which is what the video model crops when its window is clipped the same way.
        dh, dw = wh - old[0], ww - old[1]
        grid[dh : dh + 2 * old[0] - 1, dw : dw + 2 * old[1] - 1] = table.view(2 * old[0] - 1, 2 * old[1] - 1, heads)
    return grid.reshape(1, -1, heads).repeat(2 * wt - 1, 1, 1).reshape(target.shape)


def inflate(
    image: SwinV2 | str | os.PathLike, image_name: str | None = None, strict: bool = True, **video_overrides: object
) -> VideoSwinV2:
    """A video SwinV2 initialised from an image model (a built ``SwinV2``, or a checkpoint file with the
    registered ``image_name`` it belongs to). ``video_overrides`` set clip size, patch and window."""
    if not isinstance(image, SwinV2):
        if image_name is None:
            raise ValueError("inflating from a file needs image_name, the registered image model it holds")
        from ..pretrained.factory import create_model

        image = create_model(image_name, pretrained=image, strict=strict)
    video = VideoSwinV2(video_config_from_image(image, **video_overrides))
    report: LoadReport = load_state_dict_into(video, inflate_state_dict(image.state_dict(), video))
    if strict and not report.clean:
        raise ValueError(f"image weights do not fit the video model: {report.summary()}")
    if report.mismatched or report.missing:  # strict=False: the caller decides, but it must not go unseen
        log.warning("inflated video model with weights left random: %s", report.summary())
    else:
        log.info("inflated video model: %s", report.summary())
    video.load_report = report
    return video

"""SwinV2 as a dense-prediction backbone: named NCHW feature maps at strides 4, 8, 16 and 32.

Detection and segmentation heads read every stage, so each output stage gets its own LayerNorm (as Swin
detection backbones do) and the classifier's final norm and head are dropped. The backbone declares its
channels and strides, accepts any input size (the stages pad to their windows) and any window: dense
tasks run larger images than classification and usually want larger windows, which Log-CPB transfers to.
"""

from __future__ import annotations

import json
import logging
import os
from collections import OrderedDict

import torch
from torch import nn

from ..models.config import SwinV2Config
from ..models.registry import get_config
from ..models.swinv2 import SwinV2
from ..weights.checkpoint import LoadReport, load_state_dict_into, read_checkpoint
from ..weights.convert import convert_state_dict

log = logging.getLogger("swinv2")
CLASSIFIER_ONLY = ("norm.", "head.")  # the final norm and head of a classifier: not part of a backbone


class SwinV2Backbone(nn.Module):
    """Patch embedding and stages of a SwinV2, returning ``{"stage<i>": (B, C_i, H/s_i, W/s_i)}``.

    ``out_indices`` picks the stages returned (default all); ``out_channels`` and ``strides`` list theirs.
    """

    def __init__(self, cfg: SwinV2Config, out_indices: tuple[int, ...] | None = None):
        super().__init__()
        body = SwinV2(cfg.replace(num_classes=0))
        self.cfg = body.cfg
        self.patch_embed, self.pos_drop, self.stages = body.patch_embed, body.pos_drop, body.stages
        self._body = [body]  # for its setters; a list keeps it out of the module tree and the state dict
        n = len(cfg.depths)
        self.out_indices = tuple(range(n)) if out_indices is None else tuple(out_indices)
        if not self.out_indices or any(not 0 <= i < n for i in self.out_indices):
            raise ValueError(f"out_indices must be stage numbers in 0..{n - 1}, got {self.out_indices}")
        self.out_channels = [cfg.embed_dim * 2**i for i in self.out_indices]
        self.strides = [cfg.patch_size * 2**i for i in self.out_indices]
        self.feature_names = [f"stage{i + 1}" for i in self.out_indices]
        self.out_norms = nn.ModuleList(nn.LayerNorm(c) for c in self.out_channels)

    def forward(self, images: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        self._body[0]._check_input(images)
        x = self.pos_drop(self.patch_embed(images))
        features: OrderedDict[str, torch.Tensor] = OrderedDict()
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.out_indices:
                k = self.out_indices.index(i)
                features[self.feature_names[k]] = self.out_norms[k](x).permute(0, 3, 1, 2).contiguous()
            if i == self.out_indices[-1]:
                break
        return features

    def set_window(self, window_size: int | tuple[int, int]) -> None:
        """Attend within this window from now on; Log-CPB keeps the windows the weights were trained with."""
        self._body[0].set_input_size(window_size=window_size)
        self.cfg = self._body[0].cfg

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self._body[0].set_grad_checkpointing(enable)

    def set_memory_savers(
        self, checkpointing: bool, sequential_attention: bool | int, sequential_mlp: bool | int
    ) -> None:
        """The memory savers of ``swinv2 train`` (docs/scale.md): same results, less memory, more compute."""
        body = self._body[0]
        body.set_grad_checkpointing(checkpointing)
        body.set_sequential_attention(sequential_attention)
        body.set_sequential_mlp(sequential_mlp)

    def no_weight_decay(self) -> set[str]:
        return self._body[0].no_weight_decay()

    def load_pretrained(self, path: str | os.PathLike, source: str = "auto") -> LoadReport:
        """Load a classification or SimMIM checkpoint of any known layout (position tables adapt to the
        window; the classifier's norm and head, and SimMIM's decoder, are left out). Logs the report."""
        tensors, _ = read_checkpoint(path)
        return self.load_tensors(tensors, source, name=str(path))

    def load_tensors(self, tensors: dict[str, torch.Tensor], source: str = "auto", name: str = "") -> LoadReport:
        converted = convert_state_dict(tensors, source)
        kept = {k: v for k, v in converted.items() if not k.startswith(CLASSIFIER_ONLY)}
        report = load_state_dict_into(self, kept)
        report.ignored += sorted(set(converted) - set(kept))
        report.missing = [k for k in report.missing if not k.startswith("out_norms.")]  # new in a backbone
        (log.info if report.clean else log.warning)("backbone loaded %s: %s", name, report.summary())
        return report


def create_backbone(
    name: str,
    *,
    pretrained: str | os.PathLike | None = None,
    out_indices: tuple[int, ...] | None = None,
    **overrides: object,
) -> SwinV2Backbone:
    """Backbone of registered model ``name`` with config ``overrides`` (e.g. ``window_size``, ``img_size``).

    With ``pretrained``, a file written by this project also brings the windows it was trained with, so
    Log-CPB normalises by them (unless ``pretrained_window_sizes`` is given).
    """
    tensors, meta = read_checkpoint(pretrained) if pretrained is not None else ({}, {})
    if "config" in meta and "pretrained_window_sizes" not in overrides:
        trained = json.loads(meta["config"])["pretrained_window_sizes"]
        overrides["pretrained_window_sizes"] = tuple(p if isinstance(p, int) else tuple(p) for p in trained)
    backbone = SwinV2Backbone(get_config(name, **overrides), out_indices)
    if pretrained is not None:
        backbone.load_report = backbone.load_tensors(tensors, name=str(pretrained))
    return backbone

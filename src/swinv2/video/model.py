"""Video SwinV2: the image model with a time axis (the paper's Kinetics-400 model, 86.8% top-1).

Clips ``(B, C, T, H, W)`` are cut into 3-D patches (e.g. 2 x 4 x 4), and every block attends within 3-D
windows ``(t, h, w)``, every second one shifted by half a window in time and space. The position bias is
SwinV2's continuous one over 3-D relative coordinates (log-spaced), attention is scaled cosine and
normalisation res-post-norm, as in the image model, whose layers are reused. Patch merging halves space
only. Blocks work on channels-last maps ``(B, T, H, W, C)``; any clip length and size is accepted.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..layers import PatchMerging, effective_window
from ..layers.symbolic_windows import is_symbolic
from ..layers.window_nd import attention_mask, pad_to_window, window_partition, window_reverse
from ..models.swinv2 import ClassifierHead, SwinV2Base, SwinV2Block
from .config import Triple, VideoSwinV2Config, to_triple


class PatchEmbed3d(nn.Module):
    """Non-overlapping 3-D patches: ``Conv3d`` then LayerNorm, ``(B, C, T, H, W)`` -> ``(B, T', H', W', D)``."""

    def __init__(self, patch_size: Triple, in_chans: int, embed_dim: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = [(-s) % p for s, p in zip(x.shape[2:], self.patch_size)]
        if is_symbolic(pads) or any(pads):
            x = F.pad(x, (0, pads[2], 0, pads[1], 0, pads[0]))
        return self.norm(self.proj(x).permute(0, 2, 3, 4, 1))


class SpatialPatchMerging(PatchMerging):
    """Patch merging of each frame: ``(B, T, H, W, C)`` -> ``(B, T, H/2, W/2, 2C)`` (time is kept)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t = x.shape[:2]
        merged = super().forward(x.flatten(0, 1))
        return merged.view(b, t, *merged.shape[1:])


class VideoSwinV2Block(SwinV2Block):
    """The image block with 3-D windows: (shifted) window attention over (t, h, w), then the MLP."""

    def __init__(
        self,
        cfg: VideoSwinV2Config,
        dim: int,
        num_heads: int,
        shifted: bool,
        pretrained_window: Triple,
        drop_path: float,
    ):
        super().__init__(cfg, dim, num_heads, cfg.window_size, shifted, pretrained_window, drop_path, extra_norm=False)

    _to_window = staticmethod(to_triple)
    _make_mask = staticmethod(attention_mask)

    def _window_attention(self, x: torch.Tensor) -> torch.Tensor:
        if is_symbolic(x.shape[1:4]):
            return self._symbolic_window_attention(x)
        sizes = tuple(x.shape[1:4])
        window, shift = map(tuple, effective_window(sizes, self.window, self.shift, self.clip_windows))
        x, pads = pad_to_window(x, window)
        padded = tuple(s + p for s, p in zip(sizes, pads))
        dims = (1, 2, 3)
        if any(shift):
            x = torch.roll(x, shifts=tuple(-s for s in shift), dims=dims)
        mask = self._mask(padded, window, shift, sizes, x.device)
        x = window_reverse(self.attn(window_partition(x, window), window, mask), window, padded)
        if any(shift):
            x = torch.roll(x, shifts=shift, dims=dims)
        return x[:, : sizes[0], : sizes[1], : sizes[2]] if any(pads) else x


class VideoSwinV2Stage(nn.Module):
    """Optional spatial patch merging, then blocks alternating plain and shifted 3-D windows."""

    def __init__(self, cfg: VideoSwinV2Config, index: int, pretrained_window: Triple, drop_paths: list[float]):
        super().__init__()
        dim = cfg.embed_dim * 2**index
        self.downsample = SpatialPatchMerging(dim // 2, norm_first=cfg.merge == "v1") if index > 0 else nn.Identity()
        self.blocks = nn.ModuleList(
            VideoSwinV2Block(cfg, dim, cfg.num_heads[index], j % 2 == 1, pretrained_window, drop_paths[j])
            for j in range(cfg.depths[index])
        )
        shared: dict[tuple, torch.Tensor | None] = {}  # one mask per geometry for the whole stage
        for block in self.blocks:
            block._masks = shared
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        for block in self.blocks:
            use = self.grad_checkpointing and torch.is_grad_enabled()
            x = checkpoint(block, x, use_reentrant=False) if use else block(x)
        return x


def resolve_windows(cfg: VideoSwinV2Config) -> tuple[list[Triple], list[Triple]]:
    """Per stage: the window used at the config's clip size, and the window Log-CPB normalises by."""
    used, pretrained = [], []
    for size, pws in zip(cfg.stage_sizes(), cfg.pretrained_window_sizes):
        win, _ = effective_window(size, cfg.window_size, (0, 0, 0), cfg.clip_windows)
        used.append(tuple(win))
        pretrained.append(to_triple(pws) if not isinstance(pws, int) or pws > 0 else tuple(win))
    return used, pretrained


class VideoSwinV2(SwinV2Base):
    """Video classifier: 3-D patch embedding, stages, final LayerNorm, average pool over (T, H, W), head.

    Shares the image model's initialisation, memory savers (checkpointing, sequential attention and MLP),
    weight-decay exclusions, ``reset_classifier`` and forward pass (:class:`SwinV2Base`).
    """

    def __init__(self, cfg: VideoSwinV2Config):
        super().__init__()
        _, pretrained = resolve_windows(cfg)
        self.cfg = cfg.replace(pretrained_window_sizes=tuple(pretrained))
        self.patch_embed = PatchEmbed3d(cfg.patch_size, cfg.in_chans, cfg.embed_dim)
        self.pos_drop = nn.Dropout(cfg.drop_rate)
        rates = torch.linspace(0, cfg.drop_path_rate, sum(cfg.depths), device="cpu").tolist()
        starts = [sum(cfg.depths[:i]) for i in range(len(cfg.depths))]
        self.stages = nn.ModuleList(
            VideoSwinV2Stage(cfg, i, pretrained[i], rates[starts[i] : starts[i] + d]) for i, d in enumerate(cfg.depths)
        )
        self.num_features = cfg.num_features
        self.norm = nn.LayerNorm(self.num_features)
        self.head = ClassifierHead(self.num_features, cfg.num_classes, cfg.drop_rate)
        self.init_weights()

    def set_window(self, window_size: int | tuple[int, ...]) -> None:
        """Attend within this ``(t, h, w)`` window from now on; Log-CPB keeps its pretrained windows, V1
        tables are re-parameterised (bicubic / trilinear) as V1 fine-tuning does."""
        self.cfg = self.cfg.replace(window_size=to_triple(window_size))
        for stage in self.stages:
            for block in stage.blocks:
                block.set_window(self.cfg.window_size)
        self._resize_position_tables(resolve_windows(self.cfg)[0])

    def _final_map(self, img_size: tuple[int, int]) -> tuple[int, ...]:
        return self.cfg.stage_sizes(img_size=img_size)[-1]  # (t, h, w)

    def _check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or x.ndim != 5 or x.shape[1] != self.cfg.in_chans:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"expected clips of shape (B, {self.cfg.in_chans}, T, H, W), got {shape}")
        if not x.is_floating_point():
            raise ValueError(f"expected a floating-point clip tensor, got dtype {x.dtype}")

"""SimMIM: masked image modelling with a SwinV2 encoder (Xie et al., CVPR 2022).

Random square regions of the image are masked at the token level, a learnable mask token replaces their
patch embeddings, and a one-layer decoder (1x1 convolution + PixelShuffle back to full resolution)
regresses the raw pixels. The L1 loss counts masked pixels only. SwinV2's configurations optionally
normalise the target per pixel by the mean and variance of its neighbourhood.

The encoder is a plain :class:`SwinV2`, so ``simmim.encoder.state_dict()`` is what fine-tuning loads.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .swinv2 import SwinV2


class MaskGenerator:
    """Random masks over a grid of ``mask_patch`` cells, expressed on the encoder's token grid.

    ``ceil(cells * ratio)`` cells are masked per image. A mask patch must be a multiple of the model's
    patch; when the image is not a multiple of the mask patch (28 px Fashion-MNIST with 8 px cells) the
    cell grid covers it and the mask is cropped to the token grid, so edge cells are partial.
    """

    def __init__(self, input_size: int, mask_patch_size: int, model_patch_size: int, mask_ratio: float):
        if mask_patch_size < 1 or mask_patch_size % model_patch_size:
            raise ValueError(f"mask patch {mask_patch_size} must be a multiple of the model patch {model_patch_size}")
        if not 0 < mask_ratio < 1:
            raise ValueError(f"mask ratio must be in (0, 1), got {mask_ratio}")
        self.tokens = math.ceil(input_size / model_patch_size)  # the patch embedding pads partial patches
        self.scale = mask_patch_size // model_patch_size
        self.grid = math.ceil(self.tokens / self.scale)
        self.count = math.ceil(self.grid**2 * mask_ratio)
        if self.count == self.grid**2:  # the encoder would see mask tokens only: nothing to reconstruct from
            raise ValueError(
                f"mask patch {mask_patch_size} px on a {input_size} px image gives {self.grid} x {self.grid} cells, "
                f"and masking {mask_ratio:g} of them hides all {self.count}; use a smaller mask patch or ratio"
            )

    def __call__(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(batch, tokens, tokens)`` bool, True where a token is masked."""
        scores = torch.rand(batch, self.grid**2, generator=generator)
        cells = torch.zeros(batch, self.grid**2, dtype=torch.bool)
        cells.scatter_(1, scores.argsort(dim=1)[:, : self.count], True)
        cells = cells.view(batch, self.grid, self.grid)
        tokens = cells.repeat_interleave(self.scale, 1).repeat_interleave(self.scale, 2)
        return tokens[:, : self.tokens, : self.tokens]


def normalize_targets(images: torch.Tensor, window: int = 47) -> torch.Tensor:
    """Per-pixel standardisation by the mean and unbiased variance of its ``window x window`` neighbourhood.

    Neighbourhoods are cut at the image border (the mean counts only real pixels).
    """
    if window % 2 == 0:
        raise ValueError(f"the normalisation window must be odd, got {window}")
    pool = dict(kernel_size=window, stride=1, padding=window // 2)
    mean = F.avg_pool2d(images, **pool, count_include_pad=False)
    mean_sq = F.avg_pool2d(images.square(), **pool, count_include_pad=False)
    count = F.avg_pool2d(torch.ones_like(images[:, :1]), **pool, count_include_pad=True) * window**2
    var = ((mean_sq - mean.square()) * count / (count - 1)).clamp_min(0)
    return (images - mean) / (var + 1e-6).sqrt()


def masked_l1(target: torch.Tensor, reconstruction: torch.Tensor, pixel_mask: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over masked pixels and channels: ``sum(|x - x'| m) / (sum(m) + 1e-5) / C``."""
    m = pixel_mask.to(target.dtype).unsqueeze(1)  # (B, 1, H, W)
    error = (target - reconstruction).abs() * m
    return error.sum() / (m.sum() + 1e-5) / target.shape[1]


class SimMIM(nn.Module):
    """A SwinV2 encoder with a mask token, and SimMIM's one-layer pixel decoder."""

    def __init__(self, encoder: SwinV2, norm_target_window: int | None = None):
        super().__init__()
        self.encoder = encoder
        cfg = encoder.cfg
        self.mask_token = nn.Parameter(torch.empty(1, 1, 1, cfg.embed_dim))
        self.reset_parameters()
        self.stride = cfg.patch_size * 2 ** (len(cfg.depths) - 1)
        self.decoder = nn.Sequential(
            nn.Conv2d(encoder.num_features, self.stride**2 * cfg.in_chans, kernel_size=1),
            nn.PixelShuffle(self.stride),
        )
        self.norm_target_window = norm_target_window

    def reset_parameters(self) -> None:
        """The mask token's init (the encoder and decoder initialise themselves)."""
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    def encode(self, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Final normed token map ``(B, h, w, C)``, masked tokens replaced by the mask token after embedding."""
        enc = self.encoder
        enc._check_input(images)
        x = enc.patch_embed(images)
        if mask.shape != x.shape[:3]:
            raise ValueError(
                f"mask must be (B, h, w) = {tuple(x.shape[:3])} on the token grid, got {tuple(mask.shape)}"
            )
        w = mask.unsqueeze(-1).to(x.dtype)
        x = enc.pos_drop(x * (1 - w) + self.mask_token.to(x.dtype) * w)
        for stage in enc.stages:
            x = stage(x)
        return enc.norm(x)

    def forward(self, images: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loss, reconstruction)``; the reconstruction is in the input's (normalised) pixel space."""
        features = self.encode(images, mask).permute(0, 3, 1, 2)
        h, w = images.shape[-2:]
        reconstruction = self.decoder(features)[..., :h, :w]  # padded maps decode past the image
        p = self.encoder.cfg.patch_size
        pixel_mask = mask.repeat_interleave(p, 1).repeat_interleave(p, 2)[:, :h, :w]
        target = images if self.norm_target_window is None else normalize_targets(images, self.norm_target_window)
        return masked_l1(target, reconstruction, pixel_mask), reconstruction

    def load_converted(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Load a state dict from ``swinv2.convert_state_dict`` (official SimMIM or Hugging Face
        ``Swinv2ForMaskedImageModeling``): encoder keys, ``mask_token`` and ``decoder.*``. Strict."""
        own = {}
        for key, value in state_dict.items():
            if key == "mask_token":
                own[key] = value.reshape(self.mask_token.shape)
            elif key.startswith("decoder."):
                own[key] = value
            else:
                own["encoder." + key] = value
        if not any(k.startswith("encoder.head.") for k in own):  # pretraining files carry no classifier
            own.update({"encoder." + k: v for k, v in self.encoder.state_dict().items() if k.startswith("head.")})
        self.load_state_dict(own, strict=True)

    def mask_generator(self, img_size: int, mask_patch_size: int, mask_ratio: float) -> MaskGenerator:
        return MaskGenerator(img_size, mask_patch_size, self.encoder.cfg.patch_size, mask_ratio)

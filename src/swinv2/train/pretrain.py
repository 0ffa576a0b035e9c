"""SimMIM pretraining (``swinv2 pretrain``): the loop of :mod:`.loop` with a masked-pixel loss.

Labels are ignored. The run folder is the one ``swinv2 train`` writes (config, metrics.jsonl, atomic
checkpoints, resume), with ``model.safetensors`` holding the encoder alone, so that
``swinv2 train --pretrained RUN/model.safetensors`` fine-tunes it at any resolution and window, and
``reconstructions.png``: original / masked / reconstructed validation images.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..models.config import to_pair
from ..models.simmim import MaskGenerator, SimMIM
from ..weights.checkpoint import save_weights, write_json
from .distributed import Distributed
from .loop import Trainer, build_model, fit
from .precision import autocast
from .recipe import TrainRecipe, flag
from .state import read_metrics

GRID = "reconstructions.png"
MIN_SHOWN = 96  # pixels: the picture enlarges smaller images to at least this


@dataclass
class PretrainRecipe(TrainRecipe):
    COMMAND = "swinv2 pretrain"
    NOT_FLAGS = ("label_smoothing", "mixup", "cutmix", "layer_decay")  # labels and fine-tuning only

    # 32 px in the paper at 192 px; 8 px cells of 2 x 2 tokens at 28 px
    mask_patch_size: int = flag(8, "side of the square masked regions in pixels (multiple of the model's patch)")
    mask_ratio: float = flag(0.5, "fraction of regions masked")
    # 47 in SwinV2's SimMIM configurations
    norm_target_window: int | None = flag(
        None, "regress locally standardised pixels over this odd window (47 in the paper)"
    )
    # the last epoch always draws one
    grid_every: int = flag(5, "epochs between reconstruction pictures")
    epochs: int = 10
    batch_size: int = 128
    lr: float = 4e-3  # per 512 images
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mixup or self.cutmix:
            raise ValueError("mixup / cutmix mix labels; pretraining has none")
        if not 0 < self.mask_ratio < 1:
            raise ValueError(f"mask_ratio must be in (0, 1), got {self.mask_ratio}")
        window = self.norm_target_window
        if window is not None and (window < 3 or window % 2 == 0):
            raise ValueError(f"--norm-target-window must be an odd number >= 3 (47 in the paper), got {window}")
        if self.grid_every < 1:
            raise ValueError(f"grid_every must be >= 1, got {self.grid_every}")


class PretrainTrainer(Trainer):
    """A :class:`SimMIM` around the recipe's encoder; masks are drawn from the (per-epoch seeded) RNG."""

    recipe: PretrainRecipe
    learns_classes = False

    def __init__(self, recipe: PretrainRecipe, data, device: torch.device, dist: Distributed | None = None):
        super().__init__(recipe, data, device, dist)
        encoder = self.module.encoder
        img = to_pair(encoder.cfg.img_size)[0]
        self.masks = MaskGenerator(img, recipe.mask_patch_size, encoder.cfg.patch_size, recipe.mask_ratio)

    def build_model(self) -> nn.Module:
        encoder = build_model(self.recipe, self.data)  # --pretrained loads the encoder of any layout
        encoder.reset_classifier(0)  # the head plays no part in pretraining
        model = SimMIM(encoder, self.recipe.norm_target_window)
        if self.recipe.pretrained:
            self._load_simmim_parts(model)
        return model

    def _load_simmim_parts(self, model: SimMIM) -> None:
        """Continue from a SimMIM file (official, Hugging Face, this project's): its mask token and decoder."""
        from ..weights.checkpoint import read_checkpoint
        from ..weights.convert import convert_state_dict

        converted = convert_state_dict(read_checkpoint(self.recipe.pretrained)[0])
        parts = {k: v for k, v in converted.items() if k == "mask_token" or k.startswith("decoder.")}
        if "mask_token" in parts:
            parts["mask_token"] = parts["mask_token"].reshape(model.mask_token.shape)
        own = model.state_dict()
        mismatched = [k for k, v in parts.items() if own[k].shape != v.shape]
        if mismatched:
            raise ValueError(f"{self.recipe.pretrained}: SimMIM tensors {mismatched} do not fit this model")
        model.load_state_dict(parts, strict=False)

    def loss(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        mask = self.masks(len(images)).to(self.device)
        with autocast(self.device, self.recipe.amp):
            loss, _ = self.model(images, mask)
        return loss.float()

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Masked-pixel L1 on the validation images, with the same masks every epoch. Over several
        processes each rank draws masks for its own slices, so the value differs slightly from one process's."""
        model = self.eval_model.eval()
        gen = torch.Generator().manual_seed(0)
        total, seen = 0.0, 0
        for images, labels in self._loader(self.data.val, shuffle=False):
            images = self._prepare(images)
            mask = self.masks(len(images), gen).to(self.device)
            with autocast(self.device, self.recipe.amp):
                loss, _ = model(images, mask)
            real = int((labels >= 0).sum())  # a padding sample (label -1) counts for nothing
            total += loss.item() * real
            seen += real
        total, seen = self.dist.all_reduce_sum(total, seen)
        if self.epoch % self.recipe.grid_every == 0 or self.epoch == self.recipe.epochs:
            self.draw(Path(self.recipe.output) / GRID)
        return {"val_loss": total / seen}

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.device)
        transform = self.data.val_batch_transform
        return transform(images) if transform is not None else images

    @torch.no_grad()
    def draw(self, path: Path, count: int = 8) -> Path:
        """Rows: original, masked (grey), reconstruction with the visible pixels pasted back."""
        from torchvision.utils import save_image

        model = self.eval_model.eval()
        readable = (s for s in (self.data.val[i] for i in range(len(self.data.val))) if s is not None)
        images = self._prepare(torch.stack([s[0] for _, s in zip(range(count), readable)]))
        mask = self.masks(len(images), torch.Generator().manual_seed(0)).to(self.device)
        _, recon = model(images.float(), mask)
        p = model.encoder.cfg.patch_size
        h, w = images.shape[-2:]
        pixels = mask.repeat_interleave(p, 1).repeat_interleave(p, 2)[:, None, :h, :w]
        mean = torch.tensor(self.data.mean, device=self.device).view(1, -1, 1, 1)
        std = torch.tensor(self.data.std, device=self.device).view(1, -1, 1, 1)
        if model.norm_target_window is not None:  # the decoder predicts locally standardised pixels
            lo, hi = recon.amin((1, 2, 3), keepdim=True), recon.amax((1, 2, 3), keepdim=True)
            recon = ((recon - lo) / (hi - lo + 1e-6) - mean) / std
        original = images * std + mean
        masked = torch.where(pixels, torch.full_like(original, 0.5), original)
        pasted = torch.where(pixels, recon * std + mean, original)
        rows = torch.cat([original, masked, pasted]).clamp(0, 1).float().cpu()
        zoom = math.ceil(MIN_SHOWN / min(h, w))  # small images are enlarged (nearest) to be seen
        rows = torch.nn.functional.interpolate(rows, scale_factor=zoom, mode="nearest") if zoom > 1 else rows
        if self.dist.is_main:  # every rank reconstructs (fsdp's forward needs them all), one draws
            save_image(rows, path, nrow=len(images), padding=2, pad_value=1.0)
        return path

    def epoch_line(self, row: dict) -> str:
        return (
            f"loss {row['train_loss']:.4f}  val loss {row['val_loss']:.4f}  lr {row['lr']:.2e}  "
            f"{row['img_per_s']:.0f} img/s  {row['seconds']:.0f}s"
        )

    def finish(self, run_dir: Path, wall_start: float) -> dict | None:
        """The encoder's weights (with its config and normalisation), ``summary.json`` (rank 0; others None)."""
        tensors = self.dist.full_state_dict(self.eval_model.encoder)
        if not self.dist.is_main:
            return None
        meta = {"mean": json.dumps(self.data.mean), "std": json.dumps(self.data.std), "simmim": "encoder"}
        save_weights(self.eval_model.encoder, run_dir / "model.safetensors", meta, tensors)
        rows = read_metrics(run_dir)
        summary = {
            "model": self.recipe.model,
            "data": self.data.name,
            "epochs": self.epoch,
            "first_loss": rows[0]["train_loss"],
            "final_loss": rows[-1]["train_loss"],
            "val_loss": rows[-1]["val_loss"],
            "train_images": len(self.data.train),
            "train_seconds": sum(r["seconds"] for r in rows),
            "wall_seconds_this_invocation": time.perf_counter() - wall_start,
            "mask": {"patch": self.recipe.mask_patch_size, "ratio": self.recipe.mask_ratio},
        }
        if not all(math.isfinite(summary[k]) for k in ("first_loss", "final_loss")):
            raise RuntimeError(f"pretraining diverged: {summary}")
        write_json(run_dir / "summary.json", summary)
        print(f"done: masked-pixel L1 {summary['first_loss']:.4f} -> {summary['final_loss']:.4f} -> {run_dir}")
        return summary


def pretrain(recipe: PretrainRecipe, resume: bool = False, stop_after: int | None = None, progress: bool = True):
    """Pretrain per ``recipe`` into its run folder (see :func:`swinv2.train.fit` for the arguments)."""
    return fit(recipe, resume, stop_after, progress, trainer_class=PretrainTrainer)

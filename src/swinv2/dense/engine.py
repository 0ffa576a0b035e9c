"""Detection and segmentation on the training engine of ``swinv2 train``.

:class:`DenseTrainer` is :class:`~swinv2.train.loop.Trainer` with a dense task's data, model, loss, metrics
and pictures, so a dense run has the engine's strategies (ddp, zero, fsdp under torchrun), AMP, EMA,
accumulation, memory savers, ``--compile``, step checkpoints with exact mid-epoch resume, the NaN
policy and the run folder (``metrics.jsonl``, ``summary.json``, curves) of every other task.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from ..data.datasets import first_readable
from ..train.distributed import PAD, Share
from ..train.loop import Trainer, fit
from ..train.precision import autocast
from ..train.state import plot_curves, read_metrics, seed_everything
from ..weights.checkpoint import save_weights, write_json
from .inference import DenseRun, draw_predictions
from .recipe import DenseRecipe
from .segmentation import synchronize_batchnorm
from .tasks import DenseTask, make_task


@dataclass
class DenseData:
    """A dense task's datasets, what the trainer reads of a classification run's data."""

    task: DenseTask
    train: Dataset
    val: Dataset
    classes: tuple[str, ...]
    name: str


class DenseCollate:
    """The task's batch of the samples that could be read, with their count. Unreadable files and the
    padding sample of a rank whose slice of the batch is empty are left out; a batch left with nothing
    becomes the dataset's first readable sample with count 0, which the loop gives zero weight (every
    rank of a distributed run still takes part in each step)."""

    def __init__(self, collate, dataset: Dataset):
        self.collate, self.dataset = collate, dataset

    def __call__(self, samples: list) -> tuple[object, int]:
        kept = [s for s in samples if s is not None and not (isinstance(s[1], int) and s[1] == PAD)]
        if kept:
            return self.collate(kept), len(kept)
        return self.collate([first_readable(self.dataset)]), 0


class DenseTrainer(Trainer):
    """The engine's trainer for ``recipe.task`` (detect or segment)."""

    learns_classes = False  # a detector of one category is a detector

    def __init__(self, recipe: DenseRecipe, data: DenseData, device: torch.device, dist=None):
        self.task = data.task
        super().__init__(recipe, data, device, dist)

    @staticmethod
    def build_data(recipe: DenseRecipe) -> DenseData:
        task = make_task(recipe)
        train, val = task.datasets()
        return DenseData(task, train, val, tuple(task.classes), f"{task.root} ({recipe.task})")

    def build_model(self) -> nn.Module:
        seed_everything(self.recipe.seed)  # the initial weights follow the seed alone, not what reading the data drew
        model = self.task.build_model()
        if self.dist.world > 1:  # BatchNorm over the global batch, as one process computes it
            synchronize_batchnorm(model)
        return model

    def compiled(self, model: nn.Module) -> nn.Module:
        """The backbone compiled in place (its state-dict names stay); the heads, whose proposal counts
        change every step, stay eager."""
        self.task.backbone_of(self.module).compile()
        return model

    @property
    def drop_last(self) -> bool:
        # an incomplete last batch is dropped (as detectron2 and mmseg do): none of 1 image, none smaller than
        # the rest; a training set of at most one batch is kept whole (UperNet's BatchNorm trains on 1 image)
        return len(self.data.train) > self.recipe.batch_size

    def train_batches(self) -> int:
        n, batch = len(self.data.train), self.recipe.batch_size
        return n // batch if self.drop_last else math.ceil(n / batch)

    @property
    def eval_batch_size(self) -> int:
        return self.recipe.batch_size

    def collate(self, dataset: Dataset) -> DenseCollate:
        return DenseCollate(self.task.collate, dataset)

    def batch_loss(self, index: int, batch) -> tuple[torch.Tensor, Share, dict[str, float]]:
        samples, real = batch
        share = self.dist.share_of(index, real, len(self.data.train), self.recipe.batch_size)
        if real == 0 and self.dist.world == 1:  # nothing readable, and no rank to keep in step
            return torch.zeros((), device=self.device), share, {}
        if self.dist.world > 1:  # this rank's part of what the one-process loss averages over
            units = self.task.loss_units(samples) if real else 0
            total = self.dist.all_reduce_sum(float(units))[0]
            share = share._replace(weight=self.dist.world * units / total if total else 0.0)
        with autocast(self.device, self.recipe.amp):
            loss, parts = self.task.loss(self.model, samples, self.device)
        return loss, share, parts

    def evaluate(self) -> dict:
        """The task's metrics on the whole validation set (every rank scores all of it: COCO scoring and
        the confusion matrix then need no gathering, and sharded models stay in step)."""
        return self.run_view().evaluate()

    def run_view(self) -> DenseRun:
        """The evaluated model (EMA when on) as a finished run's, for scoring and pictures."""
        return DenseRun(self.recipe, self.device, self.task, self.eval_model, self.data.val)

    def epoch_line(self, row: dict) -> str:
        metric = self.task.main_metric
        return (
            f"loss {row['train_loss']:.4f}  {metric} {row[metric]:.2f}  {row['img_per_s']:.1f} img/s  "
            f"{row['seconds']:.0f}s"
        )

    def finish(self, run_dir: Path, wall_start: float) -> dict | None:
        """Final weights (EMA if on), ``summary.json``, curves and ``predictions.png``; every rank calls it
        (fsdp gathers the weights and draws with all ranks), rank 0 writes and returns the summary."""
        recipe = self.recipe
        tensors = self.dist.full_state_dict(self.eval_model)
        pictures = draw_predictions(self.run_view(), run_dir / "predictions.png", save=self.dist.is_main)
        if not self.dist.is_main:
            return None
        meta = {"task": recipe.task, "classes": json.dumps(self.task.classes), "recipe": json.dumps(recipe.to_dict())}
        save_weights(self.eval_model, run_dir / "model.safetensors", meta, tensors)
        rows = read_metrics(run_dir)
        per_epoch = ("epoch", "lr", "seconds", "images", "img_per_s")
        summary = {
            "task": recipe.task,
            "model": recipe.model,
            "data": str(self.task.root),
            **{k: v for k, v in rows[-1].items() if k not in per_epoch},
            "epochs": self.epoch,
            "train_images": len(self.data.train),
            "eval_images": len(self.data.val),
            "train_seconds": sum(r["seconds"] for r in rows),
            "wall_seconds_this_invocation": time.perf_counter() - wall_start,
            "params": sum(p.numel() for p in self.module.parameters()),
            "ema": bool(recipe.ema_decay),
        }
        write_json(run_dir / "summary.json", summary)
        plot_curves(run_dir, self.task.metrics)
        metric = self.task.main_metric
        drawn = f", pictures in {pictures.name}" if pictures else ""
        print(
            f"done: {metric} {summary[metric]:.2f}  in {summary['train_seconds']:.0f}s of training -> {run_dir}{drawn}"
        )
        return summary


def fit_dense(
    recipe: DenseRecipe, resume: bool = False, stop_after: int | None = None, progress: bool = True
) -> dict | None:
    """Train per ``recipe`` into its run folder (continuing the run there with ``resume``); under
    torchrun, ``recipe.strategy`` spreads it over the processes.

    Returns the summary, or None when ``stop_after`` epochs ended this invocation early.
    """
    return fit(recipe, resume, stop_after, progress, trainer_class=DenseTrainer)

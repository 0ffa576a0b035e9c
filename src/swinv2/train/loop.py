"""``fit``: the training loop behind ``swinv2 train``; ``evaluate``: top-1 / top-5 of a model."""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..data import ClassificationData, batch_mixer, build_classification_data
from ..data.datasets import ReadableCollate, first_readable, take_unreadable
from ..errors import NonFiniteLossError, RankLostError
from ..models.config import to_pair
from ..models.preprocess import Preprocessing
from ..models.registry import get_config
from ..pretrained.factory import create_model
from ..weights.checkpoint import check_compatible, refuse_partial_start, save_weights, write_json
from .checkpoints import checkpoints
from .distributed import Distributed, Share
from .optim import WarmupCosine
from .position import CheckpointClock, EpochPosition, RankProgress, SeededSamples
from .precision import autocast, resolve_amp
from .recipe import TrainRecipe
from .run_folder import check_resumed_epochs, check_run_dir, claim_run_dir, create_run_dir
from .state import append_metrics, plot_curves, read_metrics, rng_state, seed_everything, truncate_metrics

log = logging.getLogger("swinv2")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device takes auto, cpu, cuda or cuda:N, got {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda requested but no CUDA device is available")
    return device


def _last_checkpoint(recipe) -> tuple[Path, str]:
    """The run folder and a phrase naming its newest checkpoint, for error messages."""
    run_dir = Path(recipe.output or ".")
    kept = checkpoints(run_dir)
    return run_dir, f"the last checkpoint is {kept[0]}" if kept else "no checkpoint was written yet"


def nonfinite_message(what: str, epoch: int, batch: int, batches: int, recipe) -> str:
    """Where the run broke, what was kept, and the usual remedies."""
    run_dir, last = _last_checkpoint(recipe)
    return (
        f"non-finite {what} at epoch {epoch}, batch {batch} of {batches}; stopped without saving this step "
        f"({last}). Remedies: a lower --lr, gradient clipping (--clip-grad 5), --amp bf16 instead of fp16, "
        f"then --resume {run_dir}; or --skip-nonfinite to skip such steps and count them."
    )


def build_data(recipe: TrainRecipe) -> ClassificationData:
    img = to_pair(recipe.img_size or get_config(recipe.model).img_size)[0]
    aug = {"crop": recipe.crop, "hflip": recipe.hflip, "randaugment": recipe.randaugment}
    aug["random_erasing"] = recipe.random_erasing
    in_chans = recipe.model_overrides.get("in_chans")
    limits = (recipe.train_limit, recipe.val_limit, recipe.labels_per_class)
    return build_classification_data(recipe.data, img, in_chans, aug, *limits)


SAVERS = ("grad_checkpointing", "sequential_attention", "sequential_mlp")


def model_overrides(recipe: TrainRecipe, data: ClassificationData, **extra: object) -> dict:
    """Config fields a run changes on its registered model: the data's classes and channels, and the
    recipe's size, window, drop path, pretrained windows and ``extra`` fields where set."""
    overrides = dict(recipe.model_overrides)
    overrides.update(num_classes=len(data.classes), in_chans=data.in_chans)
    for key, value in (
        ("img_size", recipe.img_size),
        ("window_size", recipe.window_size),
        ("drop_path_rate", recipe.drop_path),
        ("pretrained_window_sizes", recipe.pretrained_window_sizes),
        *extra.items(),
    ):
        if value is not None:
            overrides[key] = value
    return overrides


def build_model(recipe: TrainRecipe, data: ClassificationData) -> nn.Module:
    savers = {k: getattr(recipe, k) for k in SAVERS}
    model = create_model(recipe.model, pretrained=recipe.pretrained, **savers, **model_overrides(recipe, data))
    if recipe.pretrained:  # a SimMIM encoder brings no head: the model's own stays
        refuse_partial_start(model.load_report, recipe.pretrained, recipe.model, may_lack=("head.",))
    return model


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device,
    amp: str = "none",
    batch_transform=None,
    reduce: Callable[..., tuple[float, ...]] | None = None,
) -> dict:
    """Top-1 / top-5 (percent) and mean cross-entropy over the whole loader (inputs cast to the model's dtype).

    ``reduce`` sums the counts over ranks of a sharded loader, whose padding samples (label -1) only keep
    the ranks' forward passes in step and are not counted.
    """
    model.eval()
    dtype = next(model.parameters()).dtype
    scores = TopKScores()
    for images, labels in loader:
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        if batch_transform is not None:
            images = batch_transform(images)
        images = images.to(dtype)
        with autocast(device, amp):
            logits = model(images).float()
        keep = labels >= 0
        logits, labels = logits[keep], labels[keep]
        scores.add(logits, labels, F.cross_entropy(logits, labels, reduction="sum").item())
    return scores.result(reduce)


class TopKScores:
    """Running top-1 / top-5 hits and summed loss over batches of scores (logits or probabilities)."""

    def __init__(self) -> None:
        self.correct1 = self.correct5 = self.total = 0
        self.loss_sum = 0.0

    def add(self, scores: torch.Tensor, labels: torch.Tensor, loss_sum: float) -> None:
        top = scores.topk(min(5, scores.shape[1]), dim=1).indices
        self.correct1 += (top[:, 0] == labels).sum().item()
        self.correct5 += (top == labels[:, None]).any(dim=1).sum().item()
        self.total += labels.numel()
        self.loss_sum += loss_sum

    def result(self, reduce: Callable[..., tuple[float, ...]] | None = None) -> dict:
        """Percentages and mean loss; ``reduce`` sums the counts over ranks first."""
        counts = (self.correct1, self.correct5, self.loss_sum, self.total)
        correct1, correct5, loss_sum, total = reduce(*counts) if reduce is not None else counts
        return {"top1": 100 * correct1 / total, "top5": 100 * correct5 / total, "val_loss": loss_sum / total}


class Trainer:
    """Holds a run's model, optimiser, schedule, EMA and scaler; one :meth:`train_epoch` per epoch.

    Subclasses change the task through :meth:`build_data`, :meth:`build_model`, :meth:`loss` (or, for
    batches that are not (images, labels), :meth:`batch_loss` and :meth:`collate`), :meth:`evaluate`,
    :meth:`epoch_line` and :meth:`finish`: SimMIM pretraining, video and the dense tasks do.
    """

    learns_classes = True  # labels are the target (SimMIM's are not: one folder of images will do)

    def __init__(
        self, recipe: TrainRecipe, data: ClassificationData, device: torch.device, dist: Distributed | None = None
    ):
        self.recipe, self.data, self.device = recipe, data, device
        self.dist = dist or Distributed("single", device)
        self.module = self.dist.prepare(self.build_model, recipe)  # the model (sharded under fsdp)
        self.optimizer = self.dist.build_optimizer(self.module, recipe)
        self.model = self.dist.wrap(self.module)  # what training calls: DDP around it under ddp and zero
        if recipe.compile:
            self.model = self.compiled(self.model)
        self.steps_per_epoch = math.ceil(self.train_batches() / recipe.accum_steps)
        self.scheduler = WarmupCosine(
            self.optimizer,
            recipe.scaled_lr,
            recipe.min_lr,
            total=recipe.epochs * self.steps_per_epoch,
            warmup=int(recipe.warmup_epochs * self.steps_per_epoch),
        )
        self.scaler = torch.amp.GradScaler(device.type, enabled=recipe.amp == "fp16")
        self.ema = None
        if recipe.ema_decay:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            self.ema = AveragedModel(self.module, multi_avg_fn=get_ema_multi_avg_fn(recipe.ema_decay), use_buffers=True)
        self.mixer = batch_mixer(len(data.classes), recipe.mixup, recipe.cutmix)
        self.epoch = 0
        self.skipped_steps = 0  # this epoch's steps skipped for a non-finite loss or gradient
        self.position: EpochPosition | None = None  # inside an epoch: where its checkpoint is written
        self.resume_at: EpochPosition | None = None  # where the next epoch starts (a mid-epoch checkpoint)
        self.clock = CheckpointClock(recipe.checkpoint_every, recipe.checkpoint_minutes)

    def build_model(self) -> nn.Module:
        return build_model(self.recipe, self.data)

    def compiled(self, model: nn.Module) -> nn.Module:
        """What ``--compile`` trains: the compiled callable shares the module's parameters, so checkpoints
        stay the module's."""
        return torch.compile(model)

    def train_batches(self) -> int:
        """Batches of one training epoch."""
        return math.ceil(len(self.data.train) / self.recipe.batch_size)

    drop_last = False  # whether the training loader drops an incomplete last batch
    collate = ReadableCollate  # makes a loader's batches from a dataset's samples (see Distributed.loader)

    @property
    def eval_batch_size(self) -> int:
        return max(self.recipe.batch_size, 256)

    def batch_loss(self, index: int, batch) -> tuple[torch.Tensor, Share, dict[str, float]]:
        """Loss of training batch ``index`` as the loader gave it, this rank's share of the global batch, and
        the parts of the loss to report (averaged over the epoch's samples beside ``train_loss``)."""
        images, labels = (t.to(self.device, non_blocking=True) for t in batch)
        if self.data.train_batch_transform is not None:
            images = self.data.train_batch_transform(images)
        share = self.dist.share(index, labels, len(self.data.train), self.recipe.batch_size)
        return self.loss(images, share.labels), share, {}

    @staticmethod
    def build_data(recipe: TrainRecipe) -> ClassificationData:
        return build_data(recipe)

    def loss(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The training loss of one batch (already on the device and batch-augmented)."""
        if self.mixer is not None:
            images, labels = self.mixer(images, labels)
        with autocast(self.device, self.recipe.amp):
            logits = self.model(images).float()
        return F.cross_entropy(logits, labels, label_smoothing=self.recipe.label_smoothing)

    def epoch_line(self, row: dict) -> str:
        return (
            f"loss {row['train_loss']:.4f}  top1 {row['top1']:.2f}  top5 {row['top5']:.2f}  lr {row['lr']:.2e}  "
            f"{row['img_per_s']:.0f} img/s  {row['seconds']:.0f}s"
        )

    @property
    def eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.module

    def state_dict(self) -> dict:
        return {"model": self.module.state_dict(), "optimizer": self.optimizer.state_dict(), **self.extra_state()}

    def extra_state(self) -> dict:
        """Everything of the checkpoint but the model and the optimiser (small, never sharded)."""
        state = {
            "epoch": self.epoch,
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng_state(),
            "recipe": json.dumps(self.recipe.to_dict()),
        }
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        if self.position is not None:
            state["position"] = self.position.to_state()
        return state

    def load_state_dict(self, state: dict) -> None:
        check_compatible(self.module.state_dict(), state["model"], "the checkpoint's model")
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.load_extra_state(state)

    def load_extra_state(self, state: dict) -> None:
        self.scheduler.load_state_dict(state["scheduler"])
        if "scaler" in state:  # (dense checkpoints of earlier versions have none: they trained without one)
            self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        self.epoch = int(state["epoch"])
        self.resume_at = EpochPosition.from_state(state["position"]) if "position" in state else None

    def _loader(self, dataset, shuffle: bool, seed: int = 0, skip: int = 0) -> DataLoader:
        r = self.recipe
        gen = torch.Generator().manual_seed(seed)
        batch = r.batch_size if shuffle else self.eval_batch_size
        if shuffle and r.workers > 0:  # workers augment each sample from its own seed (resumable)
            dataset = SeededSamples(dataset, seed)
        # Several processes each load their slice of every batch.
        return self.dist.loader(
            dataset,
            batch,
            shuffle,
            gen,
            skip,
            collate=self.collate,
            drop_last=shuffle and self.drop_last,
            num_workers=r.workers,
            pin_memory=self.device.type == "cuda",
        )

    def train_epoch(self, progress: bool = True, checkpoint: Callable[[], None] | None = None) -> dict:
        """One pass over the training set (the rest of one, after a mid-epoch checkpoint). Every epoch
        re-seeds all RNGs from (seed, epoch) and a mid-epoch checkpoint holds the generators, so a resumed
        run draws exactly the batches and augmentations of an uninterrupted one. ``checkpoint`` saves the
        trainer; it is called after the optimiser steps the recipe's checkpoint clock asks for."""
        r, model = self.recipe, self.model
        epoch_seed = r.seed * 100_003 + self.epoch
        seed_everything(self.dist.rank_seed(epoch_seed))  # other ranks augment (and mask) differently
        at, self.resume_at = self.resume_at or EpochPosition(), None
        loader = self._loader(self.data.train, shuffle=True, seed=epoch_seed, skip=at.batches)
        batches = at.batches + len(loader)
        mine = at.restore(self.dist.rank, self.dist.world, epoch_seed) if at.batches else RankProgress()
        model.train()
        total_loss, seen, start = mine.total_loss, mine.seen, time.perf_counter() - at.seconds
        part_sums = dict(mine.parts)
        self.skipped_steps, steps = at.skipped_steps, at.steps
        bar = tqdm(
            total=len(self.data.train),
            initial=min(at.batches * r.batch_size, len(self.data.train)),
            unit="img",
            desc=f"epoch {self.epoch + 1}/{r.epochs}",
            disable=None if progress else True,
            leave=False,
            file=sys.stderr,
        )
        self.optimizer.zero_grad(set_to_none=True)
        self.clock.reset()
        for i, batch in enumerate(loader, start=at.batches):
            loss, share, parts = self.batch_loss(i, batch)
            value = loss.item()
            if self._nonfinite(value, f"loss {value}" + (f" ({parts})" if parts else ""), i, batches):
                pass  # skipped (--skip-nonfinite): no backward; the step below uses the window's other batches
            elif share.real == 0 and self.dist.world == 1:
                pass  # nothing readable in this batch (counted by the dataset)
            else:
                # weight 1 in one process; over ranks, the average gradient is the one-process mean gradient
                self.scaler.scale(loss * share.weight / r.accum_steps).backward()
                total_loss += value * share.real
                seen += share.real
                for name, part in parts.items():
                    part_sums[name] = part_sums.get(name, 0.0) + part * share.real
            if (i + 1) % r.accum_steps == 0 or i + 1 == batches:
                self._optimizer_step(i, batches)
                steps += 1
                if checkpoint is not None and i + 1 < batches and self._checkpoint_due(steps):
                    here = EpochPosition(i + 1, steps, self.skipped_steps, time.perf_counter() - start)
                    self._save_inside_epoch(here, RankProgress(total_loss, seen, rng_state(), part_sums), checkpoint)
            bar.update(share.batch)
            bar.set_postfix(loss=f"{total_loss / max(seen, 1):.3f}", lr=f"{self.scheduler.lr:.2e}")
        bar.close()
        names = sorted(part_sums)
        total_loss, seen, *sums = self.dist.all_reduce_sum(total_loss, seen, *(part_sums[k] for k in names))
        self.epoch += 1
        stats = {"train_loss": total_loss / seen if seen else math.nan, "seconds": time.perf_counter() - start}
        stats.update({name: value / seen for name, value in zip(names, sums)} if seen else {})
        stats["images"] = int(seen)
        if r.skip_nonfinite:
            stats["skipped_steps"] = self.skipped_steps
        return stats

    def _save_inside_epoch(self, here: EpochPosition, mine: RankProgress, checkpoint: Callable[[], None]) -> None:
        """``checkpoint()`` with ``here`` and every rank's running totals and generators in the state."""
        here.ranks = self.dist.gather(mine)
        self.position = here
        checkpoint()
        self.position = None
        self.clock.reset()

    def _checkpoint_due(self, steps: int) -> bool:
        """Whether the ``steps``-th optimiser step of this epoch ends with a checkpoint; every rank agrees
        (rank 0's clock decides a time-based one)."""
        if not self.clock.enabled:
            return False
        due = self.clock.due(self.epoch * self.steps_per_epoch + steps)
        if self.dist.world > 1 and self.clock.minutes > 0:
            due = bool(self.dist.broadcast(due))
        return due

    def _nonfinite(self, value: float, what: str, batch: int, batches: int) -> bool:
        """True when ``value`` (on any rank) is NaN or Inf and ``--skip-nonfinite`` skips it; without the
        flag, :class:`NonFiniteLossError` stops the run before anything of this epoch is saved."""
        bad = not math.isfinite(value)
        if self.dist.world > 1:  # every rank takes the same decision, or the collectives fall out of step
            bad = self.dist.all_reduce_sum(float(bad))[0] > 0
        if not bad:
            return False
        if self.recipe.skip_nonfinite:
            self.skipped_steps += 1
            return True
        raise NonFiniteLossError(nonfinite_message(what, self.epoch + 1, batch + 1, batches, self.recipe))

    def _optimizer_step(self, batch: int, batches: int) -> None:
        if not any(p.grad is not None for group in self.optimizer.param_groups for p in group["params"]):
            self.scheduler.step()  # every batch of the window was skipped: keep the schedule on time
            return
        if self.recipe.clip_grad > 0:
            self.scaler.unscale_(self.optimizer)
            norm = float(nn.utils.clip_grad_norm_(self.model.parameters(), self.recipe.clip_grad))
            # with fp16 the grad scaler itself skips steps with Inf gradients (and lowers its scale)
            if self.recipe.amp != "fp16" and self._nonfinite(norm, f"gradient norm {norm}", batch, batches):
                self.optimizer.zero_grad(set_to_none=True)
                self.scaler.update()
                self.scheduler.step()
                return
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.module)

    def take_unreadable(self) -> tuple[int, list[str]]:
        """Files of the training and evaluation sets that could not be read since the last call: the
        count over all ranks, and this rank's paths."""
        paths = take_unreadable(self.data.train) + take_unreadable(self.data.val)
        return int(self.dist.all_reduce_sum(float(len(paths)))[0]), paths

    def evaluate(self) -> dict:
        loader = self._loader(self.data.val, shuffle=False)
        transform = self.data.val_batch_transform
        return evaluate(self.eval_model, loader, self.device, self.recipe.amp, transform, self.dist.all_reduce_sum)

    def finish(self, run_dir: Path, wall_start: float) -> dict | None:
        return finish(run_dir, self.recipe, self, self.data, wall_start)


def settle_precision(recipe, device: torch.device, broadcast: Callable[[object], object] = lambda obj: obj) -> None:
    """Resolve the recipe's ``amp`` for ``device`` (``auto`` becomes ``bf16`` or ``none``; ``fp16`` off CUDA
    is refused) and note why in ``amp_reason``. A resumed run keeps the reason it started with; under
    torchrun every rank takes rank 0's choice (``broadcast``)."""
    precision = resolve_amp(recipe.amp, device)
    if precision.amp != recipe.amp or recipe.amp_reason is None:
        recipe.amp, recipe.amp_reason = broadcast((precision.amp, precision.reason))


def fit(
    recipe: TrainRecipe,
    resume: bool = False,
    stop_after: int | None = None,
    progress: bool = True,
    trainer_class: type[Trainer] = Trainer,
) -> dict | None:
    """Train per ``recipe`` into its run folder; with ``resume``, continue the run found there.

    ``stop_after`` ends this invocation after that many epochs (a time-sliced job, or a test of resume);
    the return value is then None, otherwise the summary written to ``summary.json``. Under torchrun,
    ``recipe.strategy`` spreads the run over the processes; rank 0 alone prints and writes the folder,
    and every rank returns the same value.
    """
    with Distributed.setup(recipe.strategy, resolve_device(recipe.device), recipe.dist_timeout) as dist:
        try:
            return _fit(recipe, dist, resume, stop_after, progress and dist.is_main, trainer_class)
        except RuntimeError as exc:
            if dist.world == 1 or isinstance(exc, NonFiniteLossError):
                raise
            raise RankLostError(rank_lost_message(exc, dist.rank, recipe)) from exc


def rank_lost_message(exc: Exception, rank: int, recipe: TrainRecipe) -> str:
    run_dir, last = _last_checkpoint(recipe)
    return (
        f"rank {rank} stopped: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}. Another rank most likely "
        f"died (killed, out of memory, node lost) or hung past --dist-timeout ({recipe.dist_timeout:.0f} s); "
        f"{last}. Restart with --resume {run_dir}, at this or another world size."
    )


def _fit(
    recipe: TrainRecipe, dist: Distributed, resume: bool, stop_after: int | None, progress: bool, trainer_class
) -> dict | None:
    wall_start = time.perf_counter()
    defaulted = recipe.output is None
    if defaulted:  # one timestamp for all ranks
        recipe.output = dist.broadcast(f"runs/{time.strftime('%Y%m%d-%H%M%S')}")
    run_dir = check_run_dir(recipe, resume)
    settle_precision(recipe, dist.device, dist.broadcast)
    say = print if dist.is_main else lambda *a, **k: None
    seed_everything(recipe.seed)
    data = trainer_class.build_data(recipe)  # bad paths, names and sizes fail here, before the folder exists
    if trainer_class.learns_classes and len(data.classes) < 2:  # one class: loss 0 and 100% from the first step
        raise ValueError(f"{data.name} has {len(data.classes)} class; a classifier needs at least 2 class folders")
    for split, dataset in (("train", data.train), ("val", data.val)):  # else a step fails after the folder is made
        first_readable(dataset, f"the {split} split of {data.name}")
    trainer = trainer_class(recipe, data, dist.device, dist)
    if resume and dist.load(trainer, run_dir):  # before config.json is rewritten: a failed resume changes nothing
        at = trainer.resume_at
        check_resumed_epochs(recipe, trainer.epoch, run_dir, inside=at is not None)
        inside = f" and {at.steps} step(s) of epoch {trainer.epoch + 1} ({at.batches} batches)" if at else ""
        say(f"resuming {run_dir} after epoch {trainer.epoch}{inside}")
    elif resume:
        say(f"{run_dir} holds no checkpoint yet: starting from epoch 1")
    if defaulted:
        recipe.output = dist.broadcast(claim_run_dir(recipe.output) if dist.is_main else None)
        run_dir = Path(recipe.output)
    create_run_dir(recipe, dist.is_main)
    if dist.is_main:
        truncate_metrics(run_dir, trainer.epoch)
    n_params = sum(p.numel() for p in trainer.module.parameters())
    say(
        f"{recipe.model}: {n_params / 1e6:.2f}M params, {data.name}: {len(data.train)} train / {len(data.val)} val "
        f"images, {recipe.epochs} epochs x {trainer.steps_per_epoch} steps, lr {recipe.scaled_lr:.2e}, "
        f"{dist.device}{dist.describe()}, amp {recipe.amp} ({recipe.amp_reason})"
    )
    done_now = 0
    while trainer.epoch < recipe.epochs:
        stats = trainer.train_epoch(progress, checkpoint=lambda: dist.save(trainer, run_dir))
        metrics = trainer.evaluate()
        row = {"epoch": trainer.epoch, "lr": trainer.scheduler.lr, **stats, **metrics}
        row["img_per_s"] = stats["images"] / stats["seconds"]
        unreadable = trainer.take_unreadable()
        if unreadable[0]:
            row["unreadable_files"] = unreadable[0]
        if dist.is_main:
            append_metrics(run_dir, row)
        dist.save(trainer, run_dir)
        say(f"epoch {trainer.epoch}/{recipe.epochs}  {trainer.epoch_line(row)}", flush=True)
        for line in epoch_notes(row, unreadable[1]):
            say(line)
        done_now += 1
        if stop_after is not None and done_now >= stop_after and trainer.epoch < recipe.epochs:
            return None
    return dist.broadcast(trainer.finish(run_dir, wall_start))


def epoch_notes(row: dict, unreadable: list[str]) -> list[str]:
    """What an epoch skipped: unreadable files (train and evaluation) and non-finite steps."""
    notes = []
    if row.get("unreadable_files"):
        shown = ", ".join(unreadable[:5]) + (f" (+{len(unreadable) - 5} more)" if len(unreadable) > 5 else "")
        notes.append(f"  skipped {row['unreadable_files']} unreadable file(s) this epoch: {shown}")
    if row.get("skipped_steps"):
        notes.append(f"  skipped {row['skipped_steps']} step(s) with a non-finite loss or gradient (--skip-nonfinite)")
    return notes


def finish(
    run_dir: Path, recipe: TrainRecipe, trainer: Trainer, data: ClassificationData, wall_start: float
) -> dict | None:
    """Final weights (EMA if on) with class names and normalisation, ``summary.json`` and the curves.

    Every rank calls it (fsdp gathers the weights); rank 0 writes and returns the summary, others None.
    """
    tensors = trainer.dist.full_state_dict(trainer.eval_model)
    if not trainer.dist.is_main:
        return None
    meta = {
        k: json.dumps(v)
        for k, v in {
            "classes": list(data.classes),
            "mean": data.mean,
            "std": data.std,
            "crop_pct": data.eval_crop_pct,
        }.items()
    }
    model = trainer.eval_model
    # what evaluation did to an image (torchvision's default bilinear resize, centre crop, normalise)
    prep = Preprocessing.for_model(model.cfg, mean=data.mean, std=data.std, crop_pct=data.eval_crop_pct)
    meta.update(architecture=type(model).__name__, preprocessing=replace(prep, interpolation="bilinear").to_json())
    save_weights(trainer.eval_model, run_dir / "model.safetensors", meta, tensors)
    rows = read_metrics(run_dir)  # every epoch of the run, resumed ones included
    summary = {
        "model": recipe.model,
        "data": data.name,
        "top1": rows[-1]["top1"],
        "top5": rows[-1]["top5"],
        "epochs": trainer.epoch,
        "train_images": len(data.train),
        "eval_images": len(data.val),
        "train_seconds": sum(r["seconds"] for r in rows),
        "wall_seconds_this_invocation": time.perf_counter() - wall_start,
        "final_train_loss": rows[-1]["train_loss"],
        "params": sum(p.numel() for p in trainer.module.parameters()),
        "ema": bool(recipe.ema_decay),
    }
    write_json(run_dir / "summary.json", summary)
    plot_curves(run_dir)
    print(
        f"done: top1 {summary['top1']:.2f}%  top5 {summary['top5']:.2f}%  in {summary['train_seconds']:.0f}s of "
        f"training -> {run_dir}"
    )
    return summary

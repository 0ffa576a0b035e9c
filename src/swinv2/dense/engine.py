"""Train, evaluate and predict for dense tasks, with the run folder of ``swinv2 train``: resolved recipe,
``metrics.jsonl``, a checksummed checkpoint per epoch, ``--resume``, progress bars, ``summary.json``,
curves and prediction pictures."""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..data.datasets import first_readable, take_unreadable
from ..data.decode import UnreadableImage, read_image
from ..errors import NonFiniteLossError
from ..runs import expect_run
from ..train.checkpoints import latest_valid, load_state, write_checkpoint
from ..train.loop import epoch_notes, nonfinite_message, resolve_device, settle_precision
from ..train.optim import WarmupCosine, build_optimizer
from ..train.precision import autocast
from ..train.run_folder import check_run_dir, create_run_dir
from ..train.state import append_metrics, plot_curves, read_metrics, seed_everything, truncate_metrics
from ..weights.checkpoint import check_compatible, read_checkpoint, save_weights, write_json
from .recipe import DenseRecipe
from .tasks import MEAN, STD, DenseTask, make_task

log = logging.getLogger("swinv2")


class DenseRun:
    """One run's task, data, model, optimiser and schedule.

    ``classes`` (a finished run's, from its weights file) skips the training data, which then need not
    exist: the model is built for them and the validation set is read only if :meth:`evaluate` runs.
    """

    def __init__(self, recipe: DenseRecipe, device: torch.device, classes: list[str] | None = None):
        self.recipe, self.device = recipe, device
        self.task: DenseTask = make_task(recipe)
        self.epoch = 0
        if classes is None:
            self.train_set, self._val_set = self.task.datasets()
        else:
            self.train_set, self._val_set, self.task.classes = None, None, list(classes)
        self.model = self.task.build_model().to(device)
        if self.train_set is not None:
            self._init_optimisation()

    def _init_optimisation(self) -> None:
        r = self.recipe
        self.optimizer = build_optimizer(self.model, r.lr, r.weight_decay)
        self.steps_per_epoch = len(self.loader(self.train_set, train=True))
        self.scheduler = WarmupCosine(
            self.optimizer,
            r.lr,
            r.min_lr,
            total=r.epochs * self.steps_per_epoch,
            warmup=int(r.warmup_epochs * self.steps_per_epoch),
        )

    @property
    def val_set(self):
        """The validation set, read on first use (predicting reads no data)."""
        if self._val_set is None:
            self._val_set = self.task.val_dataset()
        return self._val_set

    def loader(self, dataset, train: bool, seed: int = 0) -> DataLoader:
        gen = torch.Generator().manual_seed(seed)
        return DataLoader(
            dataset,
            batch_size=self.recipe.batch_size,
            shuffle=train,
            generator=gen,
            # an incomplete last batch is dropped (as detectron2 and mmseg do): none of 1 image, none smaller than
            # the rest; a training set of at most one batch is kept whole (UperNet's BatchNorm trains on 1 image)
            drop_last=train and len(dataset) > self.recipe.batch_size,
            num_workers=self.recipe.workers,
            collate_fn=self.task.collate,
        )

    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch,
        }

    def load_state_dict(self, state: dict) -> None:
        check_compatible(self.model.state_dict(), state["model"], "the checkpoint's model")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch = int(state["epoch"])

    def train_epoch(self, progress: bool) -> dict:
        """One pass; RNGs are re-seeded from (seed, epoch) so a resumed run repeats an uninterrupted one."""
        r = self.recipe
        seed = r.seed * 100_003 + self.epoch
        seed_everything(seed)
        self.model.train()
        loader = self.loader(self.train_set, train=True, seed=seed)
        sums: dict[str, float] = {}
        start, seen = time.perf_counter(), 0
        bar = tqdm(
            loader, desc=f"epoch {self.epoch + 1}/{r.epochs}", leave=False, file=sys.stderr, disable=not progress
        )
        skipped = 0
        for i, batch in enumerate(bar):
            if batch is None:  # no file of this batch could be read (the dataset counts them)
                self.scheduler.step()
                continue
            with autocast(self.device, r.amp):
                loss, parts = self.task.loss(self.model, batch, self.device)
            value = loss.item()
            self.optimizer.zero_grad(set_to_none=True)
            if self._finite(value, f"loss {value} ({parts})", i, len(loader)):
                loss.backward()
                norm = nn.utils.clip_grad_norm_(self.model.parameters(), r.clip_grad or math.inf)
                if self._finite(float(norm), f"gradient norm {float(norm)}", i, len(loader)):
                    self.optimizer.step()
                    n = len(batch[0])
                    seen += n
                    for k, v in {"train_loss": value, **parts}.items():
                        sums[k] = sums.get(k, 0.0) + v * n
                    bar.set_postfix(loss=f"{sums['train_loss'] / seen:.3f}")
                else:
                    skipped += 1
            else:
                skipped += 1
            self.scheduler.step()
        self.epoch += 1
        stats = {**{k: v / seen for k, v in sums.items()}} if seen else {"train_loss": math.nan}
        stats.update(seconds=time.perf_counter() - start, images=seen)
        if r.skip_nonfinite:
            stats["skipped_steps"] = skipped
        return stats

    def _finite(self, value: float, what: str, batch: int, batches: int) -> bool:
        """True for a finite ``value``; False when --skip-nonfinite skips it; else the run stops."""
        if math.isfinite(value):
            return True
        if self.recipe.skip_nonfinite:
            return False
        raise NonFiniteLossError(nonfinite_message(what, self.epoch + 1, batch + 1, batches, self.recipe))

    def evaluate(self) -> dict:
        with autocast(self.device, self.recipe.amp):
            return self.task.evaluate(self.model, self.loader(self.val_set, train=False), self.device)


def fit_dense(recipe: DenseRecipe, resume: bool = False, stop_after: int | None = None, progress: bool = True):
    """Train per ``recipe`` into its run folder (continuing the run there with ``resume``).

    Returns the summary, or None when ``stop_after`` epochs ended this invocation early.
    """
    wall = time.perf_counter()
    run_dir = check_run_dir(recipe, resume)
    if recipe.data:  # config.json names the data wherever the run is resumed or evaluated from
        recipe.data = str(Path(recipe.data).resolve())
    device = resolve_device(recipe.device)
    settle_precision(recipe, device)
    seed_everything(recipe.seed)
    run = DenseRun(recipe, device)
    for split, dataset in (("train", run.train_set), ("val", run.val_set)):  # else the folder outlives the error
        first_readable(dataset, f"the {split} split of {run.task.root}")
    create_run_dir(recipe)
    if resume and (checkpoint := latest_valid(run_dir)) is not None:
        run.load_state_dict(load_state(checkpoint, run.device))
        print(f"resuming {run_dir} after epoch {run.epoch}")
    truncate_metrics(run_dir, run.epoch)
    params = sum(p.numel() for p in run.model.parameters())
    print(
        f"{recipe.task} with {recipe.model} ({params / 1e6:.2f}M params): {len(run.train_set)} train / "
        f"{len(run.val_set)} val images from {run.task.root}, {recipe.epochs} epochs x {run.steps_per_epoch} steps, "
        f"{run.device}, amp {recipe.amp} ({recipe.amp_reason})"
    )
    done = 0
    metric = run.task.main_metric
    while run.epoch < recipe.epochs:
        stats = run.train_epoch(progress)
        row = {"epoch": run.epoch, "lr": run.scheduler.lr, **stats, **run.evaluate()}
        unreadable = take_unreadable(run.train_set) + take_unreadable(run.val_set)
        if unreadable:
            row["unreadable_files"] = len(unreadable)
        append_metrics(run_dir, row)
        write_checkpoint(run.state_dict(), run_dir, run.epoch)
        print(
            f"epoch {run.epoch}/{recipe.epochs}  loss {row['train_loss']:.4f}  {metric} {row[metric]:.2f}  "
            f"{row['images'] / row['seconds']:.1f} img/s  {row['seconds']:.0f}s",
            flush=True,
        )
        for line in epoch_notes(row, unreadable):
            print(line)
        done += 1
        if stop_after is not None and done >= stop_after and run.epoch < recipe.epochs:
            return None
    return finish(run, run_dir, wall)


def finish(run: DenseRun, run_dir: Path, wall_start: float) -> dict:
    """Final weights, ``summary.json``, curves and ``predictions.png``."""
    recipe = run.recipe
    meta = {"task": recipe.task, "classes": json.dumps(run.task.classes), "recipe": json.dumps(recipe.to_dict())}
    save_weights(run.model, run_dir / "model.safetensors", meta)
    rows = read_metrics(run_dir)
    summary = {
        "task": recipe.task,
        "model": recipe.model,
        "data": str(run.task.root),
        **{k: v for k, v in rows[-1].items() if k not in ("epoch", "lr", "seconds", "images")},
        "epochs": run.epoch,
        "train_images": len(run.train_set),
        "eval_images": len(run.val_set),
        "train_seconds": sum(r["seconds"] for r in rows),
        "wall_seconds_this_invocation": time.perf_counter() - wall_start,
        "params": sum(p.numel() for p in run.model.parameters()),
    }
    write_json(run_dir / "summary.json", summary)
    plot_curves(run_dir, run.task.metrics)
    draw_predictions(run, run_dir / "predictions.png")
    metric = run.task.main_metric
    print(f"done: {metric} {summary[metric]:.2f}  in {summary['train_seconds']:.0f}s of training -> {run_dir}")
    return summary


def draw_predictions(run: DenseRun, path: Path, count: int | None = None) -> Path | None:
    """A grid of the first readable validation images with the model's predictions drawn on them."""
    from itertools import islice

    from torchvision.utils import save_image

    readable = (sample[0] for sample in (run.val_set[i] for i in range(len(run.val_set))) if sample is not None)
    images = list(islice(readable, count or run.recipe.pictures))
    if not images:
        return None
    with autocast(run.device, run.recipe.amp):
        drawn = run.task.draw(run.model, images, run.device)
    # images of a real dataset differ in size: pad each to the largest so that they tile into one grid
    h, w = max(d.shape[-2] for d in drawn), max(d.shape[-1] for d in drawn)
    tiles = [F.pad(d.float() / 255, (0, w - d.shape[-1], 0, h - d.shape[-2]), value=1.0) for d in drawn]
    save_image(tiles, path, nrow=4, padding=2, pad_value=1.0)
    return path


def load_run(run_dir: str | Path, **changes: object) -> DenseRun:
    """A finished run's model (``model.safetensors``) with its recipe, ``changes`` applied (test size,
    window, data, limits), ready to evaluate or predict.

    The class names come from the weights file, so only the data evaluated is read. Runs whose file has
    none (older versions) read them from the training data, as they did then.
    """
    expect_run(run_dir, ("detect", "segment"), "load_run")
    run_dir = Path(run_dir)
    recipe = DenseRecipe.load(run_dir / "config.json")
    for key, value in changes.items():
        if value is not None:
            setattr(recipe, key, value)
    recipe.__post_init__()
    recipe.pretrained = None  # the run's own weights replace the backbone's initialisation
    tensors, meta = read_checkpoint(run_dir / "model.safetensors")
    classes = json.loads(meta["classes"]) if "classes" in meta else None
    try:
        run = DenseRun(recipe, resolve_device(recipe.device), classes)
    except FileNotFoundError as exc:
        if classes is not None:
            raise
        raise FileNotFoundError(
            f"{run_dir / 'model.safetensors'} names no classes (an older run), so they are read from its "
            f"training data, which is not there: {exc}. Put it back, or give eval --data the dataset trained on"
        ) from exc
    run.model.load_state_dict(tensors)
    run.task.set_test_geometry(run.model)
    return run


def predict_files(run: DenseRun, paths: list[str], out_dir: Path) -> list[Path]:
    """Draw the run's predictions on each image (folders: each file in them); one PNG per image in
    ``out_dir``. Files that are not images are skipped with a line on stderr; 16-bit images are scaled
    to 8 bits as training reads them."""
    from torchvision.transforms import v2
    from torchvision.utils import save_image

    images = images_among(paths)
    names = output_names(images, run.recipe.task)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in images:
        try:
            image = v2.functional.to_dtype(read_image(path), torch.float32, scale=True)
        except UnreadableImage as exc:  # an image header over a truncated or corrupt body
            print(f"skipped {exc}", file=sys.stderr)
            continue
        if run.recipe.task == "segment":
            image = v2.functional.normalize(image, MEAN, STD)
        with autocast(run.device, run.recipe.amp):
            drawn = run.task.draw(run.model, [image], run.device)[0]
        save_image(drawn.float() / 255, out_dir / names[path])
        written.append(out_dir / names[path])
    return written


def images_among(paths: list[str]) -> list[Path]:
    """The image files of ``paths``; each other file is named on stderr, none at all is an error."""
    images = []
    for path in input_files(paths):
        if _is_image(path):
            images.append(path)
        else:
            print(f"skipped {path}: not an image", file=sys.stderr)
    if not images:
        raise ValueError(f"no image among {', '.join(paths)}")
    return images


def input_files(paths: list[str]) -> list[Path]:
    """The files named, a folder standing for the files directly in it (sorted); each file once."""
    files: list[Path] = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.is_file())
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"image not found: {path}")
    return list(dict.fromkeys(files))


def _is_image(path: Path) -> bool:
    """Whether PIL recognises the file, from its header alone (cheap: nothing is decoded)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path):
            return True
    except (UnidentifiedImageError, OSError):
        return False


def output_names(paths: list[Path], task: str) -> dict[Path, str]:
    """``<stem>_<task>.png`` per input; inputs sharing a stem keep their extension in it (``a_png_...``,
    ``a_jpg_...``) so that none overwrites another. Names still shared (one file name in two folders) are
    refused: each would silently replace the other."""
    stems: dict[str, int] = {}
    for p in paths:
        stems[p.stem] = stems.get(p.stem, 0) + 1
    names = {
        p: f"{p.stem}_{p.suffix[1:]}_{task}.png" if stems[p.stem] > 1 and p.suffix else f"{p.stem}_{task}.png"
        for p in paths
    }
    seen: dict[str, Path] = {}
    for p, name in names.items():
        if name in seen:
            raise ValueError(f"{seen[name]} and {p} would both be drawn to {name}; predict them into separate --output")
        seen[name] = p
    return names

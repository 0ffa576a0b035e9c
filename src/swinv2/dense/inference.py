"""A finished dense run for evaluation, pictures and prediction: ``load_run`` and what it draws.

Only the data evaluated is read; predicting reads none.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..data.decode import UnreadableImage, read_image
from ..runs import expect_run
from ..train.loop import resolve_device
from ..train.precision import autocast
from ..weights.checkpoint import read_checkpoint
from .recipe import DenseRecipe
from .tasks import MEAN, STD, DenseTask, make_task


class DenseRun:
    """A dense model with its task and recipe. ``val_set`` is read on first use, from the recipe's data
    unless given."""

    def __init__(
        self,
        recipe: DenseRecipe,
        device: torch.device,
        task: DenseTask,
        model: nn.Module,
        val_set: Dataset | None = None,
    ):
        self.recipe, self.device, self.task, self.model = recipe, device, task, model
        self._val_set = val_set

    @property
    def val_set(self) -> Dataset:
        if self._val_set is None:
            self._val_set = self.task.val_dataset()
        return self._val_set

    def evaluate(self) -> dict:
        loader = DataLoader(
            self.val_set,
            batch_size=self.recipe.batch_size,
            num_workers=self.recipe.workers,
            collate_fn=self.task.collate,
        )
        with autocast(self.device, self.recipe.amp):
            return self.task.evaluate(self.model, loader, self.device)


def draw_predictions(run: DenseRun, path: Path, count: int | None = None, save: bool = True) -> Path | None:
    """A grid of the first readable validation images with the model's predictions drawn on them
    (``save=False``: drawn, not written, as the other ranks of a sharded model must)."""
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
    if save:
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
    task = make_task(recipe)
    try:
        if classes is None:
            task.train_dataset()  # names the classes
        else:
            task.classes = list(classes)
    except FileNotFoundError as exc:
        if classes is not None:
            raise
        raise FileNotFoundError(
            f"{run_dir / 'model.safetensors'} names no classes (an older run), so they are read from its "
            f"training data, which is not there: {exc}. Put it back, or give eval --data the dataset trained on"
        ) from exc
    device = resolve_device(recipe.device)
    model = task.build_model().to(device)
    model.load_state_dict(tensors)
    task.set_test_geometry(model)
    return DenseRun(recipe, device, task, model)


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

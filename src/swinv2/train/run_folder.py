"""The run folder of a training command: found or created, claimed, checked before a resume."""

from __future__ import annotations

import time
from pathlib import Path

from .checkpoints import LEGACY_DCP, LEGACY_PT, checkpoints
from .recipe import TrainRecipe

# What a finished run leaves besides its checkpoints (which may have been deleted to save space).
RUN_RESULTS = ("model.safetensors", "summary.json")


def check_run_dir(recipe: TrainRecipe, resume: bool) -> Path:
    """The run folder (``recipe.output``, else a timestamped one), refusing to start over a saved run,
    finished or not. Creates nothing: a run that fails validation leaves no folder behind."""
    run_dir = Path(recipe.output or f"runs/{time.strftime('%Y%m%d-%H%M%S')}")
    for folder in (run_dir, *run_dir.parents):
        if folder.exists() and not folder.is_dir():
            raise NotADirectoryError(f"--output {run_dir}: {folder} is a file, expected a folder")
    saved = checkpoints(run_dir) or (run_dir / LEGACY_PT).is_file() or (run_dir / LEGACY_DCP).is_dir()
    finished = any((run_dir / name).is_file() for name in RUN_RESULTS)
    if not resume and (saved or finished):
        raise FileExistsError(f"{run_dir} already holds a run; use --resume {run_dir} or another --output")
    if resume and finished and not saved:
        raise FileNotFoundError(
            f"{run_dir} holds a finished run's weights but no checkpoint to resume from; fine-tune from them "
            f"with --pretrained {run_dir / RUN_RESULTS[0]} and another --output"
        )
    recipe.output = str(run_dir)
    return run_dir


def claim_run_dir(name: str) -> str:
    """Create the default (timestamped) run folder exclusively: two runs started in the same second
    get ``name`` and ``name-2`` instead of writing into one folder."""
    for n in range(1, 1000):
        candidate = name if n == 1 else f"{name}-{n}"
        try:
            Path(candidate).mkdir(parents=True)
            return candidate
        except FileExistsError:
            continue
    raise FileExistsError(f"{name}: no free run folder name; give --output")


def create_run_dir(recipe: TrainRecipe, main: bool = True) -> Path:
    """Create the run folder with the resolved recipe (written by the ``main`` process only)."""
    run_dir = Path(recipe.output)
    run_dir.mkdir(parents=True, exist_ok=True)
    if main:
        recipe.save(run_dir / "config.json")
    return run_dir


def check_resumed_epochs(recipe: TrainRecipe, done: int, run_dir: Path, inside: bool = False) -> None:
    """A resume may extend a run, not cut it below the epochs its checkpoint already holds (nor end it
    inside the epoch a mid-epoch checkpoint is in)."""
    if inside and recipe.epochs <= done:
        raise ValueError(
            f"{run_dir} stopped inside epoch {done + 1}; --epochs {recipe.epochs} would end it before its "
            f"checkpoint (give --epochs {done + 1} or more)"
        )
    if recipe.epochs < done:
        raise ValueError(
            f"{run_dir} has trained {done} epochs; --epochs {recipe.epochs} would end it before its checkpoint "
            f"(give --epochs {done} or more, or start a new run from its weights with --pretrained)"
        )

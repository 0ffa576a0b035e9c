"""What kind of run a folder holds, so that each command refuses another command's run by name.

Every ``swinv2 ... train`` writes its recipe to ``config.json``; the fields tell the kinds apart (dense
recipes name their task, video recipes their frames, SimMIM recipes their mask ratio). Handing one
command another's run would otherwise fail deep inside (an unknown model name, hundreds of missing
keys) or, worse, run: a detection run resumed by ``swinv2 segment train`` trained on as detection.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

# kind -> (what it is, the command that writes it)
KINDS = {
    "classify": ("an image classification run", "swinv2 train"),
    "pretrain": ("a SimMIM pretraining run", "swinv2 pretrain"),
    "video": ("a video classification run", "swinv2 video train"),
    "detect": ("a detection run", "swinv2 detect train"),
    "segment": ("a segmentation run", "swinv2 segment train"),
}


class WrongRunError(ValueError):
    """A run folder written by another command than the one given it."""


def run_folder(path: str | os.PathLike) -> Path | None:
    """The run folder ``path`` stands for: itself, or the folder of the weights or a checkpoint a run wrote
    (other files are their own: a ``weights.pth`` kept beside some run's config.json is not that run)."""
    path = Path(path)
    if not path.is_dir() and path.name != "model.safetensors" and not path.name.startswith("checkpoint-"):
        return None
    folder = path if path.is_dir() else path.parent
    return folder if (folder / "config.json").is_file() else None


def run_recipe(path: str | os.PathLike) -> dict | None:
    """The recipe (config.json) of the run at ``path`` as written; None where there is no readable one or
    it is a ``save_pretrained`` folder's model description."""
    folder = run_folder(path)
    if folder is None:
        return None
    try:
        fields = json.loads((folder / "config.json").read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return fields if isinstance(fields, dict) and "architecture" not in fields and "model" in fields else None


def run_kind(path: str | os.PathLike) -> str | None:
    """The kind of run (a key of :data:`KINDS`) at ``path``; None for anything else (a weights file of
    another origin, a ``save_pretrained`` folder, an unreadable recipe: their own loaders report those)."""
    fields = run_recipe(path)
    if fields is None:
        return None
    if fields.get("task") in ("detect", "segment"):
        return fields["task"]
    if "num_frames" in fields:
        return "video"
    if "mask_ratio" in fields:
        return "pretrain"
    return "classify" if "epochs" in fields else None


def expect_run(path: str | os.PathLike | None, kinds: tuple[str, ...], taker: str, action: str = "use") -> None:
    """``WrongRunError`` when ``path`` is a run of a kind outside ``kinds``, naming what it is and what
    takes it. ``taker`` names the refusing command as the message shows it (``"`swinv2 eval`"``);
    ``action`` is what it does with the run: ``use`` (evaluate, predict), ``resume`` or ``start``
    (initialise from its weights), and picks the advice."""
    kind = run_kind(path) if path is not None else None
    if kind is None or kind in kinds:
        return
    what, writer = KINDS[kind]
    names = [KINDS[k][0] for k in kinds]
    wanted = " or ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)
    advice = _advice(kind, path, action)
    raise WrongRunError(f"{path} is {what} (written by `{writer}`); {taker} takes {wanted}{advice}")


def _advice(kind: str, path: str | os.PathLike, action: str) -> str:
    writer = KINDS[kind][1]
    if action == "resume":
        return f". Resume it with `{writer} --resume {path}`"
    if action == "start":
        return ""
    if kind == "pretrain":
        return f". Fine-tune it first: `swinv2 train --pretrained {path}`"
    family = writer.removesuffix(" train")
    return f". Use `{family} eval` or `{family} predict` on it"

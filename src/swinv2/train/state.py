"""The run folder: resolved recipe, metrics.jsonl, RNG states, summary, curves."""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path

import numpy as np
import torch


def atomic_torch_save(obj: object, path: Path) -> None:
    """Write to a temporary file, fsync it, then rename: a crash leaves the old file or the new, never half."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def rng_state() -> dict:
    """This process's torch, CUDA, NumPy and Python generators, whole (a mid-epoch resume continues them).

    Tensors, numbers and tuples only, so the checkpoint stays loadable with ``weights_only=True``."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    version, words, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": torch.from_numpy(keys.astype(np.int64)),
        "numpy_rest": (int(pos), int(has_gauss), float(gauss)),
        "python": words,
        "python_rest": (version, gauss_next),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Put back the generators :func:`rng_state` saved."""
    # a checkpoint read with map_location="cuda" holds them on the GPU; generator states live on the CPU
    torch.set_rng_state(state["torch"].cpu())
    pos, has_gauss, gauss = state["numpy_rest"]
    np.random.set_state(("MT19937", state["numpy"].cpu().numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, gauss_next = state["python_rest"]
    random.setstate((version, tuple(state["python"]), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def derived_seed(seed: int, key: object) -> int:
    """A 56-bit seed unrelated to ``seed`` and to every other ``key`` (a rank, a sample index)."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{key}".encode()).digest()[:7], "little")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def append_metrics(run_dir: Path, row: dict) -> None:
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")


def read_metrics(run_dir: Path) -> list[dict]:
    """The rows of ``metrics.jsonl``; a last line cut short by a crash mid-write is dropped."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # only the row being appended when the process died can be partial
    return rows


def truncate_metrics(run_dir: Path, epochs: int) -> None:
    """At the start (or resume) of a run, forget metric rows of epochs that its checkpoint does not hold:
    a crash between appending an epoch's row and publishing its checkpoint would otherwise repeat it."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return
    rows = [r for r in read_metrics(run_dir) if r["epoch"] <= epochs]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    os.replace(tmp, path)


def plot_curves(run_dir: Path, metrics: tuple[str, ...] = ("top1", "top5")) -> Path | None:
    """``curves.png``: train loss and the evaluation ``metrics`` (percent) per epoch."""
    rows = read_metrics(run_dir)
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax1.plot(epochs, [r["train_loss"] for r in rows], marker="o")
    ax1.set(xlabel="epoch", ylabel="train loss", title="training loss")
    for metric, marker in zip(metrics, "os^v"):
        ax2.plot(epochs, [r[metric] for r in rows], marker=marker, label=metric)
    ax2.set(xlabel="epoch", ylabel="percent", title="evaluation")
    ax2.legend()
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path = run_dir / "curves.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path

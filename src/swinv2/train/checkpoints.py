"""A run's checkpoints: atomic, checksummed, the last K kept (two by default), verified before a resume.

Layout in the run folder: ``checkpoint-0007.pt`` (one file; single, ddp, zero, dense runs) with its digest
in ``checkpoint-0007.pt.sha256``, or ``checkpoint-0007.dcp/`` (fsdp shards) with ``SHA256SUMS`` inside.
A checkpoint written inside an epoch carries its optimiser step too: ``checkpoint-0007-000120.pt`` is
seven epochs and 120 steps of the eighth; names sort by (epoch, step).
Every checkpoint is first written under a ``.tmp`` name, fsynced and hashed; the digest is written
before the rename that publishes the checkpoint, so a published checkpoint always has its digest and a
crash at any moment leaves the previous checkpoints untouched. A resume takes the newest checkpoint whose
bytes match their digest and warns about each one it had to pass over (truncated, bit-flipped, digest
missing); when none is usable it refuses, rather than silently start from scratch.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
from pathlib import Path

import torch

log = logging.getLogger("swinv2")

KEEP = 2  # the newest checkpoint and the one before it, the fallback should the newest be damaged
SUMS = "SHA256SUMS"
_NAME = re.compile(r"^checkpoint-(\d{4,})(?:-(\d{6,}))?\.(pt|dcp)$")
LEGACY_PT, LEGACY_DCP = "checkpoint.pt", "checkpoint.dcp"  # the single checkpoint of earlier versions


class CorruptCheckpoint(ValueError):
    """A checkpoint whose bytes do not match the digest written with it (or that has none)."""


def checkpoint_name(epoch: int, kind: str = "pt", step: int = 0) -> str:
    """The file name of the checkpoint after ``epoch`` epochs and ``step`` optimiser steps of the next."""
    return f"checkpoint-{epoch:04d}-{step:06d}.{kind}" if step else f"checkpoint-{epoch:04d}.{kind}"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_checkpoint(state: dict, run_dir: Path, epoch: int, step: int = 0, keep: int = KEEP) -> Path:
    """``state`` as ``checkpoint-<epoch>[-<step>].pt``: temp file, fsync, digest, rename; all but the
    ``keep`` newest pruned."""
    final = run_dir / checkpoint_name(epoch, "pt", step)
    tmp = final.with_name(final.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    _write_text(_sidecar(final), f"{sha256_file(tmp)}  {final.name}\n")
    os.replace(tmp, final)
    _fsync_dir(run_dir)
    prune(run_dir, keep)
    return final


def seal_directory(tmp: Path, run_dir: Path, epoch: int, step: int = 0, keep: int = KEEP) -> Path:
    """Publish a fully written checkpoint directory ``tmp`` as ``checkpoint-<epoch>[-<step>].dcp``."""
    files = sorted(p for p in tmp.rglob("*") if p.is_file() and p.name != SUMS)
    _write_text(tmp / SUMS, "".join(f"{sha256_file(p)}  {p.relative_to(tmp)}\n" for p in files))
    final = run_dir / checkpoint_name(epoch, "dcp", step)
    if final.exists():  # the same epoch written again after a resume from an older checkpoint
        shutil.rmtree(final)
    tmp.rename(final)
    _fsync_dir(run_dir)
    prune(run_dir, keep)
    return final


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def checkpoints(run_dir: Path) -> list[Path]:
    """Published checkpoints of the run, newest (epoch, step) first."""
    if not run_dir.is_dir():
        return []
    found = [(checkpoint_position(p), p.stat().st_mtime, p) for p in run_dir.iterdir() if _NAME.match(p.name)]
    return [p for *_, p in sorted(found, key=lambda item: item[:2], reverse=True)]


def checkpoint_position(path: Path) -> tuple[int, int]:
    """(epochs, optimiser steps of the next epoch) that the checkpoint ``path`` holds."""
    match = _NAME.match(path.name)
    if match is None:
        raise ValueError(f"{path.name} is not a checkpoint name (checkpoint-NNNN[-SSSSSS].pt or .dcp)")
    return int(match.group(1)), int(match.group(2) or 0)


def verify(path: Path) -> None:
    """Raise :class:`CorruptCheckpoint` unless every byte of ``path`` matches its recorded digest."""
    if path.is_dir():
        sums = path / SUMS
        if not sums.is_file():
            raise CorruptCheckpoint(f"{path.name}: no {SUMS}")
        for line in sums.read_text().splitlines():
            digest, name = line.split("  ", 1)
            _check(path / name, digest)
        return
    sidecar = _sidecar(path)
    if not sidecar.is_file():
        raise CorruptCheckpoint(f"{path.name}: no {sidecar.name}")
    _check(path, sidecar.read_text().split()[0] if sidecar.read_text().strip() else "")


def _check(path: Path, digest: str) -> None:
    if not path.is_file():
        raise CorruptCheckpoint(f"{path} is missing")
    actual = sha256_file(path)
    if actual != digest:
        size = path.stat().st_size
        raise CorruptCheckpoint(f"{path.name} ({size} bytes) does not match its SHA-256 (truncated or corrupted)")


def load_state(path: Path, device: torch.device | str = "cpu") -> dict:
    """A training checkpoint's contents, read with ``weights_only=True``: a file that tries to build
    anything but tensors and plain containers is refused before any of its code can run."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:
        raise ValueError(
            f"{path}: refused, not a weights-only training checkpoint ({type(exc).__name__}: {str(exc)[:200]})"
        ) from exc
    if not isinstance(state, dict) or "model" not in state or "epoch" not in state:
        raise ValueError(f"{path}: not a training checkpoint of this project (no model and epoch)")
    return state


def latest_valid(run_dir: Path) -> Path | None:
    """The newest checkpoint that verifies, warning about each newer one passed over.

    None when the run has no checkpoint yet; :class:`CorruptCheckpoint` when it has some and none verifies.
    """
    problems = []
    for path in checkpoints(run_dir):
        try:
            verify(path)
        except CorruptCheckpoint as exc:
            problems.append(str(exc))
            log.warning("checkpoint %s is unusable (%s); trying the previous one", path, exc)
            continue
        if problems:
            log.warning("resuming from %s, the newest intact checkpoint", path.name)
        return path
    if problems:
        raise CorruptCheckpoint(f"{run_dir}: no intact checkpoint ({'; '.join(problems)})")
    for legacy in (run_dir / LEGACY_PT, run_dir / LEGACY_DCP):  # written before checkpoints had digests
        if legacy.is_file() or (legacy / "trainer.pt").is_file():
            log.warning("resuming from %s, written without a digest: its integrity cannot be checked", legacy)
            return legacy
    return None


def prune(run_dir: Path, keep: int = KEEP) -> None:
    """Delete all but the ``keep`` newest checkpoints, and leftovers of interrupted writes."""
    for old in checkpoints(run_dir)[keep:]:
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)
            _sidecar(old).unlink(missing_ok=True)
    published = {p.name for p in checkpoints(run_dir)}
    for path in run_dir.glob("checkpoint-*"):
        stale_tmp = path.name.endswith(".tmp")
        orphan_digest = path.name.endswith(".sha256") and path.name[: -len(".sha256")] not in published
        if stale_tmp or orphan_digest:
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)

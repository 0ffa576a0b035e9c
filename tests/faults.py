"""Fault injection for the reliability tests and ``tests/fault_campaign.py``: real ``swinv2 train`` processes
killed with SIGKILL at random moments and resumed, damaged checkpoints, hostile pickles, broken images.

Every process runs with one thread, so that a resumed run can be compared with an uninterrupted one bit
for bit (float reductions depend on the thread count).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

# A short run of the default model, checkpoints every epoch: most of each process is start-up (importing
# torch and building the optimiser), so fewer images shorten these tests without changing what they see.
TRAIN_FLAGS = ["--train-limit", "768", "--val-limit", "256", "--epochs", "3", "--batch-size", "64"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
TINY = {"embed_dim": 16, "depths": (2, 2), "num_heads": (1, 2), "cpb_hidden": 32}


def recipe(output: Path, **kw):
    """An in-process run small enough for a test (a shrunk nano model on 256 images), with ``kw`` over it."""
    from swinv2.train import TrainRecipe

    base = dict(
        model="swinv2_nano_window7_28",
        model_overrides=TINY,
        train_limit=256,
        val_limit=128,
        epochs=3,
        batch_size=32,
        lr=1.6e-2,
        warmup_epochs=0.5,
        output=str(output),
    )
    return TrainRecipe(**{**base, **kw})


PYTHON_M = (sys.executable, "-m")  # how a command starts: one process, or two ranks under torchrun
TORCHRUN_M = (sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m")


def train_command(
    output: Path, flags: list[str] = TRAIN_FLAGS, command: tuple[str, ...] = ("train",), launcher=PYTHON_M
) -> list[str]:
    """``swinv2 <command>`` (train, pretrain, video train) with ``flags`` into ``output``."""
    return [*launcher, "swinv2", *command, *flags, "--output", str(output), "--no-progress"]


def restart_command(
    output: Path, flags: list[str] = TRAIN_FLAGS, command: tuple[str, ...] = ("train",), launcher=PYTHON_M
) -> list[str]:
    """``--resume`` once the run folder holds its recipe; before that, the first command again."""
    if (output / "config.json").is_file():
        return [*launcher, "swinv2", *command, "--resume", str(output), "--no-progress"]
    return train_command(output, flags, command, launcher)


def run(command: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=timeout)


def run_killed(command: list[str], after: float | None = None, until=None) -> bool:
    """Start ``command`` and SIGKILL it with every process it started (torchrun's agent and ranks at
    once, as a lost node would) ``after`` seconds later, or once ``until()`` holds; False when it
    finished first."""
    proc = subprocess.Popen(
        command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        if until is None:
            proc.wait(timeout=after)
            return False
        while proc.poll() is None:
            if until():
                raise subprocess.TimeoutExpired(command, 0)
            time.sleep(0.01)
        return False
    except subprocess.TimeoutExpired:
        kill_tree(proc.pid)
        proc.wait()
        return True


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and every process below it, as one lost node: torchrun starts each rank in a
    session of its own, so killing the agent's process group alone would leave the ranks training."""
    victims, frontier = [pid], [pid]
    while frontier:
        children = [c for parent in frontier for c in _children(parent)]
        victims += children
        frontier = children
    for victim in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)


def _children(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == parent:
                found.append(int(entry.name))
    return found


def train_with_kills(
    output: Path,
    kill_times: list[float],
    flags: list[str] = TRAIN_FLAGS,
    command: tuple[str, ...] = ("train",),
    launcher=PYTHON_M,
) -> dict:
    """Kill the run at each of ``kill_times`` (seconds after each (re)start), then let it finish.

    Returns the summary, the kills that landed and the checkpoint files on disk right after each kill.
    """
    landed, seen = 0, []
    for after in kill_times:
        if run_killed(restart_command(output, flags, command, launcher), after):
            landed += 1
            seen.append(sorted(p.name for p in output.glob("checkpoint-*")) if output.is_dir() else [])
    done = run(restart_command(output, flags, command, launcher))
    if done.returncode != 0:
        raise RuntimeError(f"the final resume failed:\n{done.stdout}\n{done.stderr}")
    summary = json.loads((output / "summary.json").read_text())
    return {"summary": summary, "kills": landed, "on_disk": seen, "stdout": done.stdout, "stderr": done.stderr}


def kill_schedule(seed: int, kills: int, span: float, start: float = 0.2) -> list[float]:
    """``kills`` moments spread uniformly over ``span`` seconds of a run's life (from ``start``)."""
    rng = random.Random(seed)
    return [rng.uniform(start, span) for _ in range(kills)]


def timed_run(command: list[str], marker: str, output: Path, last: str) -> tuple[float, float]:
    """Run ``command`` to its end: seconds until a file matching ``marker`` appeared in ``output``, and
    until the file ``last`` did (the training part of its life)."""
    import tempfile

    start, first, final = time.monotonic(), None, None
    with tempfile.TemporaryFile("w+") as log_file:
        proc = subprocess.Popen(command, env=ENV, stdout=log_file, stderr=subprocess.STDOUT, text=True)
        while proc.poll() is None:
            if first is None and output.is_dir() and any(output.glob(marker)):
                first = time.monotonic() - start
            if final is None and (output / last).exists():
                final = time.monotonic() - start
            time.sleep(0.01)
        log_file.seek(0)
        log = log_file.read()
    if proc.returncode != 0:
        raise RuntimeError(f"{command} failed:\n{log[-3000:]}")
    span = time.monotonic() - start
    return (first if first is not None else span), (final if final is not None else span)


def same_run(run_dir: Path, ref: Path) -> bool:
    """Every metric of every epoch (but the timings) and every weight bit equal."""
    from swinv2.train.state import read_metrics

    def numbers(run: Path) -> list[dict]:
        return [{k: v for k, v in r.items() if k not in ("seconds", "img_per_s")} for r in read_metrics(run)]

    done = (run_dir / "model.safetensors").is_file()
    return (
        done
        and numbers(run_dir) == numbers(ref)
        and same_weights(run_dir / "model.safetensors", ref / "model.safetensors")
    )


def same_weights(a: Path, b: Path) -> bool:
    from safetensors.torch import load_file

    wa, wb = load_file(a), load_file(b)
    return wa.keys() == wb.keys() and all(bool((wa[k] == wb[k]).all()) for k in wa)


# ------------------------------------------------------------------------------------ damaged files
def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flip_byte(path: Path, seed: int = 0) -> None:
    data = bytearray(path.read_bytes())
    data[random.Random(seed).randrange(len(data))] ^= 0x40
    path.write_bytes(bytes(data))


def empty(path: Path) -> None:
    path.write_bytes(b"")


DAMAGES = {"truncated": truncate, "bit flip": flip_byte, "empty": empty}


class CreatesFile:
    """A pickle payload that would create ``target`` when unpickled by a trusting loader."""

    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


class RunsShell:
    """A pickle payload that would run a shell command creating ``target``."""

    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def malicious_checkpoint(path: Path, payload: object) -> None:
    """A torch zip checkpoint whose pickle calls ``payload``'s reducer (what a hostile upload looks like)."""
    import torch

    torch.save({"model": {"patch_embed.proj.weight": payload}, "epoch": 1}, path)


# ------------------------------------------------------------------------------------- image folders
def broken_image_folder(root: Path, per_class: int = 12, size: int = 32) -> dict[str, int]:
    """``root/{train,val}/<class>/`` of small PNGs in several modes, plus broken files in train/.

    Returns how many files of each kind of damage were planted.
    """
    rng = np.random.default_rng(0)
    modes = ["L", "RGB", "RGBA", "I;16", "P"]
    for split in ("train", "val"):
        for cls in ("a", "b"):
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                base = 60 if cls == "a" else 190
                pixels = np.clip(rng.normal(base, 20, (size, size)), 0, 255)
                mode = modes[i % len(modes)]
                if mode == "I;16":
                    Image.fromarray((pixels * 256).astype(np.uint16)).save(folder / f"{i}.png")
                else:
                    Image.fromarray(pixels.astype(np.uint8), "L").convert(mode).save(folder / f"{i}.png")
    train_a = root / "train" / "a"
    good = io.BytesIO()
    Image.fromarray(np.zeros((size, size), np.uint8)).save(good, format="JPEG")
    (train_a / "truncated.jpg").write_bytes(good.getvalue()[: len(good.getvalue()) // 3])
    (train_a / "not_an_image.png").write_text("this is text, not a PNG\n")
    (train_a / "empty.jpg").write_bytes(b"")
    (root / "train" / "b" / "garbage.jpeg").write_bytes(bytes(np.random.default_rng(1).integers(0, 256, 500, np.uint8)))
    (root / "val" / "b" / "cut.png").write_bytes((root / "val" / "b" / "1.png").read_bytes()[:40])
    return {"truncated JPEG": 1, "text named .png": 1, "empty file": 1, "random bytes": 1, "truncated PNG (val)": 1}


def wait_for(predicate, timeout: float, every: float = 0.1) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(every)
    return False


# ----------------------------------------------------------------------------------------- ranks
DIST_FLAGS = ["--strategy", "ddp", "--train-limit", "1536", "--val-limit", "256", "--epochs", "4", "--batch-size", "64"]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_ranks(args: list[str], world: int = 2) -> list[subprocess.Popen]:
    """``world`` processes of ``python -m swinv2 ARGS`` wired up by environment, as a cluster launcher
    (srun, mpirun) would start them: no torchrun agent watches over them."""
    port, procs = free_port(), []
    for rank in range(world):
        env = {**ENV, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank)}
        env.update(LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world))
        command = [sys.executable, "-m", "swinv2", *args]
        procs.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return procs


def torchrun(args: list[str], world: int = 2) -> subprocess.Popen:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(world)]
    command += ["-m", "swinv2", *args]
    return subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def child_with_rank(parent: int, rank: int) -> int:
    """The pid of ``parent``'s child process whose environment says RANK=``rank``."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and f"RANK={rank}".encode() in environ:
            return int(entry.name)
    raise LookupError(f"no child of {parent} with RANK={rank}")


# --------------------------------------------------------------------------------- deaths mid-save
SAVE_POINTS = ("payload", "digest", "rename", "prune")


def die_during_save(point: str, epoch: int, argv: list[str]) -> None:
    """Run ``swinv2 ARGV`` in this process and SIGKILL it at ``point`` of the save of checkpoint ``epoch``:
    halfway through writing the payload or the digest, just before the rename that publishes it, or just
    after (before older checkpoints are pruned). Random kills rarely land in a write of a few ms; this one
    always does. Used as ``python -c "import faults; faults.die_during_save(...)"``."""
    import torch

    from swinv2.cli import main
    from swinv2.train import checkpoints as ckpt

    target = ckpt.checkpoint_name(epoch)
    die = lambda: os.kill(os.getpid(), signal.SIGKILL)  # noqa: E731
    real_save, real_text, real_replace, real_prune = torch.save, ckpt._write_text, os.replace, ckpt.prune

    def save(obj, f, *args, **kwargs):
        if point == "payload" and getattr(f, "name", "").endswith(target + ".tmp"):
            buffer = io.BytesIO()
            real_save(obj, buffer)
            f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
            f.flush()
            die()
        return real_save(obj, f, *args, **kwargs)

    def write_text(path, text):
        if point == "digest" and path.name == target + ".sha256":
            path.with_name(path.name + ".tmp").write_text(text[: len(text) // 2])
            die()
        return real_text(path, text)

    def replace(src, dst):
        if point == "rename" and str(dst).endswith(target):
            die()
        return real_replace(src, dst)

    def prune(run_dir, *args):
        if point == "prune" and (run_dir / target).exists():
            die()
        return real_prune(run_dir, *args)

    ckpt.torch.save, ckpt._write_text, ckpt.os.replace, ckpt.prune = save, write_text, replace, prune
    sys.exit(main(argv))


def die_during_save_command(point: str, epoch: int, output: Path, flags: list[str] = TRAIN_FLAGS) -> list[str]:
    argv = [*flags, "--output", str(output), "--no-progress"]
    here = str(Path(__file__).parent)
    code = f"import sys; sys.path.insert(0, {here!r}); import faults; faults.die_during_save({point!r}, {epoch}, "
    code += f"['train', *{argv!r}])"
    return [sys.executable, "-c", code]

"""The fault-injection campaign behind the table in docs/reliability.md: the faults of
``tests/test_reliability.py``, injected many more times, with every outcome counted.

    python tests/fault_campaign.py --output runs/faults [--kill-chains 20] [--rank-faults 3]
        [--mid-epoch-chains 5] [--sections kills,mid_epoch_kills,...] [--mid-epoch-tasks "detection;..."]

Writes ``results.json`` and ``results.md`` (the table) in the output folder; takes about 13 minutes on
2 cores. Every training process runs on one thread so that resumed runs can be compared bit for bit.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import signal
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch

from faults import (
    DAMAGES,
    DIST_FLAGS,
    PYTHON_M,
    SAVE_POINTS,
    TORCHRUN_M,
    CreatesFile,
    RunsShell,
    broken_image_folder,
    child_with_rank,
    die_during_save_command,
    kill_schedule,
    launch_ranks,
    malicious_checkpoint,
    recipe,
    restart_command,
    run,
    same_run,
    same_weights,
    timed_run,
    torchrun,
    train_command,
    train_with_kills,
    wait_for,
)
from test_reliability import InfGrad, NanLoss

torch.set_num_threads(1)

# Runs that checkpoint every 3 optimiser steps (32 an epoch, 2 epochs), killed at random moments of their
# training: (command, flags, launcher) per task.
STEPS = ["--epochs", "2", "--checkpoint-every", "3"]
IMAGES = ["--train-limit", "2048", "--val-limit", "256", "--batch-size", "64", *STEPS]
# Mask R-CNN on 192 scenes of 64 px ({scenes}: written by the campaign), batches of 8: 24 steps an epoch.
DETECT = ["--data", "{scenes}", "--img-size", "64", "--batch-size", "8", "--fpn-channels", "32", "--pictures", "1"]
MID_EPOCH_TASKS = {
    "classification": (("train",), IMAGES, PYTHON_M),
    "classification, 2 loader workers": (("train",), [*IMAGES, "--workers", "2"], PYTHON_M),
    "classification, ddp on 2 ranks": (("train",), [*IMAGES, "--strategy", "ddp"], TORCHRUN_M),
    "SimMIM": (("pretrain",), IMAGES, PYTHON_M),
    "video": (("video", "train"), ["--train-limit", "256", "--val-limit", "32", "--batch-size", "8", *STEPS], PYTHON_M),
    "detection": (("detect", "train"), [*DETECT, *STEPS], PYTHON_M),
    "detection, ddp on 2 ranks": (("detect", "train"), [*DETECT, *STEPS, "--strategy", "ddp"], TORCHRUN_M),
}


def same_result(run_dir: Path, ref: Path) -> bool:
    a, b = (json.loads((d / "summary.json").read_text()) for d in (run_dir, ref))
    same = a["top1"] == b["top1"] and a["final_train_loss"] == b["final_train_loss"]
    return same and same_weights(run_dir / "model.safetensors", ref / "model.safetensors")


class Campaign:
    def __init__(self, root: Path):
        self.root, self.rows = root, []

    def record(self, fault: str, times: int, outcome: Counter, note: str = "") -> None:
        text = ", ".join(f"{k}: {v}" for k, v in sorted(outcome.items()))
        self.rows.append({"fault": fault, "times": times, "outcome": dict(outcome), "note": note})
        print(f"{fault}: {times}x -> {text} {note}", flush=True)

    # -------------------------------------------------------------------------------------- kills
    def kills(self, chains: int) -> None:
        ref = self.root / "kill_ref"
        start = time.monotonic()
        assert run(train_command(ref)).returncode == 0
        span = time.monotonic() - start
        outcome, landed, phases = Counter(), 0, Counter()
        for seed in range(chains):
            out = self.root / f"kill_{seed}"
            result = train_with_kills(out, kill_schedule(seed, 1 + seed % 3, span))
            landed += result["kills"]
            for files in result["on_disk"]:
                done = max([int(f[11:15]) for f in files if f.endswith(".pt")], default=0)
                phases[f"epoch {done + 1}" if done < 3 else "after the last epoch"] += 1
                phases["mid-write (temp file left)"] += any(f.endswith(".tmp") for f in files)
            outcome["identical to the uninterrupted run" if same_result(out, ref) else "DIFFERENT"] += 1
        where = ", ".join(f"{k}: {v}" for k, v in sorted(phases.items()))
        self.record("kill -9 of `swinv2 train` at a random moment, then `--resume`", landed, outcome,
                    f"({chains} runs; kills landed in {where})")  # fmt: skip

    def mid_epoch_kills(self, chains: int, tasks: list[str]) -> None:
        """kill -9 (the whole process group) at random moments of runs that checkpoint every 3 steps."""
        for task in tasks:
            command, flags, launcher = MID_EPOCH_TASKS[task]
            flags = [self.scenes() if flag == "{scenes}" else flag for flag in flags]
            ref = self.root / f"mid_ref_{task.split(',')[0]}_{len(self.rows)}"
            # kills from just before the first checkpoint to the last epoch's (start-up and the final
            # evaluation are the `kills` section's): the training part of the run's life
            command_line = train_command(ref, flags, command, launcher)
            first_save, last_save = timed_run(command_line, "checkpoint-*", ref, "checkpoint-0002.pt")
            outcome, landed, newest = Counter(), 0, Counter()
            for seed in range(chains):
                out = ref.with_name(f"{ref.name}_kill_{seed}")
                moments = kill_schedule(100 + seed, 1 + seed % 3, last_save, 0.8 * first_save)
                result = train_with_kills(out, moments, flags, command, launcher)
                landed += result["kills"]
                for files in result["on_disk"]:
                    newest[_newest(files)] += 1
                outcome["identical to the uninterrupted run" if same_run(out, ref) else "DIFFERENT"] += 1
            where = ", ".join(f"{k}: {v}" for k, v in sorted(newest.items()))
            fault = f"kill -9 while training, checkpoints every 3 steps ({task}), then `--resume`"
            self.record(fault, landed, outcome, f"({chains} runs; newest checkpoint at the kill: {where})")

    def scenes(self) -> str:
        from swinv2.data.scenes import SceneSpec, ensure_scenes

        spec = SceneSpec(size=64, train_scenes=192, test_scenes=32, min_items=2, max_items=3, max_scale=1.5)
        return str(ensure_scenes(self.root / "scenes", spec))

    def save_deaths(self) -> None:
        ref = self.root / "kill_ref"
        outcome = Counter()
        for point in SAVE_POINTS:
            for epoch in (1, 2, 3):
                out = self.root / f"die_{point}_{epoch}"
                died = run(die_during_save_command(point, epoch, out))
                done = run(restart_command(out))
                ok = died.returncode == -signal.SIGKILL and done.returncode == 0 and same_result(out, ref)
                outcome["identical to the uninterrupted run" if ok else "OTHER"] += 1
        self.record("kill -9 inside a checkpoint save (mid-payload, mid-digest, before / after the rename; "
                    "epochs 1-3), then resume", len(SAVE_POINTS) * 3, outcome)  # fmt: skip

    # ---------------------------------------------------------------------------------- checkpoints
    def damaged_checkpoints(self, repeats: int) -> None:
        from swinv2.train import TrainRecipe, fit

        ref = self.root / "ckpt_ref"
        fit(recipe(ref), progress=False)
        for damage in [*DAMAGES, "digest missing"]:
            outcome = Counter()
            for i in range(repeats):
                out = self.root / f"ckpt_{damage.replace(' ', '_')}_{i}"
                fit(recipe(out), stop_after=2, progress=False)
                if damage == "digest missing":
                    (out / "checkpoint-0002.pt.sha256").unlink()
                elif damage == "bit flip":
                    DAMAGES[damage](out / "checkpoint-0002.pt", seed=i)
                else:
                    DAMAGES[damage](out / "checkpoint-0002.pt")
                with _captured_warnings() as warned:
                    fit(TrainRecipe.load(out / "config.json"), resume=True, progress=False)
                fell_back = any("resuming from checkpoint-0001.pt" in w for w in warned)
                identical = same_result(out, ref)
                outcome["warned, resumed the previous, identical result" if fell_back and identical else "OTHER"] += 1
            self.record(f"newest checkpoint {damage}", repeats, outcome)

    def all_damaged(self, repeats: int) -> None:
        from swinv2.train import TrainRecipe, fit
        from swinv2.train.checkpoints import CorruptCheckpoint, checkpoints

        outcome = Counter()
        for i in range(repeats):
            out = self.root / f"all_damaged_{i}"
            fit(recipe(out), stop_after=2, progress=False)
            for path in checkpoints(out):
                DAMAGES["bit flip"](path, seed=i)
            try:
                fit(TrainRecipe.load(out / "config.json"), resume=True, progress=False)
                outcome["TRAINED FROM SCRATCH"] += 1
            except CorruptCheckpoint:
                outcome["refused: no intact checkpoint"] += 1
        self.record("every checkpoint bit-flipped", repeats, outcome)

    # -------------------------------------------------------------------------------------- pickles
    def pickles(self) -> None:
        from swinv2 import create_model
        from swinv2.cli import main
        from swinv2.train import fit
        from swinv2.train.checkpoints import sha256_file
        from swinv2.weights.checkpoint import read_checkpoint

        outcome, times = Counter(), 0
        for payload in (CreatesFile, RunsShell):
            marker = self.root / f"pwned_{payload.__name__}"
            evil = self.root / f"evil_{payload.__name__}.pth"
            malicious_checkpoint(evil, payload(str(marker)))
            run_dir = self.root / f"evil_run_{payload.__name__}"
            fit(recipe(run_dir, train_limit=64, val_limit=32, epochs=2), stop_after=1, progress=False)
            planted = run_dir / "checkpoint-0005.pt"
            malicious_checkpoint(planted, payload(str(marker)))
            (run_dir / "checkpoint-0005.pt.sha256").write_text(f"{sha256_file(planted)}  {planted.name}\n")
            entries = {
                "read_checkpoint": lambda e=evil: read_checkpoint(e),
                "create_model(pretrained=)": lambda e=evil: create_model("swinv2_pico_window7_28", pretrained=e),
                "swinv2 convert": lambda e=evil: _cli_error(main(["convert", str(e), str(e) + ".safetensors"])),
                "swinv2 predict": lambda e=evil: _cli_error(main(["predict", str(e), str(e)])),
                "swinv2 train --resume": lambda d=run_dir: _cli_error(main(["train", "--resume", str(d)])),
            }
            for call in entries.values():
                times += 1
                try:
                    call()
                    outcome["LOADED"] += 1
                except ValueError:
                    outcome["refused, payload never ran" if not marker.exists() else "PAYLOAD RAN"] += 1
        self.record("hostile pickle (creates a file / runs a shell) at every loading entry point", times, outcome)

    # ----------------------------------------------------------------------------------------- data
    def broken_data(self) -> None:
        from swinv2.train import fit
        from swinv2.train.state import read_metrics

        outcome, planted_total = Counter(), 0
        for workers in (0, 2):
            data = self.root / f"broken_data_{workers}"
            planted = broken_image_folder(data)
            out = self.root / f"broken_run_{workers}"
            kw = {"data": str(data), "img_size": 28, "train_limit": None, "val_limit": None, "workers": workers}
            fit(recipe(out, epochs=2, batch_size=8, **kw), progress=False)
            counted = [row.get("unreadable_files", 0) for row in read_metrics(out)]
            planted_total += sum(planted.values()) * len(counted)
            ok = counted == [sum(planted.values())] * len(counted)
            outcome[f"skipped and counted every epoch (workers={workers})" if ok else "MISCOUNTED"] += sum(counted)
        self.record("unreadable image (truncated JPEG/PNG, text, empty, random bytes), 2 epochs", planted_total,
                    outcome, "(grey, RGB, RGBA, palette and 16-bit PNGs alongside train normally)")  # fmt: skip

    # ------------------------------------------------------------------------------------ NaN / Inf
    def nonfinite(self, repeats: int) -> None:
        from swinv2.errors import NonFiniteLossError
        from swinv2.train import fit
        from swinv2.train.checkpoints import checkpoints, verify
        from swinv2.train.state import read_metrics

        rng = random.Random(0)
        for name, trainer in (("NaN loss", NanLoss), ("Inf gradient", InfGrad)):
            outcome = Counter()
            for i in range(repeats):
                trainer.at = (rng.randrange(3), rng.randrange(8))
                stop = self.root / f"{trainer.__name__}_stop_{i}"
                try:
                    fit(recipe(stop), progress=False, trainer_class=trainer)
                    outcome["NOT CAUGHT"] += 1
                except NonFiniteLossError as exc:
                    kept = checkpoints(stop)
                    for path in kept:
                        verify(path)
                    right_place = f"at epoch {trainer.at[0] + 1}, batch {trainer.at[1] + 1} of 8" in str(exc)
                    intact = len(kept) == trainer.at[0]
                    outcome["stopped, step named, last checkpoint intact" if right_place and intact else "OTHER"] += 1
                skip = self.root / f"{trainer.__name__}_skip_{i}"
                fit(recipe(skip, skip_nonfinite=True), progress=False, trainer_class=trainer)
                skipped = sum(r.get("skipped_steps", 0) for r in read_metrics(skip))
                outcome["--skip-nonfinite: skipped 1 step, finished" if skipped == 1 else "OTHER"] += 1
            trainer.at = (1, 2)
            self.record(f"{name} at a random step (with and without --skip-nonfinite)", 2 * repeats, outcome)

    # ---------------------------------------------------------------------------------------- ranks
    def ranks(self, repeats: int) -> None:
        for fault in ("killed under torchrun", "killed, no agent", "hung (SIGSTOP), no agent"):
            outcome, waits = Counter(), []
            for i in range(repeats):
                out = self.root / f"rank_{fault.split()[0]}_{fault.split()[-1]}_{i}"
                waited, clear = self._rank_fault(out, fault)
                waits.append(waited)
                resumed = run([sys.executable, "-m", "swinv2", "train", "--resume", str(out), "--strategy", "single"])
                ok = resumed.returncode == 0 and clear
                outcome["clear error, then resumed in one process" if ok else "OTHER"] += 1
            note = f"(exit {min(waits):.1f}-{max(waits):.1f} s after the fault; --dist-timeout 10)"
            self.record(f"rank 1 of 2 {fault}", repeats, outcome, note)

    def _rank_fault(self, out: Path, fault: str) -> tuple[float, bool]:
        flags = ["train", *DIST_FLAGS, "--dist-timeout", "10", "--output", str(out), "--no-progress"]
        if "torchrun" in fault:
            job = torchrun(flags)
            assert wait_for(lambda: (out / "checkpoint-0001.pt").is_file(), 180)
            time.sleep(random.uniform(0.1, 1.0))
            os.kill(child_with_rank(job.pid, 1), signal.SIGKILL)
            start = time.monotonic()
            log, _ = job.communicate(timeout=120)
            return time.monotonic() - start, job.returncode != 0 and "exitcode  : -9" in log
        ranks = launch_ranks(flags)
        try:
            assert wait_for(lambda: (out / "checkpoint-0001.pt").is_file(), 180)
            time.sleep(random.uniform(0.1, 1.0))
            ranks[1].send_signal(signal.SIGKILL if "killed" in fault else signal.SIGSTOP)
            start = time.monotonic()
            _, err = ranks[0].communicate(timeout=90)
            waited = time.monotonic() - start
        finally:
            for proc in ranks:
                proc.kill()
                proc.communicate()
        return waited, ranks[0].returncode == 2 and "rank 0 stopped" in err and "--resume" in err

    def write(self, seconds: float) -> None:
        (self.root / "results.json").write_text(json.dumps({"rows": self.rows, "seconds": seconds}, indent=2))
        lines = ["| fault injected | times | outcome |", "|---|---:|---|"]
        for row in self.rows:
            outcome = "; ".join(f"{k} ({v})" for k, v in sorted(row["outcome"].items()))
            lines.append(f"| {row['fault']} | {row['times']} | {outcome} {row['note']} |")
        (self.root / "results.md").write_text("\n".join(lines) + "\n")
        print("\n".join(lines))


def _newest(files: list[str]) -> str:
    """Where the newest checkpoint in ``files`` stands: none yet, an epoch's end, or inside an epoch."""
    from swinv2.train.checkpoints import checkpoint_position

    found = [checkpoint_position(Path(f)) for f in files if f.endswith((".pt", ".dcp"))]
    if not found:
        return "none"
    epoch, step = max(found)
    return f"inside epoch {epoch + 1}" if step else f"end of epoch {epoch}"


def _cli_error(code: int) -> None:
    if code != 0:
        raise ValueError(f"exit {code}")


class _captured_warnings:
    """The swinv2 logger's warnings during the block."""

    def __enter__(self) -> list[str]:
        self.messages: list[str] = []
        self.handler = logging.Handler()
        self.handler.emit = lambda record: self.messages.append(record.getMessage())
        logging.getLogger("swinv2").addHandler(self.handler)
        return self.messages

    def __exit__(self, *exc) -> None:
        logging.getLogger("swinv2").removeHandler(self.handler)


SECTIONS = (
    "kills", "mid_epoch_kills", "save_deaths", "damaged_checkpoints", "all_damaged", "pickles", "broken_data",
    "nonfinite", "ranks",
)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", required=True)
    parser.add_argument("--kill-chains", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5, help="damaged checkpoints, NaN / Inf positions")
    parser.add_argument("--rank-faults", type=int, default=3)
    parser.add_argument("--mid-epoch-chains", type=int, default=5, help="killed runs per task, mid-epoch kills")
    parser.add_argument(
        "--sections", default=",".join(SECTIONS), help="comma-separated subset of " + ", ".join(SECTIONS)
    )
    parser.add_argument(
        "--mid-epoch-tasks",
        default=";".join(MID_EPOCH_TASKS),
        help="semicolon-separated subset of: " + "; ".join(MID_EPOCH_TASKS),
    )
    args = parser.parse_args()
    tasks = args.mid_epoch_tasks.split(";")
    if unknown := [t for t in tasks if t not in MID_EPOCH_TASKS]:
        parser.error(f"--mid-epoch-tasks: unknown {unknown}; expected some of {'; '.join(MID_EPOCH_TASKS)}")
    root = Path(args.output)
    root.mkdir(parents=True, exist_ok=False)
    start = time.monotonic()
    campaign = Campaign(root)
    calls = {
        "kills": lambda: campaign.kills(args.kill_chains),
        "mid_epoch_kills": lambda: campaign.mid_epoch_kills(args.mid_epoch_chains, tasks),
        "save_deaths": campaign.save_deaths,
        "damaged_checkpoints": lambda: campaign.damaged_checkpoints(args.repeats),
        "all_damaged": lambda: campaign.all_damaged(args.repeats),
        "pickles": campaign.pickles,
        "broken_data": campaign.broken_data,
        "nonfinite": lambda: campaign.nonfinite(args.repeats),
        "ranks": lambda: campaign.ranks(args.rank_faults),
    }
    for section in args.sections.split(","):
        if section not in calls:
            parser.error(f"--sections: unknown section {section!r}; expected some of {', '.join(SECTIONS)}")
        calls[section]()
    campaign.write(time.monotonic() - start)


if __name__ == "__main__":
    main()

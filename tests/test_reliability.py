"""Fault injection: killed and resumed runs, damaged checkpoints, NaN losses, lost ranks and bad command
lines. Each fault must end in the uninterrupted result or in a clear error. (Hostile files, broken data
and wrong model inputs: test_bad_inputs.py.)"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from faults import (
    DAMAGES,
    DIST_FLAGS,
    TRAIN_FLAGS,
    child_with_rank,
    die_during_save_command,
    flip_byte,
    kill_schedule,
    launch_ranks,
    recipe,
    restart_command,
    run,
    run_killed,
    same_run,
    same_weights,
    torchrun,
    train_command,
    train_with_kills,
    wait_for,
)
from helpers import needs_fmnist
from swinv2 import create_model
from swinv2.cli import build_parser, main
from swinv2.cli.common import recipe_flags, resume_recipe
from swinv2.errors import NonFiniteLossError
from swinv2.train import TrainRecipe, fit
from swinv2.train.checkpoints import CorruptCheckpoint, checkpoints, verify
from swinv2.train.loop import Trainer
from swinv2.train.state import read_metrics


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def assert_same_result(run_dir: Path, ref: Path) -> None:
    a, b = summary(run_dir), summary(ref)
    print(f"{run_dir.name}: top1 {a['top1']} vs {b['top1']}, loss {a['final_train_loss']} vs {b['final_train_loss']}")
    assert a["top1"] == b["top1"] and a["final_train_loss"] == b["final_train_loss"]
    assert same_weights(run_dir / "model.safetensors", ref / "model.safetensors")
    assert [r["epoch"] for r in read_metrics(run_dir)] == [r["epoch"] for r in read_metrics(ref)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The uninterrupted in-process run every damaged-and-resumed run must repeat exactly."""
    out = tmp_path_factory.mktemp("reference") / "run"
    fit(recipe(out), progress=False)
    return out


# ------------------------------------------------------------------------------------ kill -9, resume
@pytest.fixture(scope="module")
def cli_reference(tmp_path_factory) -> tuple[Path, float]:
    """An uninterrupted `swinv2 train` process, and how long its whole life took."""
    out = tmp_path_factory.mktemp("cli_reference") / "run"
    start = time.monotonic()
    done = run(train_command(out))
    assert done.returncode == 0, done.stderr
    return out, time.monotonic() - start


@needs_fmnist
def test_kill9_at_random_moments_then_resume_repeats_the_uninterrupted_run(tmp_path, cli_reference):
    ref, span = cli_reference  # kills spread over a whole run's life, start-up and saves included
    landed = 0
    for seed in (1, 2, 3):
        out = tmp_path / f"seed{seed}"
        result = train_with_kills(out, kill_schedule(seed, 2, span))
        landed += result["kills"]
        print(f"seed {seed}: {result['kills']} kill(s) landed; checkpoints on disk after each: {result['on_disk']}")
        assert_same_result(out, ref)
        assert not list(out.glob("*.tmp"))
    assert landed >= 3  # the schedule really interrupted runs


@needs_fmnist
def test_kill9_inside_an_epoch_resumes_from_its_step_checkpoint_bit_for_bit(tmp_path, cli_reference):
    # 12 steps an epoch; --checkpoint-every 5 saves after steps 5 and 10 of epoch 1, then 3 and 8 of epoch 2
    out, flags = tmp_path / "run", [*TRAIN_FLAGS, "--checkpoint-every", "5"]
    saved = out / "checkpoint-0001-000003.pt"
    assert run_killed(train_command(out, flags), until=lambda: saved.is_file())
    assert checkpoints(out)[0] == saved  # killed inside epoch 2, before its next checkpoint
    done = run(restart_command(out, flags))
    assert done.returncode == 0 and "after epoch 1 and 3 step(s) of epoch 2" in done.stdout, done.stdout + done.stderr
    assert same_run(out, cli_reference[0])


@needs_fmnist
@pytest.mark.parametrize("point", ["payload", "rename"])
def test_kill9_in_the_middle_of_a_checkpoint_write_loses_nothing_but_that_epoch(tmp_path, cli_reference, point):
    out = tmp_path / "run"
    died = run(die_during_save_command(point, 2, out))
    assert died.returncode == -signal.SIGKILL
    assert (out / "checkpoint-0002.pt.tmp").is_file() and not (out / "checkpoint-0002.pt").exists()
    done = run(restart_command(out))
    assert done.returncode == 0 and "resuming" in done.stdout and "after epoch 1" in done.stdout, done.stderr
    assert_same_result(out, cli_reference[0])


# ------------------------------------------------------------------------------ damaged checkpoints
@needs_fmnist
@pytest.mark.parametrize("damage", [*DAMAGES, "digest missing"])
def test_damaged_newest_checkpoint_is_detected_and_the_previous_one_resumed(tmp_path, reference, damage, caplog):
    out = tmp_path / "run"
    fit(recipe(out), stop_after=2, progress=False)
    newest = out / "checkpoint-0002.pt"
    if damage == "digest missing":
        (out / "checkpoint-0002.pt.sha256").unlink()
    else:
        DAMAGES[damage](newest)
    with caplog.at_level(logging.WARNING, logger="swinv2"):
        fit(TrainRecipe.load(out / "config.json"), resume=True, progress=False)
    assert "checkpoint-0002.pt is unusable" in caplog.text
    assert "resuming from checkpoint-0001.pt" in caplog.text
    assert_same_result(out, reference)


@needs_fmnist
def test_no_intact_checkpoint_is_a_clear_error_not_a_silent_restart(tmp_path):
    out = tmp_path / "run"
    fit(recipe(out), stop_after=2, progress=False)
    for path in checkpoints(out):
        flip_byte(path)
    rows, config = (out / "metrics.jsonl").read_text(), (out / "config.json").read_text()
    longer = TrainRecipe.load(out / "config.json")
    longer.epochs += 2
    with pytest.raises(CorruptCheckpoint, match="no intact checkpoint"):
        fit(longer, resume=True, progress=False)
    assert (out / "metrics.jsonl").read_text() == rows  # nothing was trained or overwritten
    assert (out / "config.json").read_text() == config  # the failed resume's recipe was not recorded


@needs_fmnist
def test_damaged_sharded_checkpoint_falls_back_too(tmp_path, caplog):
    out = tmp_path / "run"
    fit(recipe(out, strategy="fsdp"), stop_after=2, progress=False)
    shard = sorted((out / "checkpoint-0002.dcp").glob("*.distcp"))[0]
    flip_byte(shard)
    with pytest.raises(CorruptCheckpoint, match="does not match its SHA-256"):
        verify(out / "checkpoint-0002.dcp")
    with caplog.at_level(logging.WARNING, logger="swinv2"):
        fit(TrainRecipe.load(out / "config.json"), resume=True, progress=False)
    assert "checkpoint-0002.dcp is unusable" in caplog.text
    assert [r["epoch"] for r in read_metrics(out)] == [1, 2, 3]


@needs_fmnist
def test_leftovers_of_an_interrupted_write_are_ignored_and_cleaned(tmp_path, reference, caplog):
    out = tmp_path / "run"
    fit(recipe(out), stop_after=2, progress=False)
    # killed mid-save of epoch 3: a partial temp file and its digest; killed mid-append of a metrics row
    (out / "checkpoint-0003.pt.tmp").write_bytes(b"PK\x03\x04 partial")
    (out / "checkpoint-0003.pt.sha256").write_text("0" * 64 + "  checkpoint-0003.pt\n")
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 3, "train_lo')
    with caplog.at_level(logging.WARNING, logger="swinv2"):
        fit(TrainRecipe.load(out / "config.json"), resume=True, progress=False)
    assert "unusable" not in caplog.text
    assert_same_result(out, reference)
    assert sorted(p.name for p in out.glob("checkpoint-*")) == [
        "checkpoint-0002.pt",
        "checkpoint-0002.pt.sha256",
        "checkpoint-0003.pt",
        "checkpoint-0003.pt.sha256",
    ]


@needs_fmnist
def test_a_run_written_before_digests_still_resumes_with_a_warning(tmp_path, reference, caplog):
    out = tmp_path / "run"
    fit(recipe(out), stop_after=1, progress=False)
    (out / "checkpoint-0001.pt").rename(out / "checkpoint.pt")  # the layout of earlier versions
    (out / "checkpoint-0001.pt.sha256").unlink()
    with pytest.raises(FileExistsError, match="already holds a run"):
        fit(recipe(out), progress=False)
    with caplog.at_level(logging.WARNING, logger="swinv2"):
        fit(TrainRecipe.load(out / "config.json"), resume=True, progress=False)
    assert "written without a digest" in caplog.text
    assert_same_result(out, reference)


# -------------------------------------------------------------------------------------- NaN and Inf
class NanLoss(Trainer):
    """Multiplies the loss of batch ``at[1]`` of epoch index ``at[0]`` by NaN."""

    at = (1, 2)

    def train_epoch(self, progress: bool = True, checkpoint=None) -> dict:
        self.batch = 0
        return super().train_epoch(progress, checkpoint)

    def loss(self, images, labels):
        loss = super().loss(images, labels)
        hit, self.batch = (self.epoch, self.batch) == self.at, self.batch + 1
        return loss * float("nan") if hit else loss


class InfBackward(torch.autograd.Function):
    """Identity forward; an Inf (and NaN, where the gradient is 0) in every gradient backward."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * float("inf")


class InfGrad(NanLoss):
    """A finite loss whose backward yields non-finite gradients, at the same batch."""

    def loss(self, images, labels):
        loss = Trainer.loss(self, images, labels)
        hit, self.batch = (self.epoch, self.batch) == self.at, self.batch + 1
        return InfBackward.apply(loss) if hit else loss


@needs_fmnist
def test_nan_loss_stops_naming_the_step_keeps_the_checkpoint_and_offers_remedies(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(NonFiniteLossError) as err:
        fit(recipe(out), progress=False, trainer_class=NanLoss)
    message = str(err.value)
    print(message)
    assert "non-finite loss nan at epoch 2, batch 3 of 8" in message
    for remedy in ("checkpoint-0001.pt", "--lr", "--amp bf16 instead of fp16", "--skip-nonfinite", "--resume"):
        assert remedy in message
    assert [p.name for p in checkpoints(out)] == ["checkpoint-0001.pt"]
    verify(out / "checkpoint-0001.pt")
    # the remedy: `--resume RUN --skip-nonfinite`; the step is skipped and counted, the run finishes
    args = build_parser().parse_args(["train", "--resume", str(out), "--skip-nonfinite", "--lr", "1e-2"])
    resumed = resume_recipe(TrainRecipe, args, recipe_flags(TrainRecipe), "classify")
    assert resumed.skip_nonfinite and resumed.lr == 1e-2 and resumed.model_overrides["embed_dim"] == 16
    fit(resumed, resume=True, progress=False, trainer_class=NanLoss)
    assert TrainRecipe.load(out / "config.json").skip_nonfinite  # the change is on record
    rows = read_metrics(out)
    assert [r["epoch"] for r in rows] == [1, 2, 3] and [r.get("skipped_steps") for r in rows[1:]] == [1, 0]
    assert all(torch.isfinite(t).all() for t in load_file(out / "model.safetensors").values())


@needs_fmnist
def test_inf_gradient_is_caught_by_the_clipped_norm(tmp_path):
    with pytest.raises(NonFiniteLossError, match=r"non-finite gradient norm (inf|nan) at epoch 2, batch 3"):
        fit(recipe(tmp_path / "a", epochs=2), progress=False, trainer_class=InfGrad)
    fit(recipe(tmp_path / "b", epochs=2, skip_nonfinite=True), progress=False, trainer_class=InfGrad)
    assert [r.get("skipped_steps") for r in read_metrics(tmp_path / "b")] == [0, 1]
    assert all(torch.isfinite(t).all() for t in load_file(tmp_path / "b" / "model.safetensors").values())


# ------------------------------------------------------------------------------------- lost ranks
def _train_until_first_checkpoint(out: Path) -> None:
    assert wait_for(lambda: (out / "checkpoint-0001.pt").is_file(), timeout=180), "no epoch finished"
    time.sleep(0.5)  # into epoch 2


@needs_fmnist
def test_killed_rank_under_torchrun_stops_the_job_at_once_and_it_resumes_in_one_process(tmp_path):
    out = tmp_path / "run"
    job = torchrun(["train", *DIST_FLAGS, "--output", str(out), "--no-progress"])
    _train_until_first_checkpoint(out)
    os.kill(child_with_rank(job.pid, 1), signal.SIGKILL)
    start = time.monotonic()
    log, _ = job.communicate(timeout=120)
    waited = time.monotonic() - start
    print(f"torchrun exited {job.returncode} {waited:.1f} s after rank 1 was killed")
    assert job.returncode != 0 and waited < 60
    assert "exitcode  : -9" in log and "rank      : 1" in log  # torchrun names the rank that died
    # a resumed job continues at another world size
    done = run([sys.executable, "-m", "swinv2", "train", "--resume", str(out), "--strategy", "single", "--no-progress"])
    assert done.returncode == 0, done.stderr
    assert [r["epoch"] for r in read_metrics(out)] == [1, 2, 3, 4]


@needs_fmnist
@pytest.mark.parametrize("fault", ["killed", "hung"])
def test_without_an_agent_the_surviving_rank_exits_with_a_clear_error_in_bounded_time(tmp_path, fault):
    out = tmp_path / "run"
    timeout = 10
    args = ["train", *DIST_FLAGS, "--dist-timeout", str(timeout), "--output", str(out), "--no-progress"]
    ranks = launch_ranks(args)
    try:
        _train_until_first_checkpoint(out)
        ranks[1].send_signal(signal.SIGKILL if fault == "killed" else signal.SIGSTOP)
        start = time.monotonic()
        _, err = ranks[0].communicate(timeout=timeout + 60)
        waited = time.monotonic() - start
    finally:
        for proc in ranks:
            proc.kill()
            proc.communicate()
    print(f"rank 0 exited {ranks[0].returncode} {waited:.1f} s after rank 1 was {fault}: {err.strip()[-400:]}")
    assert ranks[0].returncode == 2 and waited < (5 if fault == "killed" else timeout + 30)
    assert "rank 0 stopped" in err and "checkpoint-0001.pt" in err and f"--resume {out}" in err


# --------------------------------------------------------------------------------- command lines
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "swinv2_tiny_windw8_256"], "did you mean swinv2_tiny_window8_256"),
        (["--amp", "fp16", "--device", "cpu"], "--amp fp16 needs a CUDA device"),
        (["--meta-init", "on"], "--meta-init builds the model shard by shard: it needs --strategy fsdp"),
        (["--strategy", "fsdp", "--ema-decay", "0.99"], "--ema-decay is not supported with --strategy fsdp"),
        (["--label-smoothing", "1.5"], "--label-smoothing must be >= 0 and < 1"),
        (["--epochs", "0"], "--epochs must be >= 1"),
        (["--lr", "0.032", "--min-lr", "1"], "--min-lr 1 is above the peak learning rate 0.016 (--lr 0.032 x batch"),
        (["--data", "/nonexistent"], "expected an image folder at /nonexistent/train"),
    ],
)
def test_bad_command_lines_are_refused_before_any_work(tmp_path, capsys, argv, message):
    out = tmp_path / "run"
    assert main(["train", *argv, "--output", str(out), "--no-progress"]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()  # refused before the run folder (let alone training) exists


@needs_fmnist
def test_ctrl_c_ends_a_run_with_one_line_and_it_resumes(tmp_path):
    import subprocess

    from faults import ENV

    out = tmp_path / "run"
    flags = ["--train-limit", "512", "--val-limit", "64", "--epochs", "3", "--batch-size", "64"]
    command = train_command(out, flags)
    # SIGINT at its default, as under a terminal: a suite started in the background of a non-interactive
    # shell passes SIGINT on ignored, and Python then installs no KeyboardInterrupt handler
    proc = subprocess.Popen(
        command,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert wait_for(lambda: (out / "checkpoint-0001.pt.sha256").is_file() or proc.poll() is not None, 300)
    assert proc.poll() is None, "the run ended before it was interrupted: " + proc.communicate()[1][-2000:]
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert "swinv2 train: interrupted (a run resumes from its last checkpoint with --resume DIR)" in err
    assert run(restart_command(out, flags)).returncode == 0


@needs_fmnist
def test_a_resume_cannot_cut_a_run_below_its_trained_epochs(tmp_path, capsys):
    out = tmp_path / "run"
    fit(recipe(out, train_limit=64, val_limit=32, epochs=3), stop_after=2, progress=False)
    config = (out / "config.json").read_text()
    assert main(["train", "--resume", str(out), "--epochs", "1", "--no-progress"]) == 2
    assert "has trained 2 epochs; --epochs 1" in capsys.readouterr().err
    assert (out / "config.json").read_text() == config and len(read_metrics(out)) == 2


def test_a_run_records_its_data_and_pretrained_paths_absolute(tmp_path, monkeypatch):
    """config.json is read again by a resume, maybe from another directory: relative paths would move."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    create_model("swinv2_test_window4_32").save_pretrained(tmp_path / "weights")
    made = TrainRecipe(data="data", pretrained="weights", output="run")
    assert made.data == str(tmp_path / "data") and made.pretrained == str(tmp_path / "weights")
    assert TrainRecipe(pretrained="owner/name").pretrained == "owner/name"  # not local: left for the Hub


def test_a_resume_refuses_flags_it_cannot_change(tmp_path, capsys):
    out = tmp_path / "run"
    fit(recipe(out, train_limit=64, val_limit=32, epochs=1), progress=False)
    assert main(["train", "--resume", str(out), "--model", "swinv2_tiny_window8_256", "--seed", "3"]) == 2
    err = capsys.readouterr().err
    assert "--model, --seed cannot change when resuming" in err and "a resume may change" in err
    assert main(["train", "--resume", str(tmp_path / "nothing")]) == 2
    assert "no run recipe at" in capsys.readouterr().err


@needs_fmnist
def test_a_finished_run_without_checkpoints_is_not_overwritten_or_restarted(tmp_path, capsys):
    """Checkpoints deleted to save space leave the weights and summary: a new run there, or a resume that
    would silently start over and overwrite them, is refused."""
    out = tmp_path / "run"
    fit(recipe(out, train_limit=64, val_limit=32, epochs=1), progress=False)
    for path in out.glob("checkpoint-*"):
        path.unlink()
    weights = (out / "model.safetensors").read_bytes()
    with pytest.raises(FileExistsError, match="already holds a run"):
        fit(recipe(out, train_limit=64, val_limit=32, epochs=1), progress=False)
    assert main(["train", "--resume", str(out), "--no-progress"]) == 2
    assert "no checkpoint to resume from; fine-tune from them with --pretrained" in capsys.readouterr().err
    assert (out / "model.safetensors").read_bytes() == weights


def test_run_folders_must_be_folders_and_default_names_are_claimed_once(tmp_path, monkeypatch):
    from swinv2.train.loop import claim_run_dir

    (tmp_path / "afile").write_text("x")
    for output in ("afile", "afile/sub"):
        with pytest.raises(NotADirectoryError, match="afile is a file, expected a folder"):
            fit(TrainRecipe(output=str(tmp_path / output)), progress=False)
    monkeypatch.chdir(tmp_path)
    assert claim_run_dir("runs/x") == "runs/x" and claim_run_dir("runs/x") == "runs/x-2"  # same second
    assert (tmp_path / "runs" / "x-2").is_dir()


@pytest.mark.parametrize("flag", ["lr", "min_lr", "weight_decay", "warmup_epochs"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_numbers_are_refused_with_the_recipe(flag, value):
    with pytest.raises(ValueError, match=f"--{flag.replace('_', '-')} must be a finite number"):
        TrainRecipe(**{flag: value})


def test_a_damaged_run_recipe_names_its_file(tmp_path):
    for text in ('{"epochs": "one"}', "[]", "{not json"):
        (tmp_path / "config.json").write_text(text)
        with pytest.raises(ValueError, match=r"config\.json is not a readable run recipe"):
            TrainRecipe.load(tmp_path / "config.json")


def test_output_that_is_a_file_and_non_finite_plan_budgets_are_one_line(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    assert main(["train", "--output", str(tmp_path / "afile"), "--no-progress"]) == 2
    assert "is a file, expected a folder" in capsys.readouterr().err
    for budget in ("nan", "inf", "0", "-1"):
        with pytest.raises(SystemExit):
            main(["plan", "--model", "swinv2_tiny_window8_256", "--fit-gib", budget])
        assert "expected a finite number > 0" in capsys.readouterr().err


def test_pretrained_accepts_a_run_folder(tmp_path):
    """A run or save_pretrained folder stands for its model.safetensors, as eval and predict accept."""
    model = create_model("swinv2_test_window4_32")
    model.save_pretrained(tmp_path / "weights")
    loaded = create_model("swinv2_test_window4_32", pretrained=tmp_path / "weights")
    assert loaded.load_report.clean
    with pytest.raises(FileNotFoundError, match=r"a folder without model\.safetensors"):
        create_model("swinv2_test_window4_32", pretrained=tmp_path)

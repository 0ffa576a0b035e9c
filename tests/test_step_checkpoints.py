"""Checkpoints inside an epoch (``--checkpoint-every``, ``--checkpoint-minutes``) and the exact resume
from them: a run restarted from any of its mid-epoch checkpoints ends with the same bits and the same
metrics as the run that was never stopped, for classification (with and without loader workers), SimMIM
and video. Kill -9 at random moments is in tests/test_reliability.py and tests/fault_campaign.py; the
2-rank ddp and fsdp resumes in tests/test_distributed.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from faults import same_weights
from helpers import TINY, branch_run, needs_fmnist
from swinv2.train import TrainRecipe, fit
from swinv2.train.checkpoints import checkpoint_name, checkpoint_position, checkpoints, write_checkpoint
from swinv2.train.position import CheckpointClock, SeededSamples, SkipBatches
from swinv2.train.pretrain import PretrainRecipe, PretrainTrainer
from swinv2.train.state import read_metrics
from swinv2.video.train import VideoRecipe, VideoTrainer

# 256 images in batches of 32: 8 optimiser steps an epoch. Every source of randomness a step has is on:
# RandAugment, random erasing, mixup, drop path, and an EMA whose state must travel too.
BASE = dict(
    model="swinv2_nano_window7_28",
    model_overrides=TINY,
    train_limit=256,
    val_limit=64,
    epochs=2,
    batch_size=32,
    lr=1.6e-2,
    warmup_epochs=0.5,
    randaugment=5,
    random_erasing=0.25,
    mixup=0.2,
    drop_path=0.1,
    ema_decay=0.9,
)


@pytest.fixture(autouse=True)
def _one_thread():
    """Bit-for-bit comparisons need the same reduction order in every run."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def metric_rows(run: Path) -> list[tuple]:
    return [(r["epoch"], r["train_loss"], r["top1"], r["val_loss"]) for r in read_metrics(run)]


def assert_identical(run: Path, ref: Path) -> None:
    print(f"{run.name}: rows {metric_rows(run)[-1]} vs {metric_rows(ref)[-1]}")
    assert metric_rows(run) == metric_rows(ref)
    assert same_weights(run / "model.safetensors", ref / "model.safetensors")


def resume_each(source: Path, names: list[str], root: Path, recipe_class=TrainRecipe, **fit_kw) -> list[Path]:
    """Resume a copy of ``source`` cut at each checkpoint in ``names``; the finished copies."""
    done = []
    for name in names:
        branch = branch_run(source, name, root / f"from-{name}")
        fit(recipe_class.load(branch / "config.json"), resume=True, progress=False, **fit_kw)
        done.append(branch)
    return done


@needs_fmnist
@pytest.mark.parametrize("workers", [0, 2])
def test_a_resume_from_inside_an_epoch_continues_bit_for_bit(tmp_path, workers):
    kw = dict(BASE, workers=workers, accum_steps=1 if workers else 2)
    fit(TrainRecipe(**kw, output=str(tmp_path / "plain")), progress=False)
    steps = tmp_path / "steps"
    fit(TrainRecipe(**kw, output=str(steps), checkpoint_every=3, keep_checkpoints=100), progress=False)
    assert_identical(steps, tmp_path / "plain")  # saving inside epochs changes nothing of the run
    names = sorted(p.name for p in checkpoints(steps) if checkpoint_position(p)[1])
    per_epoch = 8 // kw["accum_steps"]
    expected = [(e, s) for e, s in ((g // per_epoch, g % per_epoch) for g in range(3, 2 * per_epoch, 3)) if s]
    assert [checkpoint_position(steps / n) for n in names] == expected
    picked = names if workers == 0 else names[-1:]  # one resume is enough to show the workers' seeding
    for branch in resume_each(steps, picked, tmp_path):
        assert_identical(branch, tmp_path / "plain")


@needs_fmnist
def test_simmim_resumes_inside_an_epoch_with_the_same_masks(tmp_path):
    kw = dict(BASE, train_limit=128, val_limit=32, epochs=1, layer_decay=1.0)
    for drop in ("mixup", "ema_decay"):
        kw.pop(drop)
    fit(PretrainRecipe(**kw, output=str(tmp_path / "plain")), progress=False, trainer_class=PretrainTrainer)
    steps = tmp_path / "steps"
    fit(PretrainRecipe(**kw, output=str(steps), checkpoint_every=2), progress=False, trainer_class=PretrainTrainer)
    assert [p.name for p in checkpoints(steps)] == ["checkpoint-0001.pt", "checkpoint-0000-000002.pt"]
    (branch,) = resume_each(
        steps, ["checkpoint-0000-000002.pt"], tmp_path, PretrainRecipe, trainer_class=PretrainTrainer
    )
    a, b = (json.loads((d / "summary.json").read_text()) for d in (branch, tmp_path / "plain"))
    print(f"SimMIM final loss {a['final_loss']} vs {b['final_loss']}")
    assert a["final_loss"] == b["final_loss"]
    assert same_weights(branch / "model.safetensors", tmp_path / "plain" / "model.safetensors")


@needs_fmnist
def test_video_resumes_inside_an_epoch(tmp_path):
    kw = dict(train_limit=32, val_limit=8, epochs=1, batch_size=8, checkpoint_every=2)
    fit(VideoRecipe(**kw, output=str(tmp_path / "steps")), progress=False, trainer_class=VideoTrainer)
    plain = {**kw, "checkpoint_every": 0}
    fit(VideoRecipe(**plain, output=str(tmp_path / "plain")), progress=False, trainer_class=VideoTrainer)
    assert_identical(tmp_path / "steps", tmp_path / "plain")
    (branch,) = resume_each(
        tmp_path / "steps", ["checkpoint-0000-000002.pt"], tmp_path, VideoRecipe, trainer_class=VideoTrainer
    )
    assert_identical(branch, tmp_path / "plain")


@needs_fmnist
def test_a_resume_may_not_end_the_run_inside_the_epoch_it_stopped_in(tmp_path):
    steps = tmp_path / "steps"  # 4 steps an epoch: checkpoints after steps 3 (epoch 1) and 6 (epoch 2)
    fit(
        TrainRecipe(**{**BASE, "train_limit": 128}, output=str(steps), checkpoint_every=3, keep_checkpoints=9),
        progress=False,
    )
    branch = branch_run(steps, "checkpoint-0001-000002.pt", tmp_path / "cut")
    short = TrainRecipe.load(branch / "config.json")
    short.epochs = 1
    with pytest.raises(ValueError, match="stopped inside epoch 2; --epochs 1 would end it"):
        fit(short, resume=True, progress=False)
    assert sorted(p.name for p in branch.iterdir()) == [
        "checkpoint-0001-000002.pt",
        "checkpoint-0001-000002.pt.sha256",
        "config.json",
        "metrics.jsonl",
    ]  # the refused resume changed nothing
    fit(TrainRecipe.load(branch / "config.json"), resume=True, progress=False)
    assert_identical(branch, steps)


# ----------------------------------------------------------------------------------------- pieces
def test_checkpoint_names_sort_by_epoch_then_step_and_the_newest_k_stay(tmp_path):
    assert checkpoint_name(3) == "checkpoint-0003.pt"
    assert checkpoint_name(3, "dcp", 120) == "checkpoint-0003-000120.dcp"
    for epoch, step in [(0, 4), (1, 0), (0, 8), (1, 3), (2, 0), (1, 6)]:
        write_checkpoint({"model": {}, "epoch": epoch}, tmp_path, epoch, step, keep=4)
    assert [checkpoint_position(p) for p in checkpoints(tmp_path)] == [(2, 0), (1, 6), (1, 3), (1, 0)]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        n for p in checkpoints(tmp_path) for n in (p.name, p.name + ".sha256")
    )


def test_skipped_batches_are_the_tail_of_the_same_order():
    from torch.utils.data import BatchSampler, RandomSampler

    def batches(skip: int) -> list[list[int]]:
        sampler = RandomSampler(range(50), generator=torch.Generator().manual_seed(7))
        return list(SkipBatches(BatchSampler(sampler, 8, drop_last=False), skip))

    full = batches(0)
    assert len(full) == 7 and batches(3) == full[3:] and batches(7) == []
    assert len(SkipBatches(BatchSampler(range(50), 8, drop_last=False), 5)) == 2


def test_seeded_samples_draw_by_index_not_by_order():
    class Noise(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return torch.rand(2)

    data = SeededSamples(Noise(), seed=11)
    forward = [data[i] for i in range(4)]
    backward = [data[i] for i in reversed(range(4))][::-1]
    assert all(torch.equal(a, b) for a, b in zip(forward, backward))
    assert not torch.equal(forward[0], forward[1])
    assert not torch.equal(SeededSamples(Noise(), seed=12)[0], forward[0])  # another epoch, other draws


def test_the_clock_counts_steps_and_minutes(monkeypatch):
    now = [100.0]
    monkeypatch.setattr("swinv2.train.position.time.monotonic", lambda: now[0])
    assert not CheckpointClock().enabled
    every = CheckpointClock(every=4)
    assert [s for s in range(1, 13) if every.due(s)] == [4, 8, 12]
    clock = CheckpointClock(minutes=2)
    assert not clock.due(1)
    now[0] += 119
    assert not clock.due(2)
    now[0] += 1
    assert clock.due(3)
    clock.reset()
    assert not clock.due(4)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("checkpoint_every", -1, "--checkpoint-every must be >= 0"),
        ("checkpoint_minutes", -0.5, "--checkpoint-minutes must be >= 0"),
        ("checkpoint_minutes", float("nan"), "--checkpoint-minutes must be a finite number"),
        ("keep_checkpoints", 0, "--keep-checkpoints must be >= 1"),
    ],
)
def test_bad_checkpoint_settings_are_refused_by_name(field, value, message):
    with pytest.raises(ValueError, match=message):
        TrainRecipe(**{field: value})


@needs_fmnist
def test_a_compiled_run_trains_saves_the_modules_weights_and_resumes(tmp_path, monkeypatch):
    """``--compile`` end to end through dynamo; the eager backend keeps the suite fast (inductor's first
    compile takes minutes on 2 cores; its speed is in docs/training.md)."""
    real = torch.compile
    compiled = []

    def eager_compile(model, **kw):
        compiled.append(type(model).__name__)
        return real(model, backend="eager", **kw)

    monkeypatch.setattr(torch, "compile", eager_compile)
    kw = dict(BASE, train_limit=128, epochs=2, compile=True, checkpoint_every=3)
    fit(TrainRecipe(**kw, output=str(tmp_path / "whole")), progress=False)
    assert compiled == ["SwinV2"]
    state = torch.load(tmp_path / "whole" / "checkpoint-0002.pt", weights_only=True)
    assert not any("_orig_mod" in k for k in state["model"])  # the module's names: loadable without --compile
    fit(TrainRecipe(**kw, output=str(tmp_path / "cut")), stop_after=1, progress=False)
    fit(TrainRecipe.load(tmp_path / "cut" / "config.json"), resume=True, progress=False)
    assert_identical(tmp_path / "cut", tmp_path / "whole")
    (branch,) = resume_each(tmp_path / "whole", ["checkpoint-0001-000002.pt"], tmp_path)
    assert_identical(branch, tmp_path / "whole")


@needs_fmnist
def test_checkpoint_minutes_saves_inside_the_epoch_once_the_time_has_passed(tmp_path):
    # a clock of 60 us: every step of the 4-step epoch is past it, but the last (its epoch-end checkpoint)
    kw = dict(BASE, train_limit=128, epochs=1, checkpoint_minutes=1e-6, keep_checkpoints=10)
    fit(TrainRecipe(**kw, output=str(tmp_path / "timed")), progress=False)
    positions = sorted(checkpoint_position(p) for p in checkpoints(tmp_path / "timed"))
    assert positions == [(0, 1), (0, 2), (0, 3), (1, 0)]
    fit(TrainRecipe(**{**kw, "checkpoint_minutes": 0.0}, output=str(tmp_path / "plain")), progress=False)
    assert_identical(tmp_path / "timed", tmp_path / "plain")

"""Detection and segmentation on the training engine of every task: the engine's options (EMA, gradient
accumulation, step checkpoints) in dense runs, an exact resume from inside an epoch, the run folders of
earlier versions, and the global-batch BatchNorm that makes data parallelism match one process.

The 2-rank torchrun runs (ddp, fsdp) are in tests/test_distributed.py; kill -9 at random moments in
tests/fault_campaign.py.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from faults import same_run
from helpers import branch_run, needs_fmnist
from swinv2.data.scenes import SceneSpec, ensure_scenes
from swinv2.dense.engine import DenseCollate, fit_dense
from swinv2.dense.recipe import DenseRecipe
from swinv2.train.checkpoints import checkpoint_position, checkpoints, load_state, write_checkpoint
from swinv2.train.distributed import PAD
from test_step_checkpoints import _one_thread  # noqa: F401  (autouse: one thread, one reduction order)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    if needs_fmnist.args[0]:
        pytest.skip("Fashion-MNIST IDX files not installed")
    spec = SceneSpec(size=64, train_scenes=24, test_scenes=4, min_items=2, max_items=3, max_scale=1.5)
    return ensure_scenes(tmp_path_factory.mktemp("scenes"), spec)


def tiny(task: str, scenes, output, **kw) -> DenseRecipe:
    """24 images in batches of 4 (6 optimiser steps an epoch, 3 with accumulation over 2), 2 epochs, with
    the random parts on: drop path, UperNet's dropout, the detector's samplers, the EMA."""
    base = dict(
        task=task, data=str(scenes), img_size=64, batch_size=4, epochs=2, fpn_channels=16, box_head_dim=32,
        mask_head_dim=8, head_channels=16, anchor_sizes=(8, 16, 32, 64, 128), pictures=1, amp="none",
        ema_decay=0.9, accum_steps=2, output=str(output),
    )  # fmt: skip
    return DenseRecipe(**{**base, **kw})


@needs_fmnist
@pytest.mark.parametrize("task", ["detect", "segment"])
def test_a_dense_run_resumes_inside_an_epoch_bit_for_bit(task, scenes, tmp_path):
    plain = fit_dense(tiny(task, scenes, tmp_path / "plain"), progress=False)
    assert plain["ema"] and plain["epochs"] == 2
    steps = tmp_path / "steps"
    fit_dense(tiny(task, scenes, steps, checkpoint_every=2, keep_checkpoints=9), progress=False)
    assert same_run(steps, tmp_path / "plain")  # saving inside epochs changes nothing of the run
    inside = sorted(p.name for p in checkpoints(steps) if checkpoint_position(p)[1])
    assert [checkpoint_position(steps / n) for n in inside] == [(0, 2), (1, 1)]  # 3 steps an epoch, every 2nd
    for name in inside:
        branch = branch_run(steps, name, tmp_path / f"from-{name}")
        fit_dense(DenseRecipe.load(branch / "config.json"), resume=True, progress=False)
        assert same_run(branch, tmp_path / "plain"), name


@needs_fmnist
def test_a_run_of_the_earlier_dense_engine_resumes(scenes, tmp_path):
    """Its checkpoints held the model, optimiser, schedule and epoch only (no scaler, generators or
    recipe): a resume reads them and finishes the run."""
    run = tmp_path / "old"
    recipe = tiny("segment", scenes, run, ema_decay=0.0, accum_steps=1)
    assert fit_dense(recipe, stop_after=1, progress=False) is None
    (saved,) = checkpoints(run)
    state = load_state(saved, torch.device("cpu"))
    saved.unlink()
    saved.with_name(saved.name + ".sha256").unlink()
    write_checkpoint({k: state[k] for k in ("model", "optimizer", "scheduler", "epoch")}, run, 1)
    summary = fit_dense(DenseRecipe.load(run / "config.json"), resume=True, progress=False)
    assert summary["epochs"] == 2 and 0 <= summary["miou"] <= 100


def test_the_collate_leaves_out_unreadable_and_padding_samples():
    dataset = [None, (torch.zeros(1), {"id": 3})]
    collate = DenseCollate(lambda samples: [s[1]["id"] for s in samples], dataset)
    assert collate([None, (torch.ones(1), {"id": 5})]) == ([5], 1)
    assert collate([None, (torch.ones(1), PAD)]) == ([3], 0)  # the first readable sample, with weight 0


def test_dense_recipes_refuse_classification_options_by_name():
    for field, value in (("mixup", 0.2), ("label_smoothing", 0.1), ("layer_decay", 0.8)):
        with pytest.raises(ValueError, match="dense runs take no"):
            DenseRecipe(**{field: value})
    with pytest.raises(ValueError, match="head-dropout"):
        DenseRecipe(task="segment", head_dropout=1.0)
    recipe = DenseRecipe(task="segment", batch_size=8, lr=2e-4)
    assert recipe.scaled_lr == 2e-4  # dense learning rates are not batch-scaled
    assert dataclasses.replace(recipe, strategy="fsdp").strategy == "fsdp"


@needs_fmnist
def test_compile_compiles_the_backbone_in_place(scenes, tmp_path, monkeypatch):
    """``--compile on`` through dynamo (its eager backend keeps the suite fast; inductor's speed and compile
    time are in docs/training.md): the backbone is compiled, the checkpoints keep the module's names and
    the run is the eager one."""
    real, compiled = torch.compile, []

    def eager_compile(fn, **kw):
        compiled.append(getattr(fn, "__self__", fn).__class__.__name__)
        return real(fn, backend="eager", **kw)

    monkeypatch.setattr(torch, "compile", eager_compile)
    kw = dict(epochs=1, ema_decay=0.0, accum_steps=1)
    fit_dense(tiny("segment", scenes, tmp_path / "eager", **kw), progress=False)
    fit_dense(tiny("segment", scenes, tmp_path / "compiled", compile=True, **kw), progress=False)
    assert compiled == ["SwinV2Backbone"]
    state = load_state(checkpoints(tmp_path / "compiled")[0], torch.device("cpu"))
    assert not any("_orig_mod" in k for k in state["model"])
    assert same_run(tmp_path / "compiled", tmp_path / "eager")

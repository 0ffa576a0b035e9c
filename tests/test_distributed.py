"""Data-parallel training: DDP, ZeRO-1 and FSDP2 in real torchrun processes reproduce the one-process run,
and checkpoints resume across strategies and world sizes.

The torchrun runs share one module-scoped fixture (one launch of two ranks running nine short runs, one
of them ``swinv2 train --strategy fsdp`` through the CLI's ``main``; ~30 s on two busy cores); the rest
are in-process unit tests. Tolerance: the strategies sum the same per-sample gradients in another order
(per-rank means weighted and averaged instead of one mean), so runs agree to float32 rounding amplified
by a few AdamW steps: measured <= 1e-6 relative on the losses, checked at 1e-4.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as tdist
from safetensors.torch import load_file
from torch.utils.data import BatchSampler, RandomSampler

from faults import same_run, same_weights
from helpers import needs_fmnist
from swinv2 import create_model
from swinv2.cli import main
from swinv2.models.simmim import SimMIM
from swinv2.train import TrainRecipe, WarmupCosine, evaluate, fit
from swinv2.train.checkpoints import checkpoint_position, checkpoints, verify
from swinv2.train.distributed import (
    PAD,
    Distributed,
    RankBatches,
    index_to_fqn,
    materialize,
    slice_bounds,
)
from swinv2.train.optim import build_optimizer
from swinv2.video.train import VideoRecipe, VideoTrainer

RTOL = 1e-4
# 97 = 3 x 32 + 1: the last global batch holds one image, so rank 1 trains on a padding sample (weight 0);
# 67 validation images split 33 / 34. layer_decay < 1 gives per-group lr scales that ZeRO must pass on.
BASE = dict(
    model="swinv2_pico_window7_28",
    train_limit=97,
    val_limit=67,
    epochs=2,
    batch_size=32,
    layer_decay=0.9,
    warmup_epochs=0.5,
    amp="none",  # the tolerance is fp32 rounding's; --amp auto would take bf16 on CPUs that compute it
)
# The video trainer on Moving Fashion-MNIST: 48 clips in 3 global batches, 20 test clips split 10 / 10.
VIDEO = dict(train_limit=48, val_limit=20, epochs=1, batch_size=16, amp="none")
# Dense runs: 24 scenes in 3 global batches of 8, 2 epochs. One loader worker seeds each sample's
# augmentation by its index (the same on any rank); drop path and UperNet's dropout, whose masks each rank
# draws from its own stream, are off where the comparison is exact.
DENSE = dict(
    img_size=64, batch_size=8, epochs=2, fpn_channels=16, box_head_dim=32, mask_head_dim=8, head_channels=16,
    anchor_sizes=(8, 16, 32, 64, 128), pictures=1, amp="none", drop_path=0.0, head_dropout=0.0, workers=1,
)  # fmt: skip
# The detectors' proposal and RoI samplers draw from each rank's stream: a detection run on 2 ranks is
# another sample of the same training, not the same bits. Measured: 2.4e-3 and 3.3e-3 relative on the two
# epochs' losses, against 0.10 and 0.25 between two one-process runs of different seeds.
DETECT_RTOL = 2e-2
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


@contextlib.contextmanager
def one_thread():
    """torchrun's ranks run one thread each; so does the reference (and two threads thrash busy cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


def launch(args: list[str], timeout: int = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    return out


def rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def assert_same_run(run: Path, ref: Path) -> dict:
    """Per-epoch train / val loss within RTOL, same top-1, final weights close; returns the measured diffs."""
    a, b = rows(run), rows(ref)
    assert [r["epoch"] for r in a] == [r["epoch"] for r in b]
    diffs = {}
    for key in ("train_loss", "val_loss"):
        diffs[key] = max(abs(x[key] - y[key]) / y[key] for x, y in zip(a, b))
        assert diffs[key] < RTOL, (run.name, key, diffs[key])
    assert [r["top1"] for r in a] == [r["top1"] for r in b]
    wa, wb = load_file(run / "model.safetensors"), load_file(ref / "model.safetensors")
    diffs["weights"] = max((wa[k] - wb[k]).abs().max().item() for k in wb)
    assert wa.keys() == wb.keys() and diffs["weights"] < 1e-3, (run.name, diffs)
    print(f"{run.name}: {diffs}")
    return diffs


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """The one-process references, one torchrun launch of 2 ranks, then a one-process CLI resume."""
    root = tmp_path_factory.mktemp("dist")
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in BASE.items()]

    def recipe(name: str, **kw) -> dict:
        return {**BASE, "output": str(root / name), **kw}

    dense = _dense_references(root)
    with one_thread():  # module fixtures run before the function-scoped _one_thread
        fit(TrainRecipe(**recipe("single")), progress=False)
        fit(TrainRecipe(**recipe("single_pre", **_pretrained(root, 1))), progress=False)
        fit(VideoRecipe(**VIDEO, output=str(root / "video_single")), progress=False, trainer_class=VideoTrainer)
    plan = [
        {"kind": "fit", "recipe": recipe("ddp", strategy="ddp")},
        {"kind": "fit", "recipe": recipe("zero", strategy="zero")},
        {"kind": "fit", "recipe": recipe("fsdp_cut", strategy="fsdp"), "stop_after": 1},
        {"kind": "fit", "recipe": recipe("zero_cut", strategy="zero"), "stop_after": 1},
        {"kind": "resume", "recipe": {"output": str(root / "zero_cut"), "strategy": "fsdp"}},
        {"kind": "fit", "recipe": recipe("fsdp_meta", strategy="fsdp", meta_init=True, **_pretrained(root, 1))},
        {
            "kind": "pretrain",
            "recipe": {**recipe("simmim", strategy="fsdp", epochs=1, train_limit=64, val_limit=16), "layer_decay": 1},
        },
        {"kind": "cli", "args": ["train", *flags, "--strategy=fsdp", f"--output={root / 'fsdp'}", "--no-progress"]},
        {"kind": "video", "recipe": {**VIDEO, "output": str(root / "video_fsdp"), "strategy": "fsdp"}},
        *_mid_epoch_resumes(root, recipe),
        *_dense_runs(root, dense),
    ]
    (root / "plan.json").write_text(json.dumps(plan))
    out = launch([*TORCHRUN, str(Path(__file__).parent / "distributed_runs.py"), str(root / "plan.json")])
    (root / "stdout.txt").write_text(out.stdout)
    with one_thread():
        assert main(["train", "--resume", str(root / "fsdp_cut"), "--strategy", "single", "--no-progress"]) == 0
    return root


def _mid_epoch_resumes(root: Path, recipe) -> list[dict]:
    """ddp and fsdp runs with a checkpoint every 2 steps (4 steps an epoch: inside epochs 1 and 2), each
    copied as it stood at one of them and resumed on 2 ranks again."""
    plan = []
    for strategy, cut in (("ddp", "checkpoint-0000-000002.pt"), ("fsdp", "checkpoint-0001-000002.dcp")):
        steps = {"strategy": strategy, "checkpoint_every": 2, "keep_checkpoints": 9}
        source, target = root / f"{strategy}_steps", root / f"{strategy}_from_step"
        plan += [
            {"kind": "fit", "recipe": recipe(source.name, **steps)},
            {"kind": "branch", "source": str(source), "checkpoint": cut, "target": str(target)},
            {"kind": "resume", "recipe": {"output": str(target)}},
        ]
    return plan


def _dense_references(root: Path) -> dict:
    """The scenes and the one-process dense runs; the recipe fields the torchrun runs share."""
    from swinv2.data.scenes import SceneSpec, ensure_scenes
    from swinv2.dense.engine import fit_dense
    from swinv2.dense.recipe import DenseRecipe

    spec = SceneSpec(size=64, train_scenes=24, test_scenes=8, min_items=2, max_items=3, max_scale=1.5)
    dense = {**DENSE, "data": str(ensure_scenes(root / "scenes", spec))}
    with one_thread():
        for task in ("detect", "segment"):
            fit_dense(DenseRecipe(task=task, output=str(root / f"{task}_single"), **dense), progress=False)
    return dense


def _dense_runs(root: Path, dense: dict) -> list[dict]:
    """Segmentation under ddp and fsdp, detection under ddp; a detection run with a checkpoint every 2
    steps (3 an epoch), copied as it stood inside epoch 2 and resumed on 2 ranks."""

    def run(task: str, name: str, **kw) -> dict:
        return {"kind": "dense", "recipe": {**dense, "task": task, "output": str(root / name), **kw}}

    source, target = root / "detect_steps", root / "detect_from_step"
    return [
        run("segment", "segment_ddp", strategy="ddp"),
        run("segment", "segment_fsdp", strategy="fsdp"),
        run("detect", "detect_ddp", strategy="ddp"),
        run("detect", source.name, strategy="ddp", checkpoint_every=2, keep_checkpoints=9),
        {"kind": "branch", "source": str(source), "checkpoint": "checkpoint-0001-000001.pt", "target": str(target)},
        {"kind": "dense_resume", "recipe": {"output": str(target)}},
    ]


def _pretrained(root: Path, epochs: int) -> dict:
    return {"epochs": epochs, "pretrained": str(root / "single" / "model.safetensors")}


@needs_fmnist
def test_ddp_zero_and_fsdp_under_torchrun_match_one_process(runs):
    for name in ("ddp", "zero", "fsdp"):
        assert_same_run(runs / name, runs / "single")
    assert [p.name for p in checkpoints(runs / "fsdp")] == ["checkpoint-0002.dcp", "checkpoint-0001.dcp"]
    assert (runs / "fsdp" / "checkpoint-0002.dcp" / ".metadata").is_file()
    assert [p.name for p in checkpoints(runs / "zero")] == ["checkpoint-0002.pt", "checkpoint-0001.pt"]
    for run in ("fsdp", "zero"):
        verify(checkpoints(runs / run)[0])
    stdout = (runs / "stdout.txt").read_text()  # rank 0 alone prints: one line per finished run
    assert stdout.count("done: top1") == 10 and stdout.count("done: masked-pixel") == 1, stdout
    assert stdout.count(f"-> {runs / 'fsdp'}\n") == 1 and "fsdp x 2" in stdout


@needs_fmnist
def test_resume_under_another_strategy_and_world_size_equals_the_uninterrupted_run(runs):
    # zero on 2 ranks wrote checkpoint-0001.pt; fsdp on 2 ranks trained epoch 2 from it
    assert_same_run(runs / "zero_cut", runs / "single")
    assert [p.name for p in checkpoints(runs / "zero_cut")] == ["checkpoint-0002.dcp", "checkpoint-0001.pt"]
    # fsdp on 2 ranks wrote checkpoint-0001.dcp/; `swinv2 train --resume --strategy single` finished it in one process
    assert_same_run(runs / "fsdp_cut", runs / "single")
    assert [p.name for p in checkpoints(runs / "fsdp_cut")] == ["checkpoint-0002.pt", "checkpoint-0001.dcp"]
    assert TrainRecipe.load(runs / "fsdp_cut" / "config.json").strategy == "single"


@needs_fmnist
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_a_two_rank_resume_from_inside_an_epoch_is_bit_for_bit(runs, strategy):
    steps, branch = runs / f"{strategy}_steps", runs / f"{strategy}_from_step"

    def numbers(run: Path) -> list[list[float]]:
        return [[r[k] for k in ("epoch", "train_loss", "val_loss", "top1", "top5")] for r in rows(run)]

    # saving inside epochs changes nothing of the run
    assert numbers(steps) == numbers(runs / strategy)
    assert same_weights(steps / "model.safetensors", runs / strategy / "model.safetensors")
    assert sorted(checkpoint_position(p) for p in checkpoints(steps)) == [(0, 2), (1, 0), (1, 2), (2, 0)]
    assert {p.suffix for p in checkpoints(steps)} == {".pt" if strategy == "ddp" else ".dcp"}
    # the copy cut at a mid-epoch checkpoint and resumed on 2 ranks ends where the uninterrupted run did
    print(f"{strategy}: resumed {numbers(branch)[-1]} vs uninterrupted {numbers(steps)[-1]}")
    assert numbers(branch) == numbers(steps)
    assert same_weights(branch / "model.safetensors", steps / "model.safetensors")


@needs_fmnist
def test_segmentation_under_ddp_and_fsdp_matches_one_process(runs):
    """Each rank's loss weighs by its labelled pixels and BatchNorm normalises over the global batch, so two
    ranks train the one-process run."""
    for name in ("segment_ddp", "segment_fsdp"):
        diffs = _dense_diffs(runs / name, runs / "segment_single", ("train_loss", "miou", "pixel_acc"))
        assert max(diffs.values()) < RTOL, (name, diffs)
        wa, wb = load_file(runs / name / "model.safetensors"), load_file(runs / "segment_single" / "model.safetensors")
        assert max((wa[k] - wb[k]).abs().max().item() for k in wb) < 1e-3


@needs_fmnist
def test_detection_under_ddp_trains_as_one_process_does_and_resumes_inside_an_epoch(runs):
    diffs = _dense_diffs(runs / "detect_ddp", runs / "detect_single", ("train_loss", "loss_classifier"))
    assert max(diffs.values()) < DETECT_RTOL, diffs
    steps, branch = runs / "detect_steps", runs / "detect_from_step"
    assert same_run(steps, runs / "detect_ddp")  # saving inside epochs changes nothing
    assert same_run(branch, steps)  # and the 2-rank resume from inside epoch 2 ends with the same bits


def _dense_diffs(run: Path, ref: Path, keys: tuple[str, ...]) -> dict[str, float]:
    """Largest relative difference per metric over the epochs."""
    a, b = rows(run), rows(ref)
    assert [r["epoch"] for r in a] == [r["epoch"] for r in b] == [1, 2]
    diffs = {k: max(abs(x[k] - y[k]) / max(abs(y[k]), 1e-12) for x, y in zip(a, b)) for k in keys}
    print(f"{run.name} vs {ref.name}: {diffs}")
    return diffs


@needs_fmnist
def test_meta_init_with_pretrained_weights_starts_where_one_process_does(runs):
    assert_same_run(runs / "fsdp_meta", runs / "single_pre")


@needs_fmnist
def test_video_training_under_fsdp_matches_one_process(runs):
    diffs = assert_same_run(runs / "video_fsdp", runs / "video_single")
    single = json.loads((runs / "video_single" / "summary.json").read_text())
    sharded = json.loads((runs / "video_fsdp" / "summary.json").read_text())
    assert sharded["top1_single_frame"] == single["top1_single_frame"], diffs  # the control, reduced over ranks


@needs_fmnist
def test_simmim_pretraining_under_fsdp(runs):
    summary = json.loads((runs / "simmim" / "summary.json").read_text())
    assert math.isfinite(summary["final_loss"]) and summary["epochs"] == 1
    encoder = load_file(runs / "simmim" / "model.safetensors")
    assert "patch_embed.proj.weight" in encoder and not any(k.startswith(("encoder.", "decoder.")) for k in encoder)
    assert (runs / "simmim" / "reconstructions.png").is_file()


# ----------------------------------------------------------------------------------------- in-process


@pytest.mark.parametrize(("total", "batch", "world"), [(97, 32, 2), (10, 4, 3), (5, 8, 8)])
def test_rank_batches_partition_the_one_process_batches(total, batch, world):
    def shuffled():
        return RandomSampler(range(total), generator=torch.Generator().manual_seed(3))

    single = list(BatchSampler(shuffled(), batch, drop_last=False))
    per_rank = [list(RankBatches(shuffled(), batch, r, world)) for r in range(world)]
    assert all(len(b) == len(single) for b in per_rank)
    for step, global_batch in enumerate(single):
        parts = [per_rank[r][step] for r in range(world)]
        assert [i for part in parts for i in part if i != PAD] == global_batch
        for r, part in enumerate(parts):
            lo, hi = slice_bounds(len(global_batch), r, world)
            assert part == (global_batch[lo:hi] if hi > lo else [PAD])


def test_share_weights_give_the_one_process_mean():
    # Over ranks, sum(weight * slice mean) / world == global mean, with a padding rank weighted 0.
    per_sample = torch.arange(5.0)
    world, dist = 8, Distributed("single", torch.device("cpu"))
    total = 0.0
    for rank in range(world):
        dist.rank, dist.world = rank, world
        lo, hi = slice_bounds(5, rank, world)
        labels = torch.tensor([0] * (hi - lo) if hi > lo else [PAD])
        share = dist.share(0, labels, 5, 8)
        assert share.labels.min() >= 0 and share.batch == 5
        total += share.weight * (per_sample[lo:hi].mean().item() if hi > lo else 123.0)
    assert total / world == pytest.approx(per_sample.mean().item())


def test_evaluate_skips_padding_samples():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    images, labels = torch.randn(6, 1, 2, 2), torch.tensor([0, 1, 2, 0, 1, 2])
    plain = evaluate(model, [(images, labels)], torch.device("cpu"))
    padded = [(images[:4], labels[:4]), (images[4:], labels[4:]), (images[:1], torch.tensor([PAD]))]
    assert evaluate(model, padded, torch.device("cpu")) == pytest.approx(plain)


def test_optimizer_state_by_index_maps_to_parameter_names():
    model = create_model("swinv2_pico_window7_28", embed_dim=8, num_heads=(1, 1, 1), cpb_hidden=8)
    optimizer = build_optimizer(model, 1e-3, 0.05, 0.9)
    model(torch.randn(2, 3, 28, 28)).sum().backward()
    optimizer.step()
    named = index_to_fqn(optimizer.state_dict())
    params = dict(model.named_parameters())
    assert named["state"].keys() == params.keys()
    for name, state in named["state"].items():
        assert torch.equal(state["exp_avg"], optimizer.state[params[name]]["exp_avg"]), name
    assert [g["lr_scale"] for g in named["param_groups"]] == [g["lr_scale"] for g in optimizer.param_groups]
    with pytest.raises(ValueError, match="names"):
        index_to_fqn({"state": {}, "param_groups": [{"params": [0]}]})


@pytest.mark.parametrize("simmim", [False, True])
def test_meta_init_equals_the_constructors_init(simmim):
    """Deterministic values are identical; random ones have the constructor's distribution."""

    def build():
        model = create_model("swinv2_pico_window7_28", position_bias="table" if simmim else "log_cpb")
        return SimMIM(model) if simmim else model

    torch.manual_seed(0)
    ref = build()
    with torch.device("meta"):
        model = build()
    materialize(model, torch.device("cpu"))
    for (name, p), q in zip(model.named_parameters(), ref.parameters()):
        if q.numel() == 1 or q.std() == 0:
            assert torch.equal(p, q), name  # zeros, ones, ln(10)
        else:
            assert p.std().item() == pytest.approx(q.std().item(), rel=0.5), name
    x = torch.randn(2, 3, 28, 28)
    if not simmim:
        assert model(x).std().item() == pytest.approx(ref(x).std().item(), rel=0.5)


def test_zero_passes_the_schedule_to_every_group():
    tdist.init_process_group("gloo", store=tdist.HashStore(), rank=0, world_size=1)
    try:
        model = create_model("swinv2_pico_window7_28", embed_dim=8, num_heads=(1, 1, 1), cpb_hidden=8)
        zero = build_optimizer(model, 1e-3, 0.05, layer_decay=0.8, shard=True)
        schedule = WarmupCosine(zero, 1e-3, 1e-5, total=10, warmup=2)
        for _ in range(3):
            model(torch.randn(2, 3, 28, 28)).sum().backward()
            zero.step()
            schedule.step()
        zero.step()  # ZeRO copies the wrapper's hyper-parameters to its local AdamW at each step
        scales = [g["lr_scale"] for g in zero.param_groups]
        assert len(set(scales)) > 2
        assert [g["lr"] for g in zero.optim.param_groups] == pytest.approx([schedule.lr * s for s in scales])
    finally:
        tdist.destroy_process_group()


@needs_fmnist
def test_fsdp_in_one_process_with_meta_init_trains(tmp_path):
    recipe = TrainRecipe(**{**BASE, "epochs": 1, "strategy": "fsdp", "meta_init": True, "output": str(tmp_path)})
    summary = fit(recipe, progress=False)
    assert not tdist.is_initialized()  # the group fit started is gone
    assert summary["final_train_loss"] < math.log(10) + 0.1 and summary["top1"] > 10
    assert (tmp_path / "checkpoint-0001.dcp" / "trainer.pt").is_file()


def test_bad_strategies_are_refused(monkeypatch):
    for kw, message in (
        ({"strategy": "horovod"}, "strategy must be one of"),
        ({"strategy": "fsdp", "amp": "fp16"}, "bf16"),
        ({"strategy": "fsdp", "ema_decay": 0.99}, "ema"),
        ({"meta_init": True}, "needs --strategy fsdp"),
    ):
        with pytest.raises(ValueError, match=message):
            TrainRecipe(**kw)
    assert Distributed.setup("ddp", torch.device("cpu")).strategy == "single"  # one process: single
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="2 processes"):
        Distributed.setup("single", torch.device("cpu"))


def test_resume_flags_change_the_strategy(tmp_path):
    from swinv2.cli import build_parser
    from swinv2.cli.common import train_recipe

    TrainRecipe(strategy="fsdp", output=str(tmp_path)).save(tmp_path / "config.json")
    args = build_parser().parse_args(["train", "--resume", str(tmp_path), "--strategy", "zero"])
    assert train_recipe(args).strategy == "zero"
    args = build_parser().parse_args(["train", "--strategy", "fsdp", "--meta-init", "on"])
    assert dataclasses.asdict(train_recipe(args))["meta_init"] is True
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--meta-init", "maybe"])

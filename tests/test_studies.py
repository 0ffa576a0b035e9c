"""The paper's studies in miniature (``swinv2 study``), shrunk to seconds: pipelines and measurements."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from helpers import needs_fmnist
from swinv2 import create_model
from swinv2.tools.studies import amplitude


def test_block_amplitudes_see_every_block_and_identity_blocks_at_init():
    """Res-post-norm blocks start as identities (zeroed post-norms), so within a stage every block's output
    has the amplitude of the stage input; pre-norm blocks add to it."""
    torch.manual_seed(0)
    images = torch.randn(6, 1, 28, 28)
    overrides = {"depths": (2, 3), "num_heads": (1, 2)}
    post = amplitude.block_amplitudes(create_model(amplitude.MODEL, norm="res_post", **overrides), images)
    assert len(post) == 5
    assert post[0] == pytest.approx(post[1], rel=1e-12) and post[2] == pytest.approx(post[4], rel=1e-12)
    pre = amplitude.block_amplitudes(create_model(amplitude.MODEL, norm="pre", **overrides), images)
    assert pre[1] != pytest.approx(pre[0], rel=1e-6)
    assert amplitude.ratio([2.0, 0.5, 1.0]) == 4.0


@needs_fmnist
def test_amplitude_study_writes_results_table_and_plot(tmp_path, monkeypatch):
    small = {"depths": (1, 1, 3), "num_heads": (1, 2, 4)}
    monkeypatch.setattr(amplitude, "DEEP", small)
    monkeypatch.setattr(amplitude, "QUICK", {"train_limit": 128, "epochs": 1, "val_limit": 64})
    monkeypatch.setattr(amplitude, "PROBE_IMAGES", 32)
    monkeypatch.setattr(amplitude, "RECIPE", replace(amplitude.RECIPE, model_overrides=small))
    results = amplitude.run(tmp_path, quick=True, seeds=2)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved == json.loads(json.dumps(results))
    assert saved["steps"] == 2
    for name in ("pre_norm", "res_post_norm"):
        v = saved["variants"][name]
        assert len(v["amplitudes"]) == len(v["initial_amplitudes"]) == 5 and len(v["runs"]) == 2
        for run in v["runs"]:  # each seed's curve, and its ratio among the spread's values
            assert any(
                r == pytest.approx(max(run["amplitudes"]) / min(run["amplitudes"])) for r in v["ratio"]["values"]
            )
        assert v["amplitudes"][-1]["values"] == [run["amplitudes"][-1] for run in v["runs"]]
        assert v["runs"][0]["amplitudes"] != v["runs"][1]["amplitudes"]  # the seeds differ
    assert saved["prenorm_ratio"] == saved["variants"]["pre_norm"]["ratio"]["mean"]
    assert saved["ratio_of_ratios"] == pytest.approx(saved["prenorm_ratio"] / saved["respostnorm_ratio"])
    assert "| pre-norm |" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "amplitude.png").stat().st_size > 10_000


@needs_fmnist
def test_transfer_study_trains_each_bias_and_evaluates_every_window(tmp_path, monkeypatch):
    from swinv2.tools.studies import transfer

    monkeypatch.setattr(transfer, "QUICK", {"train_limit": 64, "epochs": 1})
    monkeypatch.setattr(transfer, "QUICK_FINETUNE", {"train_limit": 32})
    monkeypatch.setattr(transfer, "QUICK_TEST_IMAGES", 48)
    monkeypatch.setattr(transfer, "BASE", (32, 2))
    monkeypatch.setattr(transfer, "TESTS", ((64, 4),))
    monkeypatch.setattr(transfer, "RECIPE", replace(transfer.RECIPE, img_size=32, window_size=2))
    results = transfer.run(tmp_path, quick=True, seeds=2)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved == json.loads(json.dumps(results))
    got = sorted((r["bias"], r["seed"], r["img_size"], r["finetuned"]) for r in saved["rows"])
    untuned = [(b, s, i, False) for b in transfer.BIASES for s in (0, 1) for i in (32, 64)]
    assert got == sorted(untuned + [(b, s, 64, True) for b in transfer.BIASES for s in (0, 1)])
    assert all(0 <= r["top1"] <= 100 for r in saved["rows"])
    log, table_ = (transfer._cell(saved, b, 64, False)["top1"] for b in ("log_cpb", "table_bicubic"))
    assert log["n"] == 2 and saved["log_cpb_minus_table_at_largest"] == pytest.approx(log["mean"] - table_["mean"])
    text = (tmp_path / "results.md").read_text()
    assert "| log_cpb |" in text and "W4 I64 tuned" in text and " ± " in text
    assert (tmp_path / "transfer.png").stat().st_size > 10_000
    # the fine-tuned copy started from the trained weights, at its size, on the training windows' scale
    tuned = json.loads((tmp_path / "log_cpb_seed1_tuned64" / "config.json").read_text())
    assert tuned["pretrained"].endswith("log_cpb_seed1/model.safetensors") and tuned["window_size"] == 4
    # each bias's run kept its kind of position bias, and a table model really was resized to 4 x 4 windows
    from swinv2.deploy.infer import load_classifier

    table, _ = load_classifier(tmp_path / "table_bicubic_seed0", 64, 4)
    assert table.cfg.position_bias == "table" and table.cfg.patch_size == 2
    assert table.stages[0].blocks[0].attn.rel_pos.table.shape[0] == (2 * 4 - 1) ** 2
    # the bias curves reach the largest window's offsets, the trained ones marked
    for bias in transfer.BIASES:
        curve = saved["bias_curves"][bias]
        assert curve["offsets"] == list(range(-3, 4)) and curve["trained"] == 1 and len(curve["blocks"]) == 2
        assert all(len(values) == 7 for values in curve["blocks"])
    inside = saved["bias_curves"]["log_cpb"]["blocks"][0][2:5]  # CPB values are 16 * sigmoid: in (0, 16)
    assert all(0 < v < 16 for v in inside)


@needs_fmnist
def test_ablation_study_trains_every_variant_at_every_lr(tmp_path, monkeypatch):
    from swinv2.tools.studies import ablation

    monkeypatch.setattr(ablation, "QUICK", {"train_limit": 128, "epochs": 1, "val_limit": 64})
    monkeypatch.setattr(ablation, "LR_SCALES", (1.0, 1000.0))
    results = ablation.run(tmp_path, quick=True, seeds=2)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved == json.loads(json.dumps(results))
    assert sorted((r["variant"], r["lr_scale"], r["seed"]) for r in saved["rows"]) == sorted(
        (v, s, seed) for v in ablation.VARIANTS for s in (1.0, 1000.0) for seed in (0, 1)
    )
    for r in saved["rows"]:
        assert r["diverged"] == (not r["final_train_loss"] < float("inf") or r["top1"] <= ablation.CHANCE)
    for cell in saved["cells"]:  # each cell is its seeds' rows
        mine = [
            r["top1"] for r in saved["rows"] if (r["variant"], r["lr_scale"]) == (cell["variant"], cell["lr_scale"])
        ]
        assert cell["top1"]["values"] == mine and cell["top1"]["mean"] == pytest.approx(sum(mine) / 2)
        assert cell["top1"]["std"] == pytest.approx(abs(mine[0] - mine[1]) / 2**0.5)
    cfg = json.loads((tmp_path / "variant0_lr1x_seed1" / "config.json").read_text())
    assert cfg["model_overrides"] == {"norm": "pre", "attention": "dot"} and cfg["seed"] == 1
    text = (tmp_path / "results.md").read_text()
    assert "| + res-post-norm + cosine attention |" in text and " ± " in text
    assert (tmp_path / "ablation.png").stat().st_size > 10_000


def test_a_difference_is_one_only_beyond_both_spreads():
    from swinv2.tools.studies import mean_std, seed_list, spread, verdict

    a, b = spread([80.0, 82.0, 84.0]), spread([79.0, 80.0, 81.0])
    assert (a["mean"], a["std"], b["std"]) == (82.0, 2.0, 1.0)
    assert verdict(a, b) == "within noise"  # 2 apart, spreads 2 + 1
    assert verdict(spread([90.0, 91.0, 92.0]), b) == "higher" and verdict(b, spread([90.0, 91.0])) == "lower"
    assert verdict(spread([1.0]), spread([5.0])) == "one seed: noise unknown"
    assert mean_std(a) == "82.00 ± 2.00" and mean_std(spread([3.0])) == "3.00"
    with pytest.raises(ValueError, match="at least 1"):
        seed_list(0)

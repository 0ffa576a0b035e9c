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
    results = amplitude.run(tmp_path, quick=True)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved == json.loads(json.dumps(results))
    assert saved["steps"] == 2
    for name in ("pre_norm", "res_post_norm"):
        v = saved["variants"][name]
        assert len(v["amplitudes"]) == len(v["initial_amplitudes"]) == 5
        assert v["ratio"] == pytest.approx(max(v["amplitudes"]) / min(v["amplitudes"]))
    assert saved["prenorm_ratio"] == saved["variants"]["pre_norm"]["ratio"]
    assert saved["ratio_of_ratios"] == pytest.approx(saved["prenorm_ratio"] / saved["respostnorm_ratio"])
    assert "| pre-norm |" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "amplitude.png").stat().st_size > 10_000


@needs_fmnist
def test_transfer_study_trains_each_bias_and_evaluates_every_window(tmp_path, monkeypatch):
    from swinv2.tools.studies import transfer

    monkeypatch.setattr(transfer, "QUICK", {"train_limit": 128, "epochs": 1, "val_limit": 64})
    monkeypatch.setattr(transfer, "BASE", (32, 2))
    monkeypatch.setattr(transfer, "TESTS", ((48, 3), (64, 4)))
    monkeypatch.setattr(transfer, "RECIPE", replace(transfer.RECIPE, img_size=32, window_size=2))
    results = transfer.run(tmp_path, quick=True)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved == json.loads(json.dumps(results))
    got = {(r["bias"], r["img_size"], r["window"], r["finetuned"]) for r in saved["rows"]}
    assert got == {(b, i, w, False) for b in transfer.BIASES for i, w in ((32, 2), (48, 3), (64, 4))}
    assert all(0 <= r["top1"] <= 100 for r in saved["rows"])
    top = {r["bias"]: r["top1"] for r in saved["rows"] if r["img_size"] == 64}
    assert saved["log_cpb_minus_table_at_largest"] == pytest.approx(top["log_cpb"] - top["table_bicubic"])
    assert "| log_cpb |" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "transfer.png").stat().st_size > 10_000
    # each bias's run kept its kind of position bias, and a table model really was resized to 4 x 4 windows
    from swinv2.deploy.infer import load_classifier

    table, _ = load_classifier(tmp_path / "table_bicubic", 64, 4)
    assert table.cfg.position_bias == "table"
    assert table.stages[0].blocks[0].attn.rel_pos.table.shape[0] == (2 * 4 - 1) ** 2


@needs_fmnist
def test_ablation_study_trains_every_variant_at_every_lr(tmp_path, monkeypatch):
    from swinv2.tools.studies import ablation

    monkeypatch.setattr(ablation, "QUICK", {"train_limit": 128, "epochs": 1, "val_limit": 64})
    monkeypatch.setattr(ablation, "LR_SCALES", (1.0, 1000.0))
    results = ablation.run(tmp_path, quick=True)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved == json.loads(json.dumps(results))
    assert {(r["variant"], r["lr_scale"]) for r in saved["rows"]} == {
        (v, s) for v in ablation.VARIANTS for s in (1.0, 1000.0)
    }
    for r in saved["rows"]:
        assert r["diverged"] == (not r["final_train_loss"] < float("inf") or r["top1"] <= ablation.CHANCE)
    cfg = json.loads((tmp_path / "variant0_lr1x" / "config.json").read_text())
    assert cfg["model_overrides"] == {"norm": "pre", "attention": "dot"}
    assert "| + res-post-norm + cosine attention |" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "ablation.png").stat().st_size > 10_000

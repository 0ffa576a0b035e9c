"""`swinv2 pretrain`: a short SimMIM run on real images, its run folder, and fine-tuning from it."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from helpers import needs_fmnist
from swinv2.train import TrainRecipe, fit
from swinv2.train.pretrain import GRID, PretrainRecipe, pretrain

pytestmark = needs_fmnist

TINY = {"embed_dim": 16, "depths": (2, 2), "num_heads": (1, 2), "cpb_hidden": 32}


def test_short_pretraining_lowers_the_loss_and_hands_its_encoder_to_fine_tuning(tmp_path):
    recipe = PretrainRecipe(
        model_overrides=TINY,
        train_limit=512,
        val_limit=64,
        epochs=3,
        batch_size=32,
        grid_every=2,
        output=str(tmp_path / "pre"),
    )
    summary = pretrain(recipe, progress=False)
    run = tmp_path / "pre"
    assert summary["final_loss"] < summary["first_loss"], summary
    assert json.loads((run / "summary.json").read_text())["epochs"] == 3
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3] and all("val_loss" in r for r in rows)
    with Image.open(run / GRID) as grid:  # 3 rows of 8 images of 28 px shown at 112 px, 2 px padding
        assert grid.size == (8 * 114 + 2, 3 * 114 + 2)

    # The encoder fine-tunes at another resolution and window; its weights arrive unchanged.
    tuned = fit(
        TrainRecipe(
            model_overrides=TINY,
            pretrained=str(run / "model.safetensors"),
            img_size=56,
            window_size=14,
            train_limit=64,
            val_limit=64,
            epochs=1,
            batch_size=32,
            lr=0.0,
            min_lr=0.0,
            output=str(tmp_path / "tuned"),
        ),
        progress=False,
    )
    assert tuned["epochs"] == 1
    from safetensors.torch import load_file

    before, after = load_file(run / "model.safetensors"), load_file(tmp_path / "tuned" / "model.safetensors")
    moved = [k for k in before if k in after and not torch.equal(before[k], after[k])]
    assert not moved, moved  # lr 0: every encoder tensor is exactly the pretrained one
    assert "head.fc.weight" in after and "head.fc.weight" not in before


def test_pretraining_resume_equals_an_uninterrupted_run(tmp_path):
    kw = dict(model_overrides=TINY, train_limit=128, val_limit=32, epochs=2, batch_size=32)
    pretrain(PretrainRecipe(**kw, output=str(tmp_path / "a")), progress=False)
    assert pretrain(PretrainRecipe(**kw, output=str(tmp_path / "b")), stop_after=1, progress=False) is None
    pretrain(PretrainRecipe.load(tmp_path / "b" / "config.json"), resume=True, progress=False)
    from safetensors.torch import load_file

    a, b = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_pretrain_refuses_labels_and_bad_masks():
    with pytest.raises(ValueError, match="pretraining has none"):
        PretrainRecipe(mixup=0.8)
    with pytest.raises(ValueError, match="mask_ratio"):
        PretrainRecipe(mask_ratio=0.0)
    for window in (1, 8):  # refused with the recipe, not at the first training step
        with pytest.raises(ValueError, match="--norm-target-window must be an odd number >= 3"):
            PretrainRecipe(norm_target_window=window)
    assert PretrainRecipe(norm_target_window=47).norm_target_window == 47


def test_pretraining_continues_from_hugging_face_simmim_weights(tmp_path):
    pytest.importorskip("transformers")
    from safetensors.torch import save_file

    from helpers import hf_simmim

    hf = hf_simmim(28, 7)
    save_file({k: v.contiguous() for k, v in hf.state_dict().items()}, tmp_path / "hf.safetensors")
    from swinv2.train.loop import build_data
    from swinv2.train.pretrain import PretrainTrainer

    recipe = PretrainRecipe(
        model_overrides={"embed_dim": 16, "depths": (2, 2), "num_heads": (1, 2)},
        pretrained=str(tmp_path / "hf.safetensors"),
        train_limit=64,
        val_limit=32,
        output=str(tmp_path / "run"),
    )
    trainer = PretrainTrainer(recipe, build_data(recipe), torch.device("cpu"))
    model = trainer.model
    assert torch.equal(model.mask_token.flatten(), hf.swinv2.embeddings.mask_token.flatten())
    assert torch.equal(model.decoder[0].weight, hf.decoder[0].weight)
    assert torch.equal(model.encoder.patch_embed.proj.weight, hf.swinv2.embeddings.patch_embeddings.projection.weight)


def test_simmim_study_runs_both_arms_per_seed(tmp_path, monkeypatch):
    """The study's pipeline end to end, shrunk: 2-epoch pretraining on 256 images, 1-epoch fine-tunes."""
    from dataclasses import replace

    from swinv2.tools.studies import simmim as study

    small = {"train_limit": 256, "val_limit": 64, "model_overrides": TINY}
    monkeypatch.setattr(study, "PRETRAIN", replace(study.PRETRAIN, epochs=2, **small))
    monkeypatch.setattr(study, "FINETUNE", replace(study.FINETUNE, epochs=1, labels_per_class=4, **small))
    results = study.run(tmp_path, seeds=2)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved == json.loads(json.dumps(results))  # what run() returned, as written
    assert len(saved["scratch_top1_per_seed"]) == len(saved["simmim_top1_per_seed"]) == 2
    assert saved["gain"] == pytest.approx(saved["simmim_top1"] - saved["scratch_top1"])
    assert saved["labels"] == 40 and saved["pretrain"]["final_loss"] < saved["pretrain"]["first_loss"]
    for arm in ("simmim_seed0", "simmim_seed1", "scratch_seed0", "scratch_seed1"):
        assert (tmp_path / arm / "summary.json").exists()
    assert saved["simmim"]["values"] == saved["simmim_top1_per_seed"] and saved["simmim"]["n"] == 2
    assert "| gain |" in (tmp_path / "results.md").read_text() and " ± " in (tmp_path / "results.md").read_text()
    with pytest.raises(ValueError, match="at least 1"):
        study.run(tmp_path / "none", seeds=0)


def test_simmim_study_quick_shortens_both_recipes(tmp_path, monkeypatch):
    """--quick reaches the SimMIM study too (it used to be ignored there, running the 26-minute default)."""
    from dataclasses import replace

    from swinv2.tools.studies import simmim as study

    small = {"train_limit": 256, "val_limit": 64, "model_overrides": TINY}
    monkeypatch.setattr(study, "PRETRAIN", replace(study.PRETRAIN, epochs=5, **small))
    monkeypatch.setattr(study, "FINETUNE", replace(study.FINETUNE, epochs=5, labels_per_class=4, **small))
    monkeypatch.setattr(study, "QUICK_PRETRAIN", {"epochs": 1, "train_limit": 128})
    monkeypatch.setattr(study, "QUICK_FINETUNE", {"epochs": 1, "val_limit": 32})
    saved = study.run(tmp_path, quick=True, seeds=1)
    assert saved["quick"] and saved["pretrain"]["epochs"] == 1 and saved["pretrain"]["images"] == 128
    assert saved["finetune_epochs"] == 1
    pre = json.loads((tmp_path / "pretrain" / "config.json").read_text())
    tuned = json.loads((tmp_path / "simmim_seed0" / "config.json").read_text())
    assert (pre["epochs"], pre["train_limit"]) == (1, 128) and (tuned["epochs"], tuned["val_limit"]) == (1, 32)
    assert "1 epochs on 128 unlabelled images" in (tmp_path / "results.md").read_text()

"""Training pipeline: short real runs on Fashion-MNIST subsets, resume, schedule, groups, loaders."""

from __future__ import annotations

import gzip
import json
import math
import struct

import pytest
import torch

from helpers import needs_fmnist, randomize
from swinv2 import create_model
from swinv2.data import image_folder, read_idx
from swinv2.train import TrainRecipe, WarmupCosine, fit, layer_id, param_groups

TINY = {"embed_dim": 16, "depths": (2, 2), "num_heads": (1, 2), "cpb_hidden": 32}


def recipe(tmp_path, **kw) -> TrainRecipe:
    base = dict(
        model="swinv2_nano_window7_28",
        model_overrides=TINY,
        train_limit=384,
        val_limit=256,
        epochs=3,
        batch_size=32,
        lr=1.6e-2,  # per 512 images: 1e-3 at batch 32
        warmup_epochs=0.5,
        output=str(tmp_path / "run"),
    )
    base.update(kw)
    return TrainRecipe(**base)


@needs_fmnist
def test_short_run_lowers_loss_and_fills_the_run_folder(tmp_path, capsys):
    summary = fit(recipe(tmp_path, epochs=4, train_limit=1024), progress=False)
    first_line = capsys.readouterr().out.splitlines()[0]
    run = tmp_path / "run"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert rows[-1]["train_loss"] < rows[0]["train_loss"] - 0.2
    for key in ("epoch", "train_loss", "top1", "top5", "lr", "seconds"):
        assert key in rows[0]
    for key in ("top1", "top5", "epochs", "train_seconds", "final_train_loss"):
        assert key in summary
    assert summary["top1"] > 30  # far above the 10% of chance after 4 short epochs
    for name in ("config.json", "checkpoint-0004.pt", "model.safetensors", "summary.json", "curves.png"):
        assert (run / name).is_file(), name
    saved = TrainRecipe.load(run / "config.json")
    assert saved.epochs == 4
    # --amp auto is resolved for this machine: what was chosen, and why, in config.json and the first line
    assert saved.amp in ("bf16", "none") and saved.amp_reason.startswith("auto: "), saved.amp_reason
    assert f"amp {saved.amp} ({saved.amp_reason})" in first_line, first_line


@needs_fmnist
def test_resume_after_interruption_equals_uninterrupted_run(tmp_path):
    full = recipe(tmp_path / "a", epochs=3, ema_decay=0.9, mixup=0.2)
    fit(full, progress=False)
    interrupted = recipe(tmp_path / "b", epochs=3, ema_decay=0.9, mixup=0.2)
    assert fit(interrupted, stop_after=1, progress=False) is None
    resumed = TrainRecipe.load(tmp_path / "b" / "run" / "config.json")
    fit(resumed, resume=True, progress=False)
    a = torch.load(tmp_path / "a" / "run" / "checkpoint-0003.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "run" / "checkpoint-0003.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 3
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for key in a["ema"]:
        assert torch.equal(a["ema"][key], b["ema"][key]), key
    sa = json.loads((tmp_path / "a" / "run" / "summary.json").read_text())
    sb = json.loads((tmp_path / "b" / "run" / "summary.json").read_text())
    assert sa["top1"] == sb["top1"] and sa["final_train_loss"] == sb["final_train_loss"]


def test_existing_run_is_not_overwritten(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoint-0001.pt").write_bytes(b"")
    with pytest.raises(FileExistsError, match="--resume"):
        fit(recipe(tmp_path), progress=False)


def test_warmup_cosine_schedule():
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    opt.param_groups[0]["lr_scale"] = 0.5
    sched = WarmupCosine(opt, base_lr=1.0, min_lr=0.01, total=100, warmup=10)
    lrs = [sched.lr_at(s) for s in range(101)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))  # noqa: RUF007 (from step 10 on)
    assert lrs[100] == pytest.approx(0.01) and lrs[55] == pytest.approx(0.01 + 0.99 * 0.5)
    for _ in range(30):
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5 * lrs[30])
    state = sched.state_dict()
    other = WarmupCosine(opt, 1.0, 0.01, 100, 10)
    other.load_state_dict(state)
    assert other.lr == sched.lr


def test_layer_decay_and_no_weight_decay_groups():
    model = create_model("swinv2_test_window4_32")
    depths = model.cfg.depths
    assert layer_id("patch_embed.proj.weight", depths) == 0
    assert layer_id("stages.0.blocks.0.attn.qkv.weight", depths) == 1
    assert layer_id("stages.1.downsample.reduction.weight", depths) == 2  # with the block before it
    assert layer_id("stages.1.blocks.1.mlp.fc1.weight", depths) == 4
    assert layer_id("head.fc.weight", depths) == layer_id("norm.weight", depths) == sum(depths) + 1
    groups = param_groups(model, weight_decay=0.05, layer_decay=0.8)
    by_name = {n: g for g in groups for n in g["names"]}
    top = sum(depths) + 1
    assert by_name["patch_embed.proj.weight"]["lr_scale"] == pytest.approx(0.8**top)
    assert by_name["head.fc.weight"]["lr_scale"] == 1.0
    for name in (
        "stages.0.blocks.0.attn.q_bias",
        "stages.0.blocks.0.norm1.weight",
        "head.fc.bias",
        "stages.0.blocks.0.attn.logit_scale",
        "stages.0.blocks.0.attn.rel_pos.mlp.0.weight",
    ):
        assert by_name[name]["weight_decay"] == 0.0, name
    for name in ("stages.0.blocks.0.attn.qkv.weight", "head.fc.weight", "patch_embed.proj.weight"):
        assert by_name[name]["weight_decay"] == 0.05, name
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def _write_idx(path, array: torch.Tensor, gz: bool) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    data = header + array.numpy().tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_reader(tmp_path, gz):
    images = torch.randint(0, 256, (5, 28, 28), dtype=torch.uint8)
    path = tmp_path / ("x.gz" if gz else "x")
    _write_idx(path, images, gz)
    assert torch.equal(read_idx(path), images)
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="magic"):
        read_idx(tmp_path / "bad")
    _write_idx(tmp_path / "short", images, False)
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-10])
    with pytest.raises(ValueError, match="header says"):
        read_idx(tmp_path / "short")


def _png(path, mode: str) -> None:
    from PIL import Image

    size = (12, 9)
    image = {
        "L": Image.new("L", size, 128),
        "RGBA": Image.new("RGBA", size, (1, 2, 3, 4)),
        "I;16": Image.new("I;16", size, 40000),
        "RGB": Image.new("RGB", size, (9, 8, 7)),
    }[mode]
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def test_image_folder_converts_modes_and_refuses_empty_classes(tmp_path):
    from swinv2.data import eval_transform

    for split in ("train", "val"):
        for cls, mode in (("cat", "L"), ("dog", "RGBA"), ("eel", "RGB")):
            _png(tmp_path / split / cls / f"{mode.replace(';', '')}.png", mode)
    ds = image_folder(tmp_path, "train", eval_transform(16, (0.5,) * 3, (0.5,) * 3))
    assert ds.classes == ["cat", "dog", "eel"] and len(ds) == 3
    for image, _ in ds:
        assert image.shape == (3, 16, 16) and image.dtype == torch.float32
    (tmp_path / "train" / "fox").mkdir()
    with pytest.raises(ValueError, match="fox"):
        image_folder(tmp_path, "train", None)
    with pytest.raises(FileNotFoundError, match="DIR/test"):
        image_folder(tmp_path, "test", None)


@needs_fmnist
def test_finetune_at_larger_size_and_window_keeps_pretrained_windows(tmp_path):
    fit(recipe(tmp_path / "pre", epochs=1), progress=False)
    weights = tmp_path / "pre" / "run" / "model.safetensors"
    tuned = recipe(tmp_path / "ft", epochs=1, pretrained=str(weights), img_size=42, window_size=7, layer_decay=0.8)
    summary = fit(tuned, progress=False)
    assert math.isfinite(summary["final_train_loss"])
    from swinv2.deploy.infer import load_classifier

    model, info = load_classifier(tmp_path / "ft" / "run")
    assert model.cfg.pretrained_window_sizes == (7, 4) and model.cfg.img_size == 42
    assert info["classes"][0] == "T-shirt/top"


def test_image_folder_run_stores_its_eval_crop_for_predict(tmp_path):
    from swinv2.deploy.infer import load_classifier, predict_images

    for split in ("train", "val"):
        for cls, mode in (("cat", "L"), ("dog", "RGBA"), ("eel", "RGB")):
            _png(tmp_path / "data" / split / cls / "a.png", mode)
    summary = fit(
        TrainRecipe(
            model="swinv2_test_window4_32",
            data=str(tmp_path / "data"),
            epochs=1,
            batch_size=3,
            output=str(tmp_path / "run"),
        ),
        progress=False,
    )
    assert summary["train_images"] == 3
    model, info = load_classifier(tmp_path / "run")
    assert info["crop_pct"] == 0.875 and info["classes"] == ["cat", "dog", "eel"]
    top = predict_images(model, info, [str(tmp_path / "data" / "val" / "dog" / "a.png")], topk=2)
    assert len(top[0]) == 2 and top[0][0][0] in info["classes"]


def test_augmentation_defaults_depend_on_the_dataset(tmp_path):
    fmnist, folder = TrainRecipe(), TrainRecipe(data=str(tmp_path))
    assert (fmnist.crop, fmnist.hflip) == ("none", 0.0)  # short schedules learn faster unshifted
    assert (folder.crop, folder.hflip) == ("rrc", 0.5)  # the ImageNet recipe
    assert TrainRecipe(crop="pad", hflip=0.25).crop == "pad"
    with pytest.raises(ValueError, match="crop must be one of"):
        TrainRecipe(crop="centre")


def test_batch_augment_crops_only_with_padding():
    from swinv2.data import BatchAugment

    images = torch.randint(0, 256, (16, 1, 28, 28), dtype=torch.uint8)
    plain = BatchAugment(28, (0.0,), (1.0,), train=True, hflip=0.0, pad=False)
    assert torch.equal(plain(images), images.float() / 255)
    shifted = BatchAugment(28, (0.0,), (1.0,), train=True, hflip=0.0, pad=True)
    torch.manual_seed(0)
    out = shifted(images)
    assert out.shape == (16, 1, 28, 28) and not torch.equal(out, images.float() / 255)


def test_balanced_subset_takes_the_first_n_of_each_class():
    from swinv2.data import TensorImageDataset, balanced_subset

    labels = torch.tensor([0, 1, 0, 2, 1, 0, 2, 2, 1])
    subset = balanced_subset(TensorImageDataset(torch.zeros(9, 4, 4, dtype=torch.uint8), labels), 2)
    assert list(subset.indices) == [0, 1, 2, 3, 4, 6]
    with pytest.raises(ValueError, match="fewer than 4 per class"):
        balanced_subset(TensorImageDataset(torch.zeros(9, 4, 4, dtype=torch.uint8), labels), 4)


def _noise_folder(root, per_class: int = 3) -> None:
    """``root/val/<a|b>/*.png``: random RGB pictures of assorted sizes (no train split)."""
    from PIL import Image

    gen = torch.Generator().manual_seed(0)
    for cls in ("a", "b"):
        for i in range(per_class):
            (root / "val" / cls).mkdir(parents=True, exist_ok=True)
            pixels = torch.randint(0, 256, (20 + 3 * i, 24, 3), generator=gen, dtype=torch.uint8)
            Image.fromarray(pixels.numpy()).save(root / "val" / cls / f"{i}.png")


def test_eval_prepares_images_with_the_stored_preprocessing(tmp_path):
    """`swinv2 eval --data` scores a model on what it was published to see (its stored mean / std / crop /
    interpolation, not the folder's defaults), from a folder that holds only val/."""
    from swinv2.data.decode import read_image
    from swinv2.deploy.infer import evaluate_classifier
    from swinv2.models.preprocess import Preprocessing
    from swinv2.train.loop import TopKScores

    _noise_folder(tmp_path / "data")
    model = randomize(create_model("swinv2_test_window4_32", num_classes=2)).eval()
    prep = Preprocessing((3, 32, 32), mean=(0.2, 0.7, 0.4), std=(0.1, 0.3, 0.2), interpolation="bicubic", crop_pct=0.75)
    model.save_pretrained(tmp_path / "m", preprocessing=prep, classes=["a", "b"])
    result = evaluate_classifier(tmp_path / "m", data=str(tmp_path / "data"), batch_size=4)
    scores, transform = TopKScores(), prep.transform()
    with torch.no_grad():
        for label, cls in enumerate(("a", "b")):
            images = [transform(read_image(p, 3)) for p in sorted((tmp_path / "data" / "val" / cls).iterdir())]
            logits = model(torch.stack(images))
            target = torch.full((len(images),), label)
            scores.add(logits, target, torch.nn.functional.cross_entropy(logits, target, reduction="sum").item())
    expected = scores.result()
    assert result["images"] == 6 and result["top1"] == expected["top1"]
    assert result["val_loss"] == pytest.approx(expected["val_loss"], rel=1e-5)


def test_limits_on_an_image_folder_keep_every_class(tmp_path):
    """A folder lists its files class by class: --limit / --val-limit spread over it instead of the first N."""
    from swinv2.data import image_folder, limit_subset

    _noise_folder(tmp_path, per_class=3)
    val = image_folder(tmp_path, "val", None)
    picked = limit_subset(val, 2, spread=True)
    assert sorted(val.targets[i] for i in picked.indices) == [0, 1]
    assert list(limit_subset(val, 2, spread=False).indices) == [0, 1]
    assert limit_subset(val, 10, spread=True) is val


@needs_fmnist
def test_eval_repeats_the_training_runs_own_evaluation(tmp_path):
    """`swinv2 eval` on the run's weights and validation images gives the run's last epoch's numbers."""
    from swinv2.deploy.infer import evaluate_classifier
    from swinv2.train.state import read_metrics

    tiny = {"embed_dim": 16, "depths": (2, 2), "num_heads": (1, 2), "cpb_hidden": 32}
    recipe = TrainRecipe(
        model="swinv2_nano_window7_28", model_overrides=tiny, train_limit=256, val_limit=200, epochs=1,
        batch_size=32, output=str(tmp_path / "run"),
    )  # fmt: skip
    fit(recipe, progress=False)
    last = read_metrics(tmp_path / "run")[-1]
    result = evaluate_classifier(tmp_path / "run", limit=200)
    assert result["images"] == 200 and result["top1"] == last["top1"] and result["top5"] == last["top5"]
    assert result["val_loss"] == pytest.approx(last["val_loss"], rel=1e-6)


def test_weights_without_class_names_need_the_models_class_count(tmp_path):
    """Matched by position, a folder missing one class would shift every label: refused by name."""
    from swinv2.deploy.infer import evaluate_classifier

    _noise_folder(tmp_path / "data")
    model = randomize(create_model("swinv2_test_window4_32", num_classes=3))
    model.save_pretrained(tmp_path / "m")  # no class names
    with pytest.raises(ValueError, match="the data has 2 classes, the model 3 and no class names"):
        evaluate_classifier(tmp_path / "m", data=str(tmp_path / "data"))

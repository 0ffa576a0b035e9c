"""Dense prediction: backbone features, RoIAlign parity, scenes and loaders, one step of each head, runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.ops import MultiScaleRoIAlign

from helpers import needs_fmnist, randomize
from swinv2 import create_model
from swinv2.cli import main
from swinv2.data.scenes import SceneSpec, ensure_scenes
from swinv2.dense.backbone import SwinV2Backbone, create_backbone
from swinv2.dense.data import CocoDetectionData, SegmentationFolder, SplitPaths, find_split
from swinv2.dense.detection import build_detector
from swinv2.dense.engine import fit_dense
from swinv2.dense.inference import load_run
from swinv2.dense.recipe import DenseRecipe
from swinv2.dense.roi_align import GatherMultiScaleRoIAlign
from swinv2.dense.segmentation import ConfusionMatrix, Segmenter, slide_inference
from swinv2.models.registry import get_config
from swinv2.weights.checkpoint import save_weights
from test_coco_data import drop_segmentations

SMALL = {"embed_dim": 16, "num_heads": (1, 2, 2, 4), "depths": (2, 2, 2, 2), "cpb_hidden": 16}


def small_backbone(**overrides) -> SwinV2Backbone:
    return create_backbone("swinv2_femto_window8_128", **{**SMALL, **overrides})


@pytest.mark.parametrize("size", [(128, 128), (67, 45), (33, 101)])
def test_backbone_features_at_strides_4_to_32_for_any_size(size):
    backbone = small_backbone().eval()
    features = backbone(torch.randn(2, 3, *size))
    assert list(features) == ["stage1", "stage2", "stage3", "stage4"]
    assert backbone.strides == [4, 8, 16, 32] and backbone.out_channels == [16, 32, 64, 128]
    h, w = -(-size[0] // 4), -(-size[1] // 4)
    for f, c in zip(features.values(), backbone.out_channels):
        assert f.shape == (2, c, h, w)
        h, w = -(-h // 2), -(-w // 2)


def test_backbone_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        small_backbone()(torch.randn(2, 1, 64, 64))
    with pytest.raises(ValueError, match="out_indices"):
        SwinV2Backbone(get_config("swinv2_femto_window8_128", **SMALL), out_indices=(0, 4))


def test_backbone_loads_a_classifier_at_another_window(tmp_path):
    """Stage outputs of the loaded backbone are the classifier's (before the per-stage norms), at a new
    window too: Log-CPB is rebuilt from the file's pretrained windows, not retrained."""
    classifier = randomize(create_model("swinv2_femto_window8_128", **SMALL))
    path = tmp_path / "cls.safetensors"
    save_weights(classifier, path)
    backbone = create_backbone("swinv2_femto_window8_128", pretrained=path, **SMALL, window_size=8)
    assert backbone.load_report.clean, backbone.load_report.summary()
    assert {k.split(".")[0] for k in backbone.load_report.ignored} == {"norm", "head"}
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        ref = classifier.eval().forward_intermediates(x, intermediates_only=True)
        ours = backbone.eval()(x)
    for r, o, c in zip(ref, ours.values(), backbone.out_channels):
        expected = F.layer_norm(r.permute(0, 2, 3, 1), (c,)).permute(0, 3, 1, 2)
        diff = (expected - o).abs()
        print(f"stage {c} ch: max |diff| {diff.max():.2e}  mean {diff.mean():.2e}")
        assert diff.max() < 1e-4
    # a larger window changes the attention but the same weights still load
    wide = create_backbone("swinv2_femto_window8_128", pretrained=path, **SMALL, window_size=16)
    assert wide.load_report.clean and wide.cfg.pretrained_window_sizes == (8, 8, 8, 4)


@pytest.mark.parametrize(("ratio", "size"), [(1, 7), (2, 7), (2, 14)])
def test_gather_roi_align_matches_torchvision(ratio, size):
    names = ["0", "1", "2", "3"]
    feats = {
        n: torch.randn(2, 8, 32 >> i, 40 >> i, dtype=torch.float64, requires_grad=True) for i, n in enumerate(names)
    }
    boxes = []
    for _ in range(2):
        xy = torch.rand(40, 2, dtype=torch.float64) * torch.tensor([160.0, 128.0]) - 4
        boxes.append(torch.cat([xy, xy + torch.rand(40, 2, dtype=torch.float64) * 120 + 0.3], 1))
    shapes = [(128, 160), (120, 150)]
    ref = MultiScaleRoIAlign(names, size, ratio)(feats, boxes, shapes)
    ours = GatherMultiScaleRoIAlign(names, size, ratio, always_gather=True)(feats, boxes, shapes)
    grad = torch.randn_like(ref)
    kw = {"allow_unused": True, "materialize_grads": True}
    g_ref = torch.autograd.grad((ref * grad).sum(), list(feats.values()), **kw)
    g_ours = torch.autograd.grad((ours * grad).sum(), list(feats.values()), **kw)
    assert (ref - ours).abs().max() < 1e-10
    assert max((a - b).abs().max() for a, b in zip(g_ref, g_ours)) < 1e-10


# ---------------------------------------------------------------------------------------------- data
@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    if needs_fmnist.args[0]:  # the skipif condition: the files are missing
        pytest.skip("Fashion-MNIST IDX files not installed")
    spec = SceneSpec(size=64, train_scenes=8, test_scenes=4, min_items=2, max_items=3, max_scale=1.5)
    return ensure_scenes(tmp_path_factory.mktemp("scenes"), spec)


@needs_fmnist
def test_scenes_are_deterministic_and_consistent(scenes, tmp_path):
    again = ensure_scenes(
        tmp_path / "again", SceneSpec(size=64, train_scenes=8, test_scenes=4, max_items=3, max_scale=1.5)
    )
    for rel in ("train/instances.json", "test/images/000003.png", "train/masks/000005.png"):
        assert (scenes / rel).read_bytes() == (again / rel).read_bytes()
    data = CocoDetectionData(find_split(scenes, "train", "detect"))
    assert data.classes[0] == "T-shirt/top" and len(data) == 8
    for i in range(len(data)):
        image, target = data[i]
        semantic = np.array(Image.open(scenes / "train" / "masks" / f"{i:06d}.png"))
        assert image.shape == (3, 64, 64) and image.dtype == torch.float32
        assert 1 <= len(target["labels"]) <= 3  # an item finding no free spot is left out
        for box, label, mask in zip(target["boxes"], target["labels"], target["masks"]):
            ys, xs = torch.nonzero(mask, as_tuple=True)
            assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            assert (semantic[mask.numpy().astype(bool)] == int(label)).all()  # mask value k + 1 = label k + 1
            assert image[0][mask.bool()].min() > 0  # instance pixels are the item's bright pixels


def test_segmentation_folder_converts_images_and_checks_masks(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    arrays = {
        "grey": Image.fromarray(np.full((10, 12), 200, np.uint8)),
        "rgba": Image.fromarray(np.full((10, 12, 4), 100, np.uint8), "RGBA"),
        "deep": Image.fromarray(np.full((10, 12), 40000, np.uint16)),
    }
    for name, img in arrays.items():
        img.save(images / f"{name}.png")
        Image.fromarray(np.arange(120, dtype=np.uint8).reshape(10, 12) % 3).save(masks / f"{name}.png")
    data = SegmentationFolder(SplitPaths(images, masks))
    for image, mask in (data[i] for i in range(len(data))):
        assert image.shape == (3, 10, 12) and image.dtype == torch.uint8 and mask.shape == (10, 12)
    assert data[0][0].max() == 255  # 16-bit scaled to 8 bits
    reduced = SegmentationFolder(SplitPaths(images, masks), reduce_zero_label=True)
    assert set(reduced[0][1].unique().tolist()) == {0, 1, 255}
    (images / "orphan.png").write_bytes((images / "grey.png").read_bytes())
    with pytest.raises(ValueError, match="no mask"):
        SegmentationFolder(SplitPaths(images, masks))


def test_find_split_names_what_it_looked_for(tmp_path):
    (tmp_path / "images" / "training").mkdir(parents=True)
    (tmp_path / "annotations" / "training").mkdir(parents=True)
    assert find_split(tmp_path, "train", "segment").images == tmp_path / "images" / "training"  # ADE20K layout
    with pytest.raises(FileNotFoundError, match=r"instances\.json"):
        find_split(tmp_path, "train", "detect")


# ------------------------------------------------------------------------------------------- heads
@pytest.mark.parametrize("kind", ["mask_rcnn", "faster_rcnn"])
def test_detector_training_step_and_inference(kind):
    torch.manual_seed(0)
    model = build_detector(
        small_backbone(),
        3,
        kind,
        min_size=64,
        max_size=128,
        fpn_channels=16,
        anchor_sizes=(8, 16, 32, 64, 128),
        box_head_dim=32,
        mask_head_dim=8,
        roi_sampling=1,
    )
    masks = torch.zeros(2, 64, 64, dtype=torch.uint8)
    masks[0, 5:20, 8:30] = 1
    masks[1, 30:60, 30:50] = 1
    targets = [
        {"boxes": torch.tensor([[8.0, 5, 30, 20], [30, 30, 50, 60]]), "labels": torch.tensor([1, 3]), "masks": masks}
    ]
    images = [torch.rand(3, 64, 64)]
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    losses = model(images, targets)
    assert ("loss_mask" in losses) == (kind == "mask_rcnn")
    sum(losses.values()).backward()
    assert model.backbone.body.patch_embed.proj.weight.grad.abs().sum() > 0  # reaches the backbone
    opt.step()
    model.eval()
    with torch.no_grad():
        out = model([torch.rand(3, 70, 90)])[0]
    assert out["boxes"].shape[1] == 4 and (out["boxes"][:, 2] <= 90).all()


def test_upernet_training_step_and_sliding_inference():
    model = Segmenter(small_backbone(), num_classes=4, channels=16)
    images, masks = torch.randn(2, 3, 64, 64), torch.randint(0, 4, (2, 64, 64))
    masks[0, :4] = 255
    logits = model(images)
    assert logits.shape == (2, 4, 64, 64)
    F.cross_entropy(logits, masks, ignore_index=255).backward()
    assert model.backbone.patch_embed.proj.weight.grad.abs().sum() > 0
    model.eval()
    big = torch.randn(1, 3, 100, 130)
    with torch.no_grad():
        whole = model(big[:, :, :64, :64])
        slid = slide_inference(model, big, crop=64, stride=42)
        single = slide_inference(model, big[:, :, :64, :64], crop=64, stride=42)
    assert slid.shape == (1, 4, 100, 130)
    assert torch.allclose(single, whole, atol=1e-6)


def test_confusion_matrix_miou():
    cm = ConfusionMatrix(3)
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 255]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 0, 1]])
    cm.update(pred, target)
    # class 0: tp 1, fp 1, fn 1 -> 1/3; class 1: tp 2, fp 1 -> 2/3; class 2: tp 1, fn 1 -> 1/2
    assert cm.scores()["miou"] == pytest.approx(100 * (1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert cm.scores()["pixel_acc"] == pytest.approx(100 * 4 / 6)
    with pytest.raises(ValueError, match="mask values"):
        cm.update(pred, torch.full_like(target, 7))


# -------------------------------------------------------------------------------------------- runs
def _recipe(task: str, scenes, tmp_path, **kw) -> DenseRecipe:
    return DenseRecipe(
        task=task,
        data=str(scenes),
        img_size=64,
        batch_size=4,
        epochs=2,
        fpn_channels=16,
        box_head_dim=32,
        mask_head_dim=8,
        head_channels=16,
        anchor_sizes=(8, 16, 32, 64, 128),
        output=str(tmp_path / task),
        pictures=2,
        **kw,
    )


@needs_fmnist
@pytest.mark.parametrize("task", ["detect", "segment"])
def test_dense_run_folder_resume_and_2x_test(task, scenes, tmp_path):
    recipe = _recipe(task, scenes, tmp_path)
    assert fit_dense(recipe, stop_after=1, progress=False) is None
    resumed = fit_dense(DenseRecipe.load(tmp_path / task / "config.json"), resume=True, progress=False)
    straight = fit_dense(_recipe(task, scenes, tmp_path / "b"), progress=False)
    metric = "map50" if task == "detect" else "miou"
    assert resumed[metric] == pytest.approx(straight[metric], abs=1e-9)
    assert resumed["train_loss"] == pytest.approx(straight["train_loss"], rel=1e-6)
    run_dir = tmp_path / task
    for name in ("summary.json", "metrics.jsonl", "curves.png", "predictions.png", "model.safetensors"):
        assert (run_dir / name).is_file(), name
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 2
    run = load_run(run_dir, test_size=128, test_window=16)
    assert run.task.backbone_of(run.model).cfg.window_size == 16
    assert 0 <= run.evaluate()[metric] <= 100


@needs_fmnist
@pytest.mark.parametrize("task", ["detect", "segment"])
def test_unreadable_images_in_dense_data_are_skipped_and_counted(task, scenes, tmp_path, capsys):
    import shutil

    data = tmp_path / "scenes"
    shutil.copytree(scenes, data)
    for split in ("train", "test"):
        image = sorted((data / split / "images").iterdir())[1]
        image.write_bytes(image.read_bytes()[:50])  # truncated
    import dataclasses

    recipe = dataclasses.replace(_recipe(task, data, tmp_path), epochs=1, pictures=2)
    summary = fit_dense(recipe, progress=False)
    rows = [json.loads(line) for line in (tmp_path / task / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["unreadable_files"] == 2 and summary["epochs"] == 1
    assert "skipped 2 unreadable file(s) this epoch" in capsys.readouterr().out
    assert (tmp_path / task / "predictions.png").is_file()  # drawn from the readable images around the cut one
    for image in (data / "train" / "images").iterdir():
        image.write_bytes(b"")
    recipe = dataclasses.replace(recipe, output=str(tmp_path / "none"))
    with pytest.raises(ValueError, match=r"could be read \(all corrupt or not images\)"):
        fit_dense(recipe, progress=False)
    assert not (tmp_path / "none").exists()


@needs_fmnist
def test_cli_train_eval_predict(scenes, tmp_path, capsys):
    out = tmp_path / "seg"
    args = [
        "segment",
        "train",
        "--data",
        str(scenes),
        "--img-size",
        "64",
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--head-channels",
        "8",
        "--output",
        str(out),
        "--no-progress",
        "--pictures",
        "1",
    ]
    assert main(args) == 0
    assert json.loads((out / "summary.json").read_text())["miou"] >= 0
    assert main(["segment", "eval", str(out), "--test-size", "128", "--slide", "--json", str(tmp_path / "s.json")]) == 0
    assert json.loads((tmp_path / "s.json").read_text())["test_size"] == 128
    image = scenes / "test" / "images" / "000000.png"
    assert main(["segment", "predict", str(out), str(image), "--output", str(tmp_path / "pics")]) == 0
    assert (tmp_path / "pics" / "000000_segment.png").is_file()
    assert main(["detect", "eval", str(tmp_path / "missing")]) == 2
    assert "no run recipe" in capsys.readouterr().err
    weights = (out / "model.safetensors").read_bytes()
    for flags, message in ((["--json", str(out / "model.safetensors")], "expected a file name ending in .json"),
                           (["--test-size", "0"], "expected a whole number >= 1, got 0"),
                           (["--test-window", "-2"], "expected a whole number >= 1")):  # fmt: skip
        with pytest.raises(SystemExit):
            main(["segment", "eval", str(out), *flags])
        assert message in capsys.readouterr().err
    assert (out / "model.safetensors").read_bytes() == weights


def test_prediction_pictures_of_different_sizes_tile_into_one_grid(tmp_path):
    """Real datasets (COCO, ADE20K) mix image sizes: the end-of-run picture must not need equal sizes."""
    from types import SimpleNamespace

    from PIL import Image

    from swinv2.dense import inference

    drawn = [torch.full((3, 40, 50), 10, dtype=torch.uint8), torch.full((3, 64, 30), 200, dtype=torch.uint8)]
    task = SimpleNamespace(draw=lambda model, images, device: drawn)
    recipe = SimpleNamespace(pictures=2, amp="none")
    run = SimpleNamespace(recipe=recipe, val_set=[(None, 0)] * 2, device=torch.device("cpu"), task=task, model=None)
    path = inference.draw_predictions(run, tmp_path / "p.png")
    assert Image.open(path).size == (2 + 2 * (50 + 2), 2 + 64 + 2)  # two tiles padded to 64 x 50


@needs_fmnist
def test_val_annotations_with_other_categories_are_refused(scenes, tmp_path):
    """Scoring maps the model's labels (train's categories) back through val's: a difference would score
    every correct box as wrong, so it is refused by name."""
    import shutil

    from swinv2.dense.tasks import DetectionTask

    root = tmp_path / "scenes"
    shutil.copytree(scenes, root)
    val = find_split(root, "val", "detect").annotations
    coco = json.loads(val.read_text())
    coco["categories"] = coco["categories"][1:]  # category 1 dropped from val only
    coco["annotations"] = [a for a in coco["annotations"] if a["category_id"] != coco["categories"][0]["id"] - 1]
    val.write_text(json.dumps(coco))
    with pytest.raises(ValueError, match="the val annotations list other categories than train's"):
        DetectionTask(DenseRecipe(task="detect", data=str(root))).datasets()


# ------------------------------------------------------------------------ data checks and small runs
def _segmentation_data(root, train: int = 4, val: int = 2, size: int = 32, classes=("background", "a", "b")):
    """A tiny ``ROOT/{train,val}/{images,masks}`` dataset of random pixels and masks."""
    rng = np.random.default_rng(0)
    for split, count in (("train", train), ("val", val)):
        for folder in ("images", "masks"):
            (root / split / folder).mkdir(parents=True)
        for i in range(count):
            image = rng.integers(0, 256, (size, size), dtype=np.uint8)
            mask = rng.integers(0, len(classes), (size, size), dtype=np.uint8)
            Image.fromarray(image).save(root / split / "images" / f"{i}.png")
            Image.fromarray(mask).save(root / split / "masks" / f"{i}.png")
    (root / "semantic_classes.json").write_text(json.dumps(list(classes)))
    return root


TINY_MODEL = "swinv2_test_window4_32"  # 16 channels, 0.2M parameters: runs of a second or two


def _train_args(data, output, batch_size: int = 2) -> list[str]:
    """``swinv2 segment train`` of a tiny run (one epoch at 32 px, no pictures)."""
    sizes = ["--img-size", "32", "--epochs", "1", "--batch-size", str(batch_size), "--head-channels", "8"]
    quiet = ["--no-progress", "--pictures", "0"]
    return ["segment", "train", "--model", TINY_MODEL, "--data", str(data), *sizes, "--output", str(output), *quiet]


def _tiny_segment(data, output, **kw) -> DenseRecipe:
    settings = {"img_size": 32, "batch_size": 2, "epochs": 1, "head_channels": 8, "pictures": 0, "amp": "none"}
    settings["model"] = TINY_MODEL
    return DenseRecipe(task="segment", data=str(data), output=str(output), **{**settings, **kw})


def test_a_batch_of_ignored_pixels_only_weighs_nothing(tmp_path):
    root = _segmentation_data(tmp_path / "data", train=2, val=1)
    for mask in (root / "train" / "masks").iterdir():
        Image.fromarray(np.full((32, 32), 255, np.uint8)).save(mask)  # 255: ignore
    summary = fit_dense(_tiny_segment(root, tmp_path / "run"), progress=False)  # NaN would stop the run
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["train_loss"] == 0.0 and summary["epochs"] == 1


def test_segmentation_masks_of_wrong_size_or_values_are_named(tmp_path, capsys):
    from swinv2.dense.data import AnnotationError

    root = _segmentation_data(tmp_path / "data", train=1, val=1)
    paths = find_split(root, "train", "segment")
    mask = paths.annotations / "0.png"
    Image.fromarray(np.full((32, 32), 255, np.uint8)).save(mask)  # all ignore: in range
    assert (SegmentationFolder(paths, num_classes=3)[0][1] == 255).all()
    Image.fromarray(np.full((32, 32), 3, np.uint8)).save(mask)
    with pytest.raises(AnnotationError, match=r"0\.png: mask values \[3\] out of range; expected 0\.\.2 for 3"):
        SegmentationFolder(paths, num_classes=3)[0]
    assert (SegmentationFolder(paths, reduce_zero_label=True, num_classes=3)[0][1] == 2).all()  # 1..3 -> 0..2
    Image.fromarray(np.zeros((20, 32), np.uint8)).save(mask)
    with pytest.raises(AnnotationError, match=r"0\.png: mask is 20 x 32 .*expected its image's 32 x 32"):
        SegmentationFolder(paths, num_classes=3)[0]
    Image.fromarray(np.full((32, 32), 9, np.uint8)).save(mask)  # training reports it in one line, not a tensor error
    assert main(_train_args(root, tmp_path / "run", batch_size=1)) == 2
    assert "masks/0.png: mask values [9] out of range; expected 0..2" in capsys.readouterr().err


@needs_fmnist
def test_faster_rcnn_trains_and_scores_on_box_only_coco(scenes, tmp_path):
    import dataclasses
    import shutil

    data = tmp_path / "boxes"
    shutil.copytree(scenes, data)
    for instances in data.glob("*/instances.json"):
        coco = json.loads(instances.read_text())
        drop_segmentations(coco)
        instances.write_text(json.dumps(coco))
    recipe = _recipe("detect", data, tmp_path, detector="faster_rcnn", train_limit=8, val_limit=8)
    summary = fit_dense(dataclasses.replace(recipe, epochs=1), progress=False)
    assert 0 <= summary["map50"] <= 100 and "mask_map" not in summary


def test_segmentation_trains_when_a_batch_holds_one_image(tmp_path):
    """UperNet's 1x1 pyramid level has one value per channel for a one-image batch, where BatchNorm has no
    batch statistics: it normalises with its running ones instead of failing."""
    root = _segmentation_data(tmp_path / "data", train=1, val=1)
    summary = fit_dense(_tiny_segment(root, tmp_path / "one", batch_size=4), progress=False)
    assert summary["epochs"] == 1 and summary["train_images"] == 1 and np.isfinite(summary["train_loss"])
    model = Segmenter(small_backbone(), num_classes=3, channels=8).train()
    bn = model.head.ppm.branches[0][1]  # the 1x1 level
    before = bn.running_mean.clone()
    F.cross_entropy(model(torch.randn(1, 3, 32, 32)), torch.randint(0, 3, (1, 32, 32))).backward()
    assert torch.equal(bn.running_mean, before) and bn.weight.grad is not None
    model(torch.randn(2, 3, 32, 32))  # two images: batch statistics, as nn.BatchNorm2d
    assert not torch.equal(bn.running_mean, before)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A tiny segmentation run folder (its data left in place)."""
    base = tmp_path_factory.mktemp("tiny")
    assert main(_train_args(_segmentation_data(base / "data"), base / "run")) == 0
    return base / "run"


@pytest.fixture(scope="module")
def moved_run(tmp_path_factory):
    """A tiny segmentation run trained from a relative --data path, whose data folder then moved away."""
    base = tmp_path_factory.mktemp("moved")
    _segmentation_data(base / "data")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(base)
        assert main(_train_args("data", "run")) == 0
    (base / "data").rename(base / "elsewhere")
    return base


def test_eval_and_predict_need_only_the_run_after_its_data_moved(moved_run, tmp_path, capsys):
    run = moved_run / "run"
    assert json.loads((run / "config.json").read_text())["data"] == str(moved_run / "data")  # absolute
    image = moved_run / "elsewhere" / "val" / "images" / "0.png"
    assert main(["segment", "predict", str(run), str(image), "--output", str(tmp_path / "pics")]) == 0
    assert (tmp_path / "pics" / "0_segment.png").is_file()
    assert main(["segment", "eval", str(run), "--data", str(moved_run / "elsewhere")]) == 0
    assert 0 <= json.loads(capsys.readouterr().out.splitlines()[-1])["miou"] <= 100
    assert main(["segment", "eval", str(run)]) == 2
    assert "no val split for segment under " + str(moved_run / "data") in capsys.readouterr().err


def test_runs_without_class_names_read_them_from_the_training_data(moved_run, tmp_path, capsys):
    import shutil

    from swinv2.weights.checkpoint import read_checkpoint, write_safetensors

    old = tmp_path / "old"
    shutil.copytree(moved_run / "run", old)
    tensors, meta = read_checkpoint(old / "model.safetensors")
    del meta["classes"]  # as written by versions that did not store them
    write_safetensors(tensors, old / "model.safetensors", meta)
    image = moved_run / "elsewhere" / "val" / "images" / "0.png"
    assert main(["segment", "predict", str(old), str(image), "--output", str(tmp_path / "pics")]) == 2
    assert "names no classes (an older run)" in capsys.readouterr().err
    assert load_run(old, data=str(moved_run / "elsewhere")).task.classes == ["background", "a", "b"]


def test_predict_scales_16_bit_images_like_training(tiny_run, tmp_path):
    from swinv2.data.decode import read_image

    ramp = np.tile(np.linspace(0, 60000, 32).astype(np.uint16), (32, 1))
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode == "I;16"
    run = str(tiny_run)
    assert main(["segment", "predict", run, str(tmp_path / "deep.png"), "--output", str(tmp_path)]) == 0
    drawn = np.asarray(Image.open(tmp_path / "deep_segment.png").convert("L"), dtype=int)
    expected = read_image(tmp_path / "deep.png")[0].repeat_interleave(8, 0).repeat_interleave(8, 1).numpy()
    assert np.abs(drawn[:, :256] - expected).max() <= 1  # the image half of the picture: 0..255, not clipped


def test_predict_skips_non_images_and_keeps_inputs_of_one_stem_apart(tiny_run, tmp_path, capsys):
    run, pics = str(tiny_run), tmp_path / "pics"
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(inputs / "a.png")
    Image.fromarray(np.full((32, 32), 200, np.uint8)).save(inputs / "a.jpg")
    (inputs / "notes.txt").write_text("not an image")
    assert main(["segment", "predict", run, str(inputs), "--output", str(pics)]) == 0
    assert sorted(p.name for p in pics.iterdir()) == ["a_jpg_segment.png", "a_png_segment.png"]
    assert np.asarray(Image.open(pics / "a_png_segment.png"))[0, 0, 0] == 0  # each drawn from its own input
    assert np.asarray(Image.open(pics / "a_jpg_segment.png"))[0, 0, 0] > 150
    assert f"skipped {inputs / 'notes.txt'}: not an image" in capsys.readouterr().err
    assert main(["segment", "predict", run, str(inputs / "notes.txt"), "--output", str(pics)]) == 2
    assert "no image among" in capsys.readouterr().err
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "a.png").write_bytes((inputs / "a.png").read_bytes())
    twins = [str(inputs / "a.png"), str(tmp_path / "other" / "a.png")]
    assert main(["segment", "predict", run, *twins, "--output", str(pics)]) == 2
    assert "would both be drawn to a_png_segment.png" in capsys.readouterr().err


@needs_fmnist
def test_scenes_rebuild_replaces_a_bigger_build_and_refuses_bad_counts(tmp_path, capsys):
    big = SceneSpec(size=56, train_scenes=5, test_scenes=3, max_items=2, max_scale=1.5)
    root = ensure_scenes(tmp_path / "s", big)
    (root / "train" / "images" / "mine.png").write_bytes(b"a file the build does not own")
    assert main(["scenes", "--output", str(root), "--size", "56", "--train", "2", "--test", "1"]) == 0
    assert sorted(p.name for p in (root / "train" / "images").iterdir()) == ["000000.png", "000001.png", "mine.png"]
    assert sorted(p.name for p in (root / "test" / "masks").iterdir()) == ["000000.png"]
    assert len(json.loads((root / "train" / "instances.json").read_text())["images"]) == 2
    for flag, value in (("--train", "-1"), ("--test", "0")):
        with pytest.raises(SystemExit):
            main(["scenes", "--output", str(root), flag, value])
        assert f"argument {flag}: expected a whole number >= 1, got" in capsys.readouterr().err
    with pytest.raises(ValueError, match="scene counts must be >= 1"):
        SceneSpec(train_scenes=0)


def test_scenes_never_rebuild_a_folder_they_did_not_write(tmp_path, capsys):
    mine = tmp_path / "mine"
    (mine / "train" / "images").mkdir(parents=True)
    (mine / "train" / "images" / "000000.png").write_bytes(b"someone's image")
    (mine / "train" / "instances.json").write_text("{}")
    assert main(["scenes", "--output", str(mine), "--size", "56", "--train", "2", "--test", "1"]) == 2
    assert "holds files but no spec.json of a scenes build" in capsys.readouterr().err
    assert (mine / "train" / "images" / "000000.png").read_bytes() == b"someone's image"
    assert (mine / "train" / "instances.json").read_text() == "{}"


def test_semantic_class_names_must_be_a_list_of_names(tmp_path):
    from swinv2.dense.data import AnnotationError, read_semantic_classes

    for text, message in (("[1, 2", "is not a JSON file"), ("[]", "is not a list of class names"),
                          ('"abc"', "is not a list of class names")):  # fmt: skip
        (tmp_path / "semantic_classes.json").write_text(text)
        with pytest.raises(AnnotationError, match=message):
            read_semantic_classes(tmp_path)

"""Deployment and interop: save_pretrained / from_pretrained (local and Hub cache), ONNX / TorchScript /
torch.export round trips, preprocessing that travels with the weights, and the timm entries."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
from PIL import Image

import swinv2
from helpers import randomize
from swinv2.cli import main
from swinv2.deploy import Preprocessing
from swinv2.deploy.export import export_model, onnx_metadata

CLASSES = ["cat", "dog", "owl"]


def small(**overrides):
    """Shifted windows, several stages and random weights (default init makes blocks identities)."""
    model = swinv2.create_model("swinv2_micro_window4_32", num_classes=3, **overrides)
    return randomize(model).eval()


def minimal():
    """One block of one stage: the cheapest model to put through an exporter (an ONNX export of
    :func:`small` takes 20-40 s on two cores), for tests of the export's checks rather than the model."""
    model = swinv2.create_model("swinv2_test_window4_32", num_classes=3, depths=(1,), num_heads=(1,), embed_dim=8)
    return randomize(model).eval()


def test_save_pretrained_round_trip_keeps_weights_preprocessing_and_classes(tmp_path):
    model = small()
    prep = Preprocessing((3, 32, 32), (0.5, 0.4, 0.3), (0.2, 0.2, 0.2), "bilinear", 0.875)
    model.save_pretrained(tmp_path / "m", preprocessing=prep, classes=CLASSES)
    assert sorted(os.listdir(tmp_path / "m")) == ["config.json", "model.safetensors"]
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["architecture"] == "SwinV2" and config["classes"] == CLASSES
    assert config["preprocessing"]["interpolation"] == "bilinear" and config["config"]["num_classes"] == 3
    for source in (tmp_path / "m", tmp_path / "m" / "model.safetensors"):  # the folder, or the file alone
        loaded = swinv2.from_pretrained(source)
        x = torch.randn(2, 3, 32, 32)
        assert torch.equal(loaded(x), model(x)) and not loaded.training
        assert loaded.preprocessing == prep and loaded.classes == CLASSES
        assert loaded.pretrained_cfg["mean"] == (0.5, 0.4, 0.3) and loaded.pretrained_cfg["label_names"] == CLASSES


def test_weights_adapted_to_other_channels_keep_the_files_resize_and_crop(tmp_path):
    """3-channel statistics do not fit a 1-channel model; the file's interpolation and crop still do."""
    prep = Preprocessing((3, 32, 32), (0.5, 0.4, 0.3), (0.2, 0.2, 0.2), "bilinear", 0.875)
    small().save_pretrained(tmp_path / "m", preprocessing=prep, classes=CLASSES)
    grey = swinv2.create_model(
        "swinv2_micro_window4_32", num_classes=3, in_chans=1, pretrained=tmp_path / "m" / "model.safetensors"
    )
    assert grey.load_report.clean and grey.load_report.adapted  # the patch embedding summed over channels
    assert grey.preprocessing == Preprocessing((1, 32, 32), (0.5,), (0.5,), "bilinear", 0.875)


def test_video_models_round_trip_too(tmp_path):
    from swinv2.video import create_video_model

    model = randomize(create_video_model("swinv2_video_pico_window4x8_64")).eval()
    model.save_pretrained(tmp_path)
    loaded = swinv2.from_pretrained(tmp_path)
    x = torch.randn(1, 1, 8, 64, 64)
    assert type(loaded).__name__ == "VideoSwinV2" and torch.equal(loaded(x), model(x))


def test_hub_ids_resolve_through_the_huggingface_cache_offline(tmp_path, monkeypatch):
    pytest.importorskip("huggingface_hub")
    pytest.importorskip("transformers")  # imported before HF_HUB_OFFLINE is set, as in a user's notebook
    model = small()
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "cache" / "models--someone--swinv2-micro"
    model.save_pretrained(repo / "snapshots" / commit, classes=CLASSES)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loaded = swinv2.from_pretrained("someone/swinv2-micro", cache_dir=str(tmp_path / "cache"))
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(loaded(x), model(x)) and loaded.classes == CLASSES
    # offline means the cache alone, however late the variable was set: no connection is even tried
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("the test forbids the network")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    with pytest.raises(
        FileNotFoundError, match=r"someone/not-cached is not in the Hugging Face cache .*HF_HUB_OFFLINE"
    ):
        swinv2.from_pretrained("someone/not-cached", cache_dir=str(tmp_path / "cache"))
    assert attempts == []
    with pytest.raises(FileNotFoundError, match=r"no such file or directory: .*taken as a local path"):
        swinv2.from_pretrained(str(tmp_path / "missing" / "folder"))


def test_weights_from_a_training_run_bring_their_preprocessing(tmp_path):
    model = small()
    prep = Preprocessing((3, 32, 32), (0.2, 0.2, 0.2), (0.3, 0.3, 0.3), "bilinear", 1.0)
    model.save_pretrained(tmp_path, preprocessing=prep, classes=CLASSES)
    weights = tmp_path / "model.safetensors"
    rebuilt = swinv2.create_model("swinv2_micro_window4_32", num_classes=3, pretrained=weights)
    assert rebuilt.preprocessing == prep and rebuilt.classes == CLASSES
    at_48 = swinv2.create_model("swinv2_micro_window4_32", num_classes=3, img_size=48, pretrained=weights)
    assert at_48.preprocessing.input_size == (3, 48, 48) and at_48.preprocessing.mean == (0.2, 0.2, 0.2)


def test_preprocessing_transform_resizes_crops_and_normalises():
    prep = Preprocessing((3, 32, 32), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), "bicubic", 0.5)
    image = torch.zeros(3, 80, 100, dtype=torch.uint8)
    image[:, 30:50, 40:60] = 255  # a bright centre that the 0.5 crop keeps whole
    out = prep.transform()(image)
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    assert out.max() == pytest.approx(2.0, abs=0.05) and out.min() == pytest.approx(-2.0, abs=0.05)
    with pytest.raises(ValueError, match="interpolation"):
        Preprocessing((3, 32, 32), interpolation="lanczos9")
    with pytest.raises(ValueError, match="does not match mean"):
        Preprocessing((1, 32, 32))


# ------------------------------------------------------------------------------------------- export
@pytest.fixture(scope="module")
def onnx_export(tmp_path_factory):
    """`swinv2 export` of a saved model at 40 px (padded to its windows, so the padding masks export
    too): ``(model folder, ONNX file, what the command printed)``. One export serves the tests below."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    root = tmp_path_factory.mktemp("onnx")
    prep = Preprocessing((3, 32, 32), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bilinear", 1.0)
    small().save_pretrained(root / "m", preprocessing=prep, classes=CLASSES)
    onnx_file = root / "m.onnx"
    args = ["export", "--checkpoint", str(root / "m"), "--format", "onnx", "--img-size", "40"]
    out = subprocess.run(
        [sys.executable, "-m", "swinv2", *args, "--output", str(onnx_file)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return root / "m", onnx_file, out.stdout


def test_onnx_export_matches_pytorch_at_batch_1_and_3(onnx_export):
    _, onnx_file, printed = onnx_export
    lines = [line for line in printed.splitlines() if "onnxruntime vs PyTorch" in line]
    print("\n".join(lines))
    assert [line.split("batch ")[1].split(":")[0] for line in lines] == ["1", "3"]
    assert all(float(line.split("max |diff| ")[1].split(",")[0]) < 1e-4 for line in lines)
    meta = onnx_metadata(onnx_file)
    assert meta["architecture"] == "SwinV2" and meta["preprocessing"]["input_size"] == [3, 40, 40]
    assert meta["classes"] == CLASSES


@pytest.mark.parametrize("fmt", ["torchscript", "export"])
def test_torchscript_and_torch_export_match_pytorch(tmp_path, fmt):
    path = tmp_path / ("m.pt" if fmt == "torchscript" else "m.pt2")
    for check in export_model(small(img_size=40), fmt, path, batches=(1, 3)):
        print(f"{fmt} vs PyTorch, {check.line()}")
        assert check.max_diff < 1e-4


def test_video_models_export_too(tmp_path):
    from swinv2.video import create_video_model

    model = randomize(create_video_model("swinv2_video_pico_window4x8_64")).eval()
    for check in export_model(model, "export", tmp_path / "v.pt2", batches=(1, 3)):
        print(f"video torch.export vs PyTorch, {check.line()}")
        assert check.max_diff < 1e-4


def test_export_command_sets_a_video_models_window_and_refuses_another_clip_size(tmp_path, capsys):
    from swinv2.cli import build_parser
    from swinv2.cli.export import _model_to_export
    from swinv2.video import create_video_model

    create_video_model("swinv2_video_pico_window4x8_64").save_pretrained(tmp_path / "v")
    common = ["export", "--checkpoint", str(tmp_path / "v"), "--format", "export", "--output", str(tmp_path / "v.pt2")]
    model = _model_to_export(build_parser().parse_args([*common, "--window-size", "4"]))
    assert model.cfg.window_size == (4, 4, 4) and model.stages[0].blocks[0].window == (4, 4, 4)
    assert main([*common, "--img-size", "96"]) == 2
    assert "--img-size: a video model exports at its clip size" in capsys.readouterr().err
    assert not (tmp_path / "v.pt2").exists()


def test_export_command_checks_and_predict_uses_the_stored_preprocessing(tmp_path, capsys, onnx_export):
    folder, onnx_file, printed = onnx_export
    assert "onnxruntime vs PyTorch, batch 1: max |diff|" in printed and "batch 3" in printed
    picture = tmp_path / "p.png"
    Image.new("RGB", (50, 40), (200, 30, 90)).save(picture)
    assert main(["predict", str(onnx_file), str(picture), "--topk", "3"]) == 0
    onnx_line = capsys.readouterr().out
    assert main(["predict", str(folder), str(picture), "--topk", "3", "--img-size", "40"]) == 0
    torch_line = capsys.readouterr().out
    names = [part.split()[0] for part in onnx_line.split(": ", 1)[1].split(", ")]
    assert sorted(names) == sorted(CLASSES)
    onnx_probs = [float(part.split()[1]) for part in onnx_line.split(": ", 1)[1].split(", ")]
    torch_probs = [float(part.split()[1]) for part in torch_line.split(": ", 1)[1].split(", ")]
    assert onnx_line.split(": ", 1)[1].split()[0] == torch_line.split(": ", 1)[1].split()[0]
    assert max(abs(a - b) for a, b in zip(onnx_probs, torch_probs)) < 2e-3  # printed to 3 decimals
    assert main(["export", "--format", "onnx", "--output", str(onnx_file)]) == 2
    assert "give --model NAME, --checkpoint PATH" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------- timm
def test_timm_create_model_builds_this_projects_models_with_features_and_data_config(tmp_path):
    timm = pytest.importorskip("timm")
    from swinv2.deploy.timm_models import NAMES

    assert "swinv2lib_tiny_window8_256" in NAMES and "swinv2lib_tiny_window8_256" in timm.list_models("swinv2lib_*")
    model = timm.create_model("swinv2lib_micro_window4_32", num_classes=3, drop_path_rate=0.1)
    assert isinstance(model, swinv2.SwinV2) and model.cfg.num_classes == 3 and model.cfg.drop_path_rate == 0.1
    # weights of this project through timm's pretrained_cfg_overlay, preprocessing included
    prep = Preprocessing((3, 32, 32), (0.1, 0.2, 0.3), (0.3, 0.2, 0.1), "bilinear", 0.95)
    source = small()
    source.save_pretrained(tmp_path, preprocessing=prep)
    loaded = timm.create_model(
        "swinv2lib_micro_window4_32",
        pretrained=True,
        num_classes=3,
        pretrained_cfg_overlay={"file": str(tmp_path / "model.safetensors")},
    ).eval()
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(loaded(x), source(x))
    data = timm.data.resolve_data_config(model=loaded)
    assert data["mean"] == (0.1, 0.2, 0.3) and data["crop_pct"] == 0.95 and data["interpolation"] == "bilinear"
    features = timm.create_model("swinv2lib_micro_window4_32", features_only=True, out_indices=(1, 2))
    maps = features(x)
    assert [m.shape[1] for m in maps] == features.feature_info.channels() and len(maps) == 2
    assert features.feature_info.reduction() == [4, 8]  # patch 2, halved per stage
    # timm's training utilities: optimiser groups from no_weight_decay(), the classifier, the class count
    from timm.optim import create_optimizer_v2

    optimizer = create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.05)
    no_decay = [g for g in optimizer.param_groups if g["weight_decay"] == 0]
    assert no_decay and sum(len(g["params"]) for g in no_decay) > len(list(model.stages))
    assert model.num_classes == 3 and model.get_classifier().out_features == 3
    model.reset_classifier(5)
    assert model.num_classes == 5 and model(x).shape == (2, 5)
    with pytest.raises(ValueError, match="micro_window4_32 has no released weights; pass pretrained_cfg_overlay"):
        timm.create_model("swinv2lib_micro_window4_32", pretrained=True)


# --------------------------------------------------------------------------------- loading for inference
def test_eval_matches_folder_classes_to_the_models_by_name(tmp_path):
    from swinv2.deploy.infer import _in_model_classes

    model = small()
    model.classes = CLASSES  # trained as cat, dog, owl
    samples = [(torch.zeros(3, 32, 32), 0), (torch.ones(3, 32, 32), 1)]  # a folder holding dog/ and owl/ only
    relabelled = _in_model_classes(samples, ["dog", "owl"], model)
    assert [relabelled[i][1] for i in range(2)] == [1, 2]
    assert _in_model_classes(samples, CLASSES, model) is samples  # same order: nothing to map
    with pytest.raises(ValueError, match=r"classes the model was not trained on: \['emu'\]"):
        _in_model_classes(samples, ["dog", "emu"], model)
    model.classes = None
    with pytest.raises(ValueError, match="the data has 4 classes, the model 3"):
        _in_model_classes(samples, ["a", "b", "c", "d"], model)


def test_loading_refuses_an_encoder_and_resizing_moves_the_preprocessing(tmp_path):
    from swinv2.deploy.infer import load_classifier

    randomize(swinv2.create_model("swinv2_micro_window4_32", num_classes=0)).save_pretrained(tmp_path / "encoder")
    with pytest.raises(ValueError, match="encoder without a classifier head"):
        load_classifier(tmp_path / "encoder")
    small().save_pretrained(tmp_path / "m", classes=CLASSES)
    model = swinv2.from_pretrained(tmp_path / "m")
    model.set_input_size(img_size=64, window_size=8)
    assert model.preprocessing.input_size == (3, 64, 64)  # what predict and export resize images to
    model.save_pretrained(tmp_path / "m64")
    assert swinv2.from_pretrained(tmp_path / "m64").preprocessing.input_size == (3, 64, 64)


def test_bad_device_and_mask_patch_are_named():
    from swinv2.models.simmim import MaskGenerator
    from swinv2.train.loop import resolve_device

    with pytest.raises(ValueError, match="--device takes auto, cpu, cuda or cuda:N, got 'foo'"):
        resolve_device("foo")
    with pytest.raises(ValueError, match="mask patch 0 must be a multiple"):
        MaskGenerator(28, 0, 4, 0.5)


def test_negative_stage_indices_count_from_the_end_and_class_names_must_fit(tmp_path):
    model = small()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        last = model.forward_intermediates(x, indices=[-1], intermediates_only=True)
        both = model.forward_intermediates(x, indices=[0, -1], intermediates_only=True)
    assert [f.shape[1] for f in last] == [model.feature_info[-1]["num_chs"]] and len(both) == 2
    with pytest.raises(ValueError, match=r"indices must be stage numbers in -4\.\.3, got \[4\]"):
        model.forward_intermediates(x, indices=[4])
    with pytest.raises(ValueError, match="2 class names for a model with 3 classes"):
        model.save_pretrained(tmp_path / "m", classes=["cat", "dog"])
    timm = pytest.importorskip("timm")
    import swinv2.deploy.timm_models  # noqa: F401  (registers the swinv2lib_* entries)

    features = timm.create_model("swinv2lib_micro_window4_32", features_only=True, out_indices=(-1,))
    assert [f.shape[1] for f in features(x)] == features.feature_info.channels() == [256]
    assert len(timm.create_model("swinv2lib_micro_window4_32", features_only=True, out_indices=2)(x)) == 2


def test_export_refuses_an_opset_it_did_not_write_and_sizes_below_one(tmp_path, capsys, monkeypatch):
    pytest.importorskip("onnxscript")
    from swinv2.deploy import export
    from swinv2.deploy.export import export_model

    # the range check would refuse 17 up front: widen it to reach the exporter's fallback, the backstop
    monkeypatch.setattr(export, "onnx_opsets", lambda: (17, 25))
    with pytest.raises(ValueError, match="asked for ONNX opset 17, the exporter wrote 18"):
        export_model(minimal(), "onnx", tmp_path / "m.onnx", opset=17, batches=(1,))
    assert not (tmp_path / "m.onnx").exists()
    with pytest.raises(SystemExit):
        main(["export", "--model", "swinv2_micro_window4_32", "--format", "onnx", "--output", "x.onnx", "--img-size=0"])
    assert "expected a whole number >= 1, got 0" in capsys.readouterr().err


def test_export_refuses_an_opset_the_installed_exporter_cannot_write_before_exporting(tmp_path, monkeypatch, capsys):
    onnx = pytest.importorskip("onnx")
    from swinv2.deploy.export import onnx_opsets

    low, high = onnx_opsets()
    from onnxscript.version_converter import _version_converter

    assert low == max(17, _version_converter.SUPPORTED_MIN_ONNX_OPSET) and low <= 18 <= high
    assert high <= onnx.defs.onnx_opset_version()

    def no_export(*args, **kwargs):
        raise AssertionError("the exporter ran for an opset it cannot write")

    monkeypatch.setattr(torch.onnx, "export", no_export)
    output = tmp_path / "m.onnx"
    with pytest.raises(ValueError, match=f"ONNX opset {high + 1} is outside .* {low} to {high}"):
        export_model(small(), "onnx", output, opset=high + 1, batches=(1,))
    args = ["export", "--model", "swinv2_micro_window4_32", "--format", "onnx", "--output", str(output)]
    assert main([*args, "--opset", "30"]) == 2
    assert f"ONNX opset 30 is outside what the installed exporter writes: {low} to {high}" in capsys.readouterr().err
    assert main([*args, "--opset", "16"]) == 2
    assert f"{low} to {high}" in capsys.readouterr().err
    assert not output.exists() and os.listdir(tmp_path) == []


def test_torchscript_file_refuses_another_image_size_and_matches_at_its_own(tmp_path):
    model = small(img_size=40)
    assert export_model(model, "torchscript", tmp_path / "m.pt", batches=()) == []
    loaded = torch.jit.load(str(tmp_path / "m.pt"))
    x = torch.randn(3, 3, 40, 40)  # traced at batch 2
    with torch.no_grad():
        assert (loaded(x) - model(x)).abs().max() < 1e-4  # the batch stays free
        with pytest.raises(torch.jit.Error, match=r"exported for inputs \(B, 3, 40, 40\), got \[1, 3, 48, 48\]"):
            loaded(torch.randn(1, 3, 48, 48))  # traced geometry would run and give wrong logits
        with pytest.raises(torch.jit.Error, match="exported for inputs"):
            loaded(torch.randn(1, 1, 40, 40))
    assert not loaded.training  # loads ready for inference, and freezes (which needs eval mode)
    frozen = torch.jit.freeze(loaded)
    with torch.no_grad():
        assert (frozen(x) - model(x)).abs().max() < 1e-4


def test_a_missing_or_invalid_onnx_file_is_one_line_naming_the_path(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from swinv2.deploy.export import onnx_session

    picture = tmp_path / "p.png"
    Image.new("RGB", (40, 40)).save(picture)
    missing, garbage = tmp_path / "missing.onnx", tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a protobuf model")
    assert main(["predict", str(missing), str(picture)]) == 2
    assert f"{missing}: no such file (expected an .onnx file written by `swinv2 export`)" in capsys.readouterr().err
    assert main(["predict", str(garbage), str(picture)]) == 2
    err = capsys.readouterr().err
    assert f"{garbage} is not an ONNX model onnxruntime can load" in err and "Traceback" not in err
    with pytest.raises(FileNotFoundError, match="is a directory"):
        onnx_session(tmp_path)


def test_timm_overlay_preprocessing_survives_in_chans_adaptation(tmp_path):
    timm = pytest.importorskip("timm")
    import swinv2.deploy.timm_models  # noqa: F401  (registers the swinv2lib_* entries)

    prep = Preprocessing((3, 32, 32), (0.1, 0.2, 0.3), (0.3, 0.2, 0.1), "bicubic", 0.95)
    small().save_pretrained(tmp_path, preprocessing=prep)
    overlay = {"file": str(tmp_path / "model.safetensors"), "mean": (0.4,), "std": (0.25,), "crop_pct": 0.8}
    kwargs = {"pretrained": True, "num_classes": 3, "in_chans": 1}
    model = timm.create_model("swinv2lib_micro_window4_32", pretrained_cfg_overlay=overlay, **kwargs)
    assert model.cfg.in_chans == 1 and model.load_report.adapted  # 3 -> 1 input channels
    data = timm.data.resolve_data_config(model=model)
    assert data["mean"] == (0.4,) and data["std"] == (0.25,) and data["crop_pct"] == 0.8
    assert data["input_size"] == (1, 32, 32) and data["interpolation"] == "bicubic"  # the file's, kept
    sized = timm.create_model(
        "swinv2lib_micro_window4_32", pretrained_cfg_overlay={**overlay, "input_size": (1, 48, 48)}, **kwargs
    )
    assert sized.cfg.img_size == 48 and sized.pretrained_cfg["input_size"] == (1, 48, 48)
    assert sized.pretrained_cfg["mean"] == (0.4,)
    with pytest.raises(ValueError, match=r"mean \(0\.1, 0\.2, 0\.3\) does not fit in_chans=1"):
        timm.create_model("swinv2lib_micro_window4_32", pretrained_cfg_overlay={**overlay, "mean": prep.mean}, **kwargs)
    with pytest.raises(ValueError, match=r"input_size \(3, 32, 32\) does not match in_chans=1"):
        timm.create_model(
            "swinv2lib_micro_window4_32", pretrained_cfg_overlay={**overlay, "input_size": (3, 32, 32)}, **kwargs
        )


def test_a_mistyped_local_path_fails_at_once_without_asking_the_hub(tmp_path, monkeypatch, capsys):
    import re
    import time

    calls = []
    hub = pytest.importorskip("huggingface_hub")

    def fake_download(repo, filename, **kwargs):
        calls.append(repo)
        raise OSError("offline (test)")

    monkeypatch.setattr(hub, "hf_hub_download", fake_download)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    for typo in ("runs/typo", "./runs/typo", "../typo", "runs/typo/model.safetensors", "owner/m.safetensors", "~/x"):
        start = time.perf_counter()
        with pytest.raises(FileNotFoundError, match=f"^no such file or directory: {re.escape(typo)} "):
            swinv2.from_pretrained(typo)
        assert time.perf_counter() - start < 2 and calls == [], typo
    args = ["export", "--checkpoint", "runs/typo", "--format", "torchscript", "--output", "m.pt"]
    assert main(args) == 2
    assert "no such file or directory: runs/typo (" in capsys.readouterr().err and calls == []
    with pytest.raises(
        FileNotFoundError, match=r"could not read owner/swinv2-t\.v2 from the Hugging Face cache .*OSError"
    ):
        swinv2.from_pretrained("owner/swinv2-t.v2")
    assert calls == ["owner/swinv2-t.v2"]
    # a folder named like the owner makes the id look local; the message says how to reach the Hub
    with pytest.raises(FileNotFoundError, match=r"runs/ is a folder here \(write hf://runs/typo for the Hub"):
        swinv2.from_pretrained("runs/typo")
    with pytest.raises(FileNotFoundError, match=r"could not read runs/typo from the Hugging Face cache .*OSError"):
        swinv2.from_pretrained("hf://runs/typo")
    assert calls == ["owner/swinv2-t.v2", "runs/typo"]


def test_dynamic_onnx_file_takes_every_size_and_batch(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from swinv2.deploy.export import onnx_session

    # two blocks, so that the second one's shifted windows (roll, shift regions) are in the graph too
    model = swinv2.create_model("swinv2_test_window4_32", num_classes=3, depths=(2,), num_heads=(1,), embed_dim=8)
    model, path = randomize(model).eval(), tmp_path / "any.onnx"
    checks = export_model(model, "onnx", path, batches=(1, 2), dynamic=True)
    for check in checks:
        print(check.line())
    assert [(c.size, c.batch) for c in checks] == [
        (None, 1),
        (None, 2),
        ((97, 130), 1),
        ((97, 130), 2),
        ((192, 320), 1),
        ((192, 320), 2),
    ]
    assert all(c.max_diff < 1e-4 for c in checks)
    assert onnx_metadata(path)["dynamic_sizes"] is True
    session = onnx_session(path)
    with torch.no_grad():
        for shape in [(3, 3, 384, 384), (1, 3, 9, 13), (2, 3, 41, 17)]:  # larger, clipped windows, odd
            x = torch.randn(shape)
            diff = (torch.as_tensor(session.run(None, {"images": x.numpy()})[0]) - model(x)).abs()
            print(f"onnxruntime at {list(shape)}: max |diff| {diff.max():.2e}, mean {diff.mean():.2e}")
            assert diff.max() < 1e-4
    with pytest.raises(ValueError, match="TorchScript traces one image size"):
        export_model(model, "torchscript", tmp_path / "m.pt", dynamic=True)

"""Loading weights: safe readers, adaptation (head, windows, channels) and reports by key name."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from helpers import randomize
from swinv2 import create_model
from swinv2.weights.checkpoint import load_state_dict_into, read_checkpoint, save_weights

NAME = "swinv2_test_window4_32"


def test_safetensors_round_trip_keeps_trained_windows(tmp_path):
    model = randomize(create_model(NAME)).eval()
    path = tmp_path / "m.safetensors"
    save_weights(model, path)
    # Fine-tune at a larger image and window: the file's windows stay the CPB normalisation.
    bigger = create_model(NAME, pretrained=path, img_size=64, window_size=8).eval()
    assert bigger.load_report.clean
    assert bigger.cfg.pretrained_window_sizes == model.cfg.pretrained_window_sizes == (4, 4, 4, 2)
    same = create_model(NAME, pretrained=path).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(same(x), model(x))


def test_head_recreated_for_other_class_count(tmp_path):
    path = tmp_path / "m.pth"
    torch.save({"model": randomize(create_model(NAME)).state_dict()}, path)
    model = create_model(NAME, pretrained=path, num_classes=3)
    report = model.load_report
    assert report.clean and any(a.startswith("head.fc.weight") for a in report.adapted)
    assert model.head.fc.out_features == 3


def test_mismatched_and_unexpected_keys_are_reported_by_name(tmp_path):
    sd = randomize(create_model(NAME)).state_dict()
    sd["stages.0.blocks.0.mlp.fc1.weight"] = torch.zeros(3, 3)
    sd["extra.weight"] = torch.zeros(1)
    del sd["norm.bias"]
    model = create_model(NAME)
    report = load_state_dict_into(model, sd)
    assert report.mismatched == ["stages.0.blocks.0.mlp.fc1.weight (3, 3) vs (64, 16)"]
    assert report.unexpected == ["extra.weight"] and report.missing == ["norm.bias"]
    with pytest.raises(ValueError, match=r"mismatched: stages\.0\.blocks\.0\.mlp\.fc1\.weight"):
        load_state_dict_into(model, sd, strict=True)


def test_v1_table_resized_when_loading_at_another_window(tmp_path):
    path = tmp_path / "v1.safetensors"
    save_weights(randomize(create_model(NAME, position_bias="table")), path)
    model = create_model(NAME, pretrained=path, position_bias="table", img_size=64, window_size=8)
    assert model.load_report.clean
    assert any("window (4, 4) -> (8, 8)" in a for a in model.load_report.adapted)
    assert torch.isfinite(model.eval()(torch.randn(1, 3, 64, 64))).all()


def test_rgb_weights_load_into_grayscale_model(tmp_path):
    path = tmp_path / "rgb.safetensors"
    rgb = randomize(create_model(NAME)).eval()
    save_weights(rgb, path)
    gray = create_model(NAME, pretrained=path, in_chans=1).eval()
    x = torch.randn(1, 1, 32, 32, dtype=torch.float64)
    with torch.no_grad():  # a grey image gives the same output in both (float64: no rounding noise)
        assert torch.allclose(gray.double()(x), rgb.double()(x.expand(-1, 3, -1, -1)), atol=1e-10)


class _Payload:
    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"model": _Payload(str(marker))}, f)
    with pytest.raises(ValueError, match="weights-only"):
        read_checkpoint(path)
    with pytest.raises(ValueError):
        create_model(NAME, pretrained=path)
    assert not marker.exists()


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        create_model(NAME, pretrained=tmp_path / "nope.safetensors")


def test_atomic_write_leaves_no_temporary(tmp_path):
    save_weights(create_model(NAME), tmp_path / "w.safetensors")
    assert os.listdir(tmp_path) == ["w.safetensors"]

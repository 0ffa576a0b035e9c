"""transformers Swinv2 repositories: ``from_pretrained`` reads the layout transformers writes (classifier,
bare model, masked-image model; local folders and Hub caches), ``save_pretrained(layout="transformers")``
writes one transformers reads, and configs that disagree with their weights are refused before the
model is allocated."""

from __future__ import annotations

import copy
import json

import pytest
import torch

import swinv2
from helpers import diff, randomize
from swinv2.models import SimMIM
from swinv2.tools.bench import peak_memory

transformers = pytest.importorskip("transformers")
SMALL = dict(image_size=64, embed_dim=16, depths=[2, 2], num_heads=[1, 2], window_size=8, encoder_stride=8)


def hf_config(**kw) -> transformers.Swinv2Config:
    labels = {i: name for i, name in enumerate(["cat", "dog", "owl"])}
    return transformers.Swinv2Config(**{**SMALL, "id2label": labels, "label2id": {}, **kw})


def float64_check(name: str, expected: torch.Tensor, got: torch.Tensor) -> None:
    mx, mean = diff(expected, got)
    print(f"{name}: max |diff| {mx:.2e}, mean {mean:.2e} (float64)")
    assert mx <= 1e-10, (name, mx)


def test_a_transformers_classifier_folder_loads_with_its_labels_and_preprocessing(tmp_path):
    ref = randomize(transformers.Swinv2ForImageClassification(hf_config())).eval()
    ref.save_pretrained(tmp_path)
    processor = transformers.ViTImageProcessor(size={"height": 64, "width": 64}, image_mean=[0.1] * 3, resample=2)
    processor.save_pretrained(tmp_path)  # transformers' own writer of preprocessor_config.json
    mine = swinv2.from_pretrained(tmp_path)
    assert isinstance(mine, swinv2.SwinV2) and mine.classes == ["cat", "dog", "owl"]
    assert mine.preprocessing.mean == (0.1, 0.1, 0.1) and mine.preprocessing.interpolation == "bilinear"
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        float64_check("transformers classifier", ref.double()(x).logits, copy.deepcopy(mine).double()(x))


def test_a_bare_model_and_a_masked_image_model_load_too(tmp_path):
    bare = randomize(transformers.Swinv2Model(hf_config())).eval()
    bare.save_pretrained(tmp_path / "bare")
    mine = swinv2.from_pretrained(tmp_path / "bare")
    assert mine.cfg.num_classes == 0 and mine.classes is None
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        float64_check("Swinv2Model pooled", bare.double()(x).pooler_output, mine.double()(x))

    mim = randomize(transformers.Swinv2ForMaskedImageModeling(hf_config())).eval()
    mim.save_pretrained(tmp_path / "mim")
    simmim = swinv2.from_pretrained(tmp_path / "mim")
    assert isinstance(simmim, SimMIM)
    tokens = torch.rand(2, 16, 16, generator=torch.Generator().manual_seed(0)) < 0.5  # (B, h, w) at patch 4
    with torch.no_grad():
        theirs = mim.double()(x, bool_masked_pos=tokens.flatten(1)).reconstruction
        _, ours = simmim.double()(x, tokens)
    float64_check("Swinv2ForMaskedImageModeling reconstruction", theirs, ours)


def test_a_hub_repository_with_pytorch_model_bin_loads_offline(tmp_path, monkeypatch):
    pytest.importorskip("huggingface_hub")
    ref = randomize(transformers.Swinv2ForImageClassification(hf_config())).eval()
    commit = "0" * 40
    repo = tmp_path / "cache" / "models--someone--swinv2-tiny-finetune"
    # the layout of Microsoft's 2022 repositories: config.json and pytorch_model.bin (transformers 5 writes
    # safetensors only, so the weights are torch.save'd as transformers 4 did)
    ref.config.save_pretrained(repo / "snapshots" / commit)
    torch.save(ref.state_dict(), repo / "snapshots" / commit / "pytorch_model.bin")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    assert not list((repo / "snapshots" / commit).glob("*.safetensors"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    mine = swinv2.from_pretrained("someone/swinv2-tiny-finetune", cache_dir=str(tmp_path / "cache"))
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        float64_check("Hub repository, pytorch_model.bin", ref.double()(x).logits, mine.double()(x))


def test_save_pretrained_writes_a_repository_transformers_loads(tmp_path):
    model = randomize(swinv2.create_model("swinv2_micro_window4_32", num_classes=3, window_size=8, img_size=64))
    model.save_pretrained(tmp_path, classes=["a", "b", "c"], layout="transformers")
    loaded = transformers.AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    assert loaded.config.id2label == {0: "a", 1: "b", 2: "c"}
    processor = transformers.AutoImageProcessor.from_pretrained(tmp_path)
    assert processor.size == {"height": 64, "width": 64}
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        float64_check("saved for transformers", copy.deepcopy(model).double().eval()(x), loaded.double()(x).logits)
    again = swinv2.from_pretrained(tmp_path)  # and it reads back here
    assert again.classes == ["a", "b", "c"]
    v1 = swinv2.create_model("swinv2_micro_window4_32", attention="dot", position_bias="table")
    with pytest.raises(ValueError, match="transformers' Swinv2 has no attention='dot'"):
        v1.save_pretrained(tmp_path / "v1", layout="transformers")
    assert not (tmp_path / "v1").exists()


@pytest.mark.parametrize("layout", ["swinv2", "transformers"])
def test_a_config_that_disagrees_with_its_weights_is_refused_before_allocating(tmp_path, layout):
    """A config.json of embed_dim 262144 beside a small model's weights would build an 824 GB model."""
    if layout == "swinv2":
        swinv2.create_model("swinv2_test_window4_32").save_pretrained(tmp_path)
        info = json.loads((tmp_path / "config.json").read_text())
        info["config"]["embed_dim"] = 262144
    else:
        transformers.Swinv2ForImageClassification(hf_config()).save_pretrained(tmp_path)
        info = json.loads((tmp_path / "config.json").read_text())
        info["embed_dim"] = 262144
    (tmp_path / "config.json").write_text(json.dumps(info))
    errors = []

    def load() -> None:
        try:
            swinv2.from_pretrained(tmp_path)
        except ValueError as exc:
            errors.append(str(exc))

    peak = peak_memory(load, torch.device("cpu"))
    print(f"peak {peak / 2**20:.1f} MiB; {errors}")
    assert errors and "does not describe the weights" in errors[0] and "262144" in errors[0]
    assert peak < 64 << 20  # the weights file's size, not the config's model

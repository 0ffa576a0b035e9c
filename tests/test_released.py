"""Released weights by name: ``create_model("name.tag", pretrained=True)`` from offline caches laid out as
the real ones are, written by the peers' own writers (timm's hub saver, transformers' save_pretrained,
torchvision's file names in torch.hub's folder), with random weights; logits compared with the peer
model that wrote them."""

from __future__ import annotations

import hashlib
import importlib
from pathlib import Path

import pytest
import torch

import swinv2
import swinv2.pretrained.released
from helpers import diff, randomize
from swinv2.layers.linear import use_onednn
from swinv2.pretrained.fetch import WeightsNotFound
from swinv2.pretrained.tags import TAGS, find_tag
from swinv2.weights.convert import to_official

timm = pytest.importorskip("timm")
transformers = pytest.importorskip("transformers")
pytest.importorskip("huggingface_hub")
# The peers compute in PyTorch's order, so this project's explicit path (PyTorch's kernels) is compared: on
# random weights each model's fp32 logits sit up to 1.4e-4 from its own float64 ones (SwinV2-B at 384 px),
# which the fast path's other summation order would add; test_parity bounds the fast path on its own.
TOL = 1e-4


def snapshot(cache: Path, repo: str, revision: str = "main", commit: str | None = None) -> Path:
    """A snapshot folder of ``repo`` in a Hugging Face cache, with ``revision`` pointing at it."""
    commit = commit or hashlib.sha1(f"{repo}@{revision}".encode()).hexdigest()
    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / revision).write_text(commit)
    (folder / "snapshots" / commit).mkdir(parents=True)
    return folder / "snapshots" / commit


@pytest.fixture
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "hf"


def check_logits(name: str, ref, mine, x: torch.Tensor) -> None:
    for module in mine.modules():
        if hasattr(module, "fused"):
            module.fused = False
    with torch.no_grad(), use_onednn(False):
        expected = ref(x)
        expected = getattr(expected, "logits", expected)
        mx, mean = diff(expected, mine.eval()(x))
    print(f"{name}: max |diff| {mx:.2e}, mean {mean:.2e}")
    assert mx <= TOL, (name, mx)


def test_every_released_tag_is_catalogued_with_its_sources():
    names = {t.name for t in TAGS}
    timm_tags = {n for n in timm.list_pretrained("swinv2_*") if not n.startswith("swinv2_cr")}
    assert timm_tags <= names and len(timm_tags) == 12  # timm's 12 tags of this architecture
    assert {t.name for t in TAGS if "torchvision" in t.sources} == {
        f"swinv2_{s}_window8_256.tv_in1k" for s in ("tiny", "small", "base")
    }
    for tag in TAGS:
        assert tag.model in swinv2.list_models(), tag.name
        cfg = timm.get_pretrained_cfg(tag.name) if tag.name in timm_tags else None
        if cfg is not None:  # the same preprocessing and class count as timm's own records
            assert (cfg.input_size[-1], cfg.num_classes, cfg.crop_pct) == (tag.img_size, tag.num_classes, tag.crop_pct)
            assert tag.sources["official"] == cfg.url and tag.sources["timm"] == f"timm/{tag.name}"


def test_timm_hub_repository_loads_by_name_with_its_preprocessing_and_classes(offline):
    from timm.models._hub import save_for_hf

    ref = randomize(timm.create_model("swinv2_tiny_window8_256")).eval()
    save_for_hf(ref, snapshot(offline, "timm/swinv2_tiny_window8_256.ms_in1k"), safe_serialization=True)
    name = "swinv2_tiny_window8_256.ms_in1k"
    mine = swinv2.create_model(name, pretrained=True, cache_dir=str(offline))
    check_logits(name, ref, mine, torch.randn(1, 3, 256, 256))
    default = swinv2.create_model("swinv2_tiny_window8_256", pretrained=True, cache_dir=str(offline))
    assert default.pretrained_tag == mine.pretrained_tag  # no tag: the default one, the same weights
    assert all(torch.equal(a, b) for a, b in zip(default.state_dict().values(), mine.state_dict().values()))
    prep = mine.preprocessing
    assert (prep.input_size, prep.crop_pct, prep.interpolation) == ((3, 256, 256), 0.9, "bicubic")
    assert len(mine.classes) == 1000 and mine.classes[0] == "tench"
    assert mine.pretrained_tag["source"] == "timm" and mine.load_report.clean
    tuned = swinv2.create_model(name, pretrained=True, cache_dir=str(offline), num_classes=10)  # a new head
    assert tuned.cfg.num_classes == 10 and tuned.classes is None and tuned.load_report.adapted
    # the same tag through timm's create_model (timm hands the entry the tag), grey images as timm adapts them
    importlib.import_module("swinv2.deploy.timm_models")  # registers swinv2lib_*

    entry = "swinv2lib_" + name.removeprefix("swinv2_")
    grey = timm.create_model(entry, pretrained=True, in_chans=1, num_classes=0, cache_dir=str(offline)).eval()
    x = torch.randn(1, 1, 256, 256)
    with torch.no_grad(), use_onednn(False):
        mx, mean = diff(ref.forward_head(ref.forward_features(x.expand(-1, 3, -1, -1)), pre_logits=True), grey(x))
    print(f"timm entry, in_chans=1: max |diff| {mx:.2e}, mean {mean:.2e}")
    assert mx <= TOL


def test_a_22k_fine_tune_brings_its_pretrained_windows(offline):
    from timm.models._hub import save_for_hf

    name = "swinv2_base_window12to24_192to384.ms_in22k_ft_in1k"
    ref = randomize(timm.create_model("swinv2_base_window12to24_192to384")).eval()
    save_for_hf(ref, snapshot(offline, f"timm/{name}"), safe_serialization=True)
    mine = swinv2.create_model(name, pretrained=True, cache_dir=str(offline))
    assert tuple(mine.cfg.pretrained_window_sizes) == (12, 12, 12, 6) and mine.preprocessing.crop_pct == 1.0
    check_logits(name, ref, mine, torch.randn(1, 3, 384, 384))


def test_microsofts_transformers_repository_loads_with_its_own_labels(offline):
    labels = {i: f"thing {i}" for i in range(1000)}
    config = transformers.Swinv2Config(image_size=256, window_size=8, id2label=labels, label2id={})
    ref = randomize(transformers.Swinv2ForImageClassification(config)).eval()
    ref.save_pretrained(snapshot(offline, "microsoft/swinv2-tiny-patch4-window8-256"))
    mine = swinv2.create_model("swinv2_tiny_window8_256", pretrained=True, source="hf", cache_dir=str(offline))
    check_logits("transformers repository", ref, mine, torch.randn(1, 3, 256, 256))
    assert mine.classes[:2] == ["thing 0", "thing 1"] and mine.pretrained_tag["source"] == "hf"


def test_torchvision_and_official_files_load_from_torch_hubs_checkpoint_folder(offline, tmp_path):
    import torchvision

    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    tv = randomize(torchvision.models.swin_v2_t()).eval()
    torch.save(tv.state_dict(), checkpoints / "swin_v2_t-b137f0e2.pth")  # torchvision's file name
    mine = swinv2.create_model("swinv2_tiny_window8_256.tv_in1k", pretrained=True)
    assert not mine.cfg.clip_windows and mine.preprocessing.crop_pct == pytest.approx(256 / 260)
    check_logits("torchvision", tv, mine, torch.randn(1, 3, 256, 256))

    ref = randomize(timm.create_model("swinv2_tiny_window16_256")).eval()
    official = to_official(swinv2.convert_state_dict(ref.state_dict()))
    torch.save({"model": official}, checkpoints / "swinv2_tiny_patch4_window16_256.pth")  # the release's layout
    mine = swinv2.create_model("swinv2_tiny_window16_256", pretrained=True, source="official")
    check_logits("official release file", ref, mine, torch.randn(1, 3, 256, 256))


def test_a_revision_selects_its_snapshot(offline):
    from timm.models._hub import save_for_hf

    repo = "timm/swinv2_tiny_window8_256.ms_in1k"
    first = randomize(timm.create_model("swinv2_tiny_window8_256"), seed=1).eval()
    second = randomize(timm.create_model("swinv2_tiny_window8_256"), seed=2).eval()
    save_for_hf(first, snapshot(offline, repo), safe_serialization=True)
    save_for_hf(second, snapshot(offline, repo, "v2"), safe_serialization=True)
    x = torch.randn(1, 3, 256, 256)
    mine = swinv2.create_model("swinv2_tiny_window8_256", pretrained=True, cache_dir=str(offline), revision="v2")
    check_logits("revision v2", second, mine, x)


def test_uncached_weights_offline_and_unknown_tags_are_one_clear_line(offline):
    with pytest.raises(WeightsNotFound) as caught:
        swinv2.create_model("swinv2_small_window8_256.ms_in1k", pretrained=True, cache_dir=str(offline))
    message = str(caught.value)
    assert "\n" not in message and "timm/swinv2_small_window8_256.ms_in1k" in message
    assert str(offline) in message and "HF_HUB_OFFLINE=1" in message and "hf download" in message
    with pytest.raises(WeightsNotFound, match=r"swin_v2_s-637d8ceb\.pth is not in torch\.hub's checkpoint folder"):
        swinv2.create_model("swinv2_small_window8_256.tv_in1k", pretrained=True)
    with pytest.raises(ValueError, match="its tags: ms_in1k, tv_in1k"):
        swinv2.create_model("swinv2_tiny_window8_256.ms_in22k", pretrained=True)
    with pytest.raises(ValueError, match="published by torchvision, not 'timm'"):
        swinv2.create_model("swinv2_tiny_window8_256.tv_in1k", pretrained=True, source="timm")
    assert find_tag("swinv2_large_window12_192", None).num_classes == 21841
    assert swinv2.create_model("swinv2_base_window12_192.ms_in22k").cfg.num_classes == 21841  # no weights asked


def test_the_catalogue_and_predict_by_name(offline, tmp_path):
    import json
    import os
    import subprocess
    import sys

    from PIL import Image
    from timm.models._hub import save_for_hf

    def swinv2_cli(*args: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "HF_HUB_CACHE": str(offline)}  # the default cache of a fresh process
        return subprocess.run([sys.executable, "-m", "swinv2", *args], capture_output=True, text=True, env=env)

    out = swinv2_cli("models", "--pretrained")
    assert out.returncode == 0, out.stderr
    row = next(line for line in out.stdout.splitlines() if line.startswith("swinv2_base_window12to24_192to384."))
    assert "384" in row and "12,12,12,6" in row and "87.1" in row and "timm, hf, official" in row
    rows = [json.loads(line) for line in swinv2_cli("models", "--pretrained", "--json", "*tv_in1k").stdout.splitlines()]
    assert [r["name"] for r in rows] == [f"swinv2_{s}_window8_256.tv_in1k" for s in ("tiny", "small", "base")]

    ref = randomize(timm.create_model("swinv2_tiny_window8_256")).eval()
    save_for_hf(ref, snapshot(offline, "timm/swinv2_tiny_window8_256.ms_in1k"), safe_serialization=True)
    picture = tmp_path / "p.png"
    Image.new("RGB", (300, 280), (200, 30, 90)).save(picture)
    out = swinv2_cli(
        "predict", "--model", "swinv2_tiny_window8_256.ms_in1k", "--pretrained", str(picture), "--topk", "3"
    )
    assert out.returncode == 0, out.stderr
    names = [part.rsplit(" ", 1)[0] for part in out.stdout.split(": ", 1)[1].strip().split(", ")]
    imagenet = swinv2.pretrained.released.imagenet_class_names(1000)
    assert len(names) == 3 and all(name in imagenet for name in names), names
    missing = swinv2_cli("predict", "--model", "swinv2_small_window8_256.ms_in1k", "--pretrained", str(picture))
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "hf download" in missing.stderr

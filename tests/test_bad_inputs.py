"""Bad input gets a clear error and loses nothing: untrusted checkpoint files, unreadable or odd images
and empty datasets, wrong model inputs. (The faults of running jobs are in test_reliability.py.)"""

from __future__ import annotations

import pytest
import torch

from faults import CreatesFile, RunsShell, broken_image_folder, malicious_checkpoint, recipe
from swinv2 import create_model
from swinv2.cli import main
from swinv2.data.datasets import ReadableCollate
from swinv2.data.decode import read_image
from swinv2.train import fit
from swinv2.train.checkpoints import sha256_file
from swinv2.train.distributed import Distributed
from swinv2.train.state import read_metrics
from swinv2.weights.checkpoint import check_compatible, load_state_dict_into, read_checkpoint


# --------------------------------------------------------------------------------- untrusted files
@pytest.mark.parametrize("payload", [CreatesFile, RunsShell])
def test_malicious_pickles_are_refused_and_their_payload_never_runs(tmp_path, payload, capsys):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    malicious_checkpoint(evil, payload(str(marker)))
    torch.load(evil, weights_only=False)  # a trusting loader runs the payload: the fault is real
    assert marker.exists()
    marker.unlink()

    with pytest.raises(ValueError, match="weights-only"):
        read_checkpoint(evil)
    with pytest.raises(ValueError, match="weights-only"):
        create_model("swinv2_pico_window7_28", pretrained=evil)
    assert main(["convert", str(evil), str(tmp_path / "out.safetensors")]) == 2
    assert main(["predict", str(evil), str(evil)]) == 2
    # planted in a run folder as its newest checkpoint, digest and all
    out = tmp_path / "run"
    fit(recipe(out, train_limit=64, val_limit=32, epochs=2), stop_after=1, progress=False)
    planted = out / "checkpoint-0005.pt"
    malicious_checkpoint(planted, payload(str(marker)))
    (out / "checkpoint-0005.pt.sha256").write_text(f"{sha256_file(planted)}  checkpoint-0005.pt\n")
    assert main(["train", "--resume", str(out), "--no-progress"]) == 2
    assert "refused, not a weights-only training checkpoint" in capsys.readouterr().err
    assert not marker.exists()


def test_wrong_shapes_and_dtypes_are_refused_before_anything_is_copied():
    model = create_model("swinv2_pico_window7_28")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    bad = dict(create_model("swinv2_pico_window7_28").state_dict())
    bad["norm.weight"] = bad["norm.weight"].to(torch.int64)
    bad["stages.0.blocks.0.mlp.fc1.weight"] = torch.zeros(3, 3)
    with pytest.raises(ValueError, match=r"norm.weight dtype torch.int64.*|mlp.fc1.weight \(3, 3\)"):
        load_state_dict_into(model, bad, strict=True)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    other = create_model("swinv2_nano_window7_28").state_dict()
    with pytest.raises(ValueError, match=r"does not fit this model: .*patch_embed"):
        check_compatible(model.state_dict(), other, "the checkpoint's model")


def test_broken_safetensors_is_a_clear_error(tmp_path):
    path = tmp_path / "w.safetensors"
    from swinv2.weights.checkpoint import save_weights

    save_weights(create_model("swinv2_pico_window7_28"), path)
    data = bytearray(path.read_bytes())
    data[:8] = (10**9).to_bytes(8, "little")  # a header length far past the end of the file
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="not a valid safetensors file"):
        read_checkpoint(path)


# -------------------------------------------------------------------------------------------- data
@pytest.mark.parametrize("workers", [0, 2])
def test_unreadable_files_are_skipped_counted_and_reported(tmp_path, workers, capsys):
    planted = broken_image_folder(tmp_path / "data")
    out = tmp_path / "run"
    data = {"data": str(tmp_path / "data"), "img_size": 28, "train_limit": None, "val_limit": None}
    result = fit(recipe(out, **data, epochs=2, batch_size=8, workers=workers), progress=False)
    rows = read_metrics(out)
    assert [row["unreadable_files"] for row in rows] == [sum(planted.values())] * 2
    printed = capsys.readouterr().out
    assert f"skipped {sum(planted.values())} unreadable file(s) this epoch" in printed
    for name in ("truncated.jpg", "not_an_image.png", "empty.jpg", "garbage.jpeg", "cut.png"):
        assert name in printed
    assert result["train_images"] == 24 + 4 and rows[-1]["images"] == 24  # every readable image trained


def test_grey_rgba_palette_and_16_bit_images_are_converted(tmp_path):
    broken_image_folder(tmp_path)
    for i, mode in enumerate(["L", "RGB", "RGBA", "I;16", "P"]):
        rgb = read_image(tmp_path / "val" / "b" / f"{i}.png")
        grey = read_image(tmp_path / "val" / "b" / f"{i}.png", channels=1)
        assert rgb.shape == (3, 32, 32) and grey.shape == (1, 32, 32) and rgb.dtype == torch.uint8, mode
        assert 120 < rgb.float().mean() < 255, mode  # class b is bright in every mode, 16-bit included


def test_a_batch_of_nothing_but_unreadable_files_weighs_nothing():
    dataset = [None, None, (torch.ones(1, 4, 4), 3)]
    images, labels = ReadableCollate(dataset)([None, None])
    assert images.shape == (1, 1, 4, 4) and labels.tolist() == [-1]
    share = Distributed("single", torch.device("cpu")).share(0, labels, 10, 2)
    assert share.real == 0 and share.weight == 0.0


def test_empty_class_or_dataset_is_refused_before_a_run_folder_exists(tmp_path, capsys):
    data = tmp_path / "data"
    broken_image_folder(data)
    (data / "train" / "c").mkdir()
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--output", str(out), "--no-progress"]) == 2
    assert "class folder(s) with no files: c" in capsys.readouterr().err and not out.exists()
    text_only = tmp_path / "text"
    for split in ("train", "val"):
        (text_only / split / "a").mkdir(parents=True)
        (text_only / split / "a" / "notes.txt").write_text("no images here")
    assert main(["train", "--data", str(text_only), "--output", str(out), "--no-progress"]) == 2
    assert "Found no valid file" in capsys.readouterr().err and not out.exists()


# ------------------------------------------------------------------------------- bad model inputs
def _models():
    from swinv2.dense import create_backbone
    from swinv2.models.simmim import SimMIM
    from swinv2.video import create_video_model

    image = create_model("swinv2_pico_window7_28")
    video = create_video_model("swinv2_video_pico_window4x8_64")
    simmim = SimMIM(create_model("swinv2_pico_window7_28"))
    backbone = create_backbone("swinv2_pico_window7_28")
    mask = torch.zeros(2, 7, 7, dtype=torch.bool)
    return [
        ("image", image, torch.zeros(2, 3, 28, 28), r"\(B, 3, H, W\)"),
        ("video", video, torch.zeros(2, 1, 8, 64, 64), r"\(B, 1, T, H, W\)"),
        ("simmim", lambda x: simmim(x, mask), torch.zeros(2, 3, 28, 28), r"\(B, 3, H, W\)"),
        ("backbone", backbone, torch.zeros(2, 3, 28, 28), r"\(B, 3, H, W\)"),
    ]


def test_wrong_rank_channels_or_dtype_raise_value_errors_naming_the_expected_shape():
    for name, model, good, expected in _models():
        model(good)  # the right input runs
        wrong_rank, wrong_channels = good[0], torch.cat([good, good], dim=1)
        for bad in (wrong_rank, wrong_channels):
            with pytest.raises(ValueError, match=expected):
                model(bad)
        with pytest.raises(ValueError, match="floating-point"):
            model(good.to(torch.uint8))
        print(f"{name}: wrong rank, channels and dtype refused")

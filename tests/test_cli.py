"""The ``swinv2`` console script, run as a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from helpers import needs_fmnist, randomize
from swinv2 import create_model


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "swinv2", *args], capture_output=True, text=True, timeout=120)


def test_models_lists_params_gflops_resolution_window():
    out = run("models", "swinv2_tiny*")
    assert out.returncode == 0, out.stderr
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("swinv2_tiny_window8_256"))
    assert "28.35M" in line and "5.940" in line and "256x256" in line
    rows = [json.loads(ln) for ln in run("models", "--json", "swinv2_large*").stdout.splitlines()]
    assert {r["name"] for r in rows} >= {"swinv2_large_window12to24_192to384"}


def test_convert_timm_file_and_check_against_model(tmp_path):
    timm = pytest.importorskip("timm")
    ref = randomize(timm.create_model("swinv2_tiny_window8_256", embed_dim=16, num_heads=(1, 1, 1, 1)))
    src = tmp_path / "timm.pth"
    torch.save(ref.state_dict(), src)
    dst = tmp_path / "out.safetensors"
    out = run("convert", str(src), str(dst))
    assert out.returncode == 0, out.stderr
    assert "timm layout" in out.stdout
    model = create_model("swinv2_tiny_window8_256", embed_dim=16, num_heads=(1, 1, 1, 1), pretrained=dst)
    assert model.load_report.clean
    # --model checks the result; a mismatch refuses to write
    bad = run("convert", str(src), str(tmp_path / "bad.safetensors"), "--model", "swinv2_tiny_window8_256")
    assert bad.returncode == 1 and "mismatched" in bad.stdout and not (tmp_path / "bad.safetensors").exists()


def test_convert_refuses_adapted_heads_and_channels_unless_told(tmp_path, capsys):
    """A re-created head or summed input channels would write new weights as if converted: refused, and
    --num-classes / --in-chans describe the checkpoint so that it converts unchanged."""
    from swinv2.cli import main
    from swinv2.weights.checkpoint import write_safetensors

    src = tmp_path / "grey5.safetensors"
    model = randomize(create_model("swinv2_test_window4_32", num_classes=5, in_chans=1))
    write_safetensors(model.state_dict(), src, {})
    cases = [((), True), (("--num-classes", "5"), True), (("--num-classes", "5", "--in-chans", "1"), False)]
    for extra, refused in cases:
        dst = tmp_path / f"out{len(extra)}.safetensors"
        code = main(["convert", str(src), str(dst), "--model", "swinv2_test_window4_32", *extra])
        out = capsys.readouterr().out
        if refused:
            assert code == 1 and "adapted" in out and not dst.exists(), out
            assert "the checkpoint's 1 -> 3 input channels" in out
        else:
            assert code == 0, out
            again = create_model("swinv2_test_window4_32", num_classes=5, in_chans=1, pretrained=dst)
            assert again.load_report.clean and not again.load_report.adapted
            x = torch.randn(2, 1, 32, 32)
            with torch.no_grad():
                assert torch.equal(again.eval()(x), model.eval()(x))


def test_export_refuses_a_checkpoint_it_would_adapt(tmp_path, capsys):
    """--model with a --checkpoint of another class count would export a random head: refused by name."""
    from swinv2.cli import main
    from swinv2.weights.checkpoint import write_safetensors

    src = tmp_path / "five.safetensors"
    write_safetensors(randomize(create_model("swinv2_test_window4_32", num_classes=5)).state_dict(), src, {})
    out = tmp_path / "m.pt"
    common = ["export", "--model", "swinv2_test_window4_32", "--checkpoint", str(src), "--format", "torchscript"]
    assert main([*common, "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--num-classes" in err and "the checkpoint has 5" in err and not out.exists()
    assert main([*common, "--output", str(out), "--num-classes", "5"]) == 0 and out.is_file()


def test_convert_bad_arguments():
    out = run("convert", "missing.pth", "out.pt")
    assert out.returncode == 2 and "must end in .safetensors" in out.stderr
    out = run("convert", "missing.pth", "out.safetensors")
    assert out.returncode == 2 and "checkpoint not found" in out.stderr


@needs_fmnist
def test_train_eval_predict_end_to_end(tmp_path):
    from swinv2.data import load_fashion_mnist

    run_dir = tmp_path / "run"
    out = run(
        "train",
        "--model",
        "swinv2_test_window4_32",
        "--train-limit",
        "256",
        "--val-limit",
        "128",
        "--epochs",
        "1",
        "--batch-size",
        "64",
        "--output",
        str(run_dir),
        "--no-progress",
    )
    assert out.returncode == 0, out.stderr
    assert "epoch 1/1" in out.stdout and "done: top1" in out.stdout
    again = run("train", "--output", str(run_dir))
    assert again.returncode == 2 and "--resume" in again.stderr
    out = run("eval", str(run_dir), "--limit", "128", "--img-size", "48", "--window-size", "6")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["images"] == 128 and 0 <= result["top1"] <= 100 and result["img_size"] == 48
    low = run("eval", str(run_dir), "--limit", "128", "--dtype", "bfloat16")
    assert low.returncode == 0, low.stderr
    low = json.loads(low.stdout.strip().splitlines()[-1])
    assert low["dtype"] == "bfloat16" and 0 <= low["top1"] <= 100

    from PIL import Image

    images, _ = load_fashion_mnist("test")
    path = tmp_path / "item.png"
    Image.fromarray(images[0].numpy()).save(path)
    out = run("predict", str(run_dir), str(path), "--topk", "3")
    assert out.returncode == 0, out.stderr
    names = [part.rsplit(" ", 1)[0] for part in out.stdout.split(": ", 1)[1].strip().split(", ")]
    assert len(names) == 3 and all(
        n in {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"}
        for n in names
    )
    bad = run("predict", str(run_dir), str(tmp_path / "missing.png"))
    assert bad.returncode == 2 and "image not found" in bad.stderr

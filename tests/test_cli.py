"""The ``swinv2`` console script, run as a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from helpers import randomize
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


def test_convert_bad_arguments():
    out = run("convert", "missing.pth", "out.pt")
    assert out.returncode == 2 and "must end in .safetensors" in out.stderr
    out = run("convert", "missing.pth", "out.safetensors")
    assert out.returncode == 2 and "checkpoint not found" in out.stderr

"""The side-by-side benchmark runs every contender, checks their outputs and reports sane figures."""

from __future__ import annotations

import json
import os

import pytest
import torch

from helpers import needs_fmnist, randomize
from swinv2 import create_model
from swinv2.layers.linear import use_onednn
from swinv2.tools.bench import INPUT_ROUNDING, _runner, benchmark, build_contenders, format_table, peak_memory
from test_cli import run


def test_peak_memory_sees_a_temporary_allocation():
    def allocate():
        a = torch.ones(1 << 20)  # 4 MiB, freed on return
        (a * 2).sum()

    peak = peak_memory(allocate, torch.device("cpu"))
    assert 8 << 20 <= peak < 64 << 20, peak  # a and a * 2 are alive together


def test_peak_memory_replays_allocations_inside_composite_ops():
    a, b = torch.randn(8, 1, 256, 256), torch.randn(1, 8, 256, 256)  # 2 MiB each
    peak = peak_memory(lambda: torch.matmul(a, b), torch.device("cpu"))
    assert peak >= 32 << 20, peak  # a broadcast operand copied (16 MiB) while the 16 MiB result is live


def test_training_step_peak_counts_its_own_gradients_every_call():
    ours = build_contenders("swinv2_tiny_window8_256", 64, peers=())[0]
    step = _runner(ours, "train_fp32", torch.randn(1, 3, 64, 64), torch.tensor([3]))
    step()  # AdamW's state exists from here on, as in a running job
    first, second = (peak_memory(step, torch.device("cpu")) for _ in range(2))
    grads = sum(p.numel() * 4 for p in ours.model.parameters())
    print(f"training step peak {first / 2**20:.1f} / {second / 2**20:.1f} MiB, gradients {grads / 2**20:.1f} MiB")
    assert first == second and first > grads  # no stale frees, no previous step's memory


def test_benchmark_against_all_peers_small():
    pytest.importorskip("timm")
    pytest.importorskip("transformers")
    result = benchmark(img_size=64, batch=1, rounds=1, iters=1, modes=("infer_fp32", "train_fp32"))
    print(format_table(result))
    rows = {(r["contender"], r["mode"]): r for r in result["rows"]}
    assert set(rows) == {(c, m) for c in ("swinv2", "timm", "hf", "torchvision") for m in ("infer_fp32", "train_fp32")}
    assert set(result["matmul_peak_gflops"]) == {"float32"}  # bf16 is measured only where asked for
    assert all(r["img_per_s"] > 0 and r["peak_mb"] > 0 and 0 < r["mfu"] < 1 for r in rows.values())
    assert all(r["img_per_s"] < r["roof_img_per_s"] for r in rows.values())  # no faster than the matmul peak
    assert rows[("timm", "infer_fp32")]["x_timm"] == 1.0
    diffs = result["max_abs_diff_vs_swinv2"]
    assert set(diffs) == {"timm", "hf", "torchvision"} and max(diffs.values()) < 1e-4, diffs


def test_bench_cli_ends_with_one_json_line(capsys):
    modes = "infer_fp32,infer_bf16"
    sizes = ("--img-size", "64", "--batch-size", "1", "--rounds", "1", "--agreement-inputs", "16")
    out = run("bench", "--peers", "", "--modes", modes, *sizes)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.splitlines()[-1])
    assert result["rows"][0]["contender"] == "swinv2" and result["rows"][0]["img_per_s"] > 0
    assert set(result["matmul_peak_gflops"]) == {"float32", "bfloat16"}
    agreement = result["bf16_top1_agreement"]
    assert set(agreement) == {"swinv2", INPUT_ROUNDING} and result["agreement_inputs"] == 16, agreement
    assert all(0.5 <= v <= 1 and (16 * v).is_integer() for v in agreement.values()), agreement
    from swinv2.cli import main  # refusals in this process: each would cost a process start-up

    assert main(["bench", "--modes", "infer_fp64"]) == 2
    assert "infer_fp64" in capsys.readouterr().err
    for flag in ("--rounds", "--agreement-inputs"):
        with pytest.raises(SystemExit) as exit_:
            main(["bench", flag, "0"])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and flag in err and "expected a whole number >= 1, got 0" in err


@needs_fmnist
def test_bf16_agreement_script_measures_the_saved_model(tmp_path):
    import copy
    import subprocess
    import sys
    from pathlib import Path

    model = randomize(create_model("swinv2_pico_window7_28", num_classes=10, in_chans=1)).eval()
    model.save_pretrained(tmp_path / "run")
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bf16_agreement.py"
    # sized for CPUs that emulate bf16: 1,000 validation images, 64 random inputs
    args = [str(tmp_path / "run"), "--random-inputs", "64", "--seed", "3", "--batch-size", "500", "--val-limit", "1000"]
    # one library in both processes: each would otherwise measure its own per-shape choice (its thread count
    # and batch differ from this one's), and bf16 sums round differently in the two
    env = {**os.environ, "SWINV2_ONEDNN": "on"}
    out = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.splitlines()[-1])
    assert result["validation_images"]["bf16"]["inputs"] == 1000
    noise = torch.randn(64, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode(), use_onednn(True):
        expected = (copy.deepcopy(model).bfloat16()(noise.bfloat16()).argmax(1) == model(noise).argmax(1)).float()
    measured = result["random_inputs"]["bf16"]
    assert measured["inputs"] == 64 and measured["agreement"] == pytest.approx(expected.mean().item())
    for flag in ("--random-inputs", "--val-limit"):
        bad = subprocess.run([sys.executable, str(script), args[0], flag, "0"], capture_output=True, text=True)
        assert bad.returncode == 2 and flag in bad.stderr

"""The measured choice between oneDNN and PyTorch's products: the faster library wins a shape, the choice
is kept in a file that later and concurrent processes follow, and the file governs the kernels run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import torch

from helpers import blocks, randomize, tiny
from swinv2.layers import routing
from swinv2.layers.linear import _kernel_available, use_onednn
from swinv2.layers.routing import MARGIN, ONEDNN, PYTORCH, KernelChoices, measure, shape_key
from test_onednn import onednn_calls

needs_onednn = pytest.mark.skipif(not _kernel_available(torch.float32), reason="PyTorch built without oneDNN")


def sleeper(seconds: float, value: float, calls: list | None = None):
    def run():
        if calls is not None:
            calls.append(value)
        time.sleep(seconds)
        return torch.tensor(value)

    return run


def test_the_faster_library_wins_and_hands_back_its_own_output():
    name, out = measure({ONEDNN: sleeper(0.002, 1.0), PYTORCH: sleeper(0.02, 2.0)})
    assert name == ONEDNN and out.item() == 1.0
    name, out = measure({ONEDNN: sleeper(0.02, 1.0), PYTORCH: sleeper(0.002, 2.0)})
    assert name == PYTORCH and out.item() == 2.0


def test_a_tie_and_a_failed_kernel_go_to_pytorch():
    assert MARGIN > 0
    assert measure({ONEDNN: sleeper(0.01, 1.0), PYTORCH: sleeper(0.01, 2.0)})[0] == PYTORCH  # within the margin
    name, out = measure({ONEDNN: lambda: None, PYTORCH: sleeper(0.01, 2.0)})  # oneDNN failed on this CPU
    assert name == PYTORCH and out.item() == 2.0


def test_a_choice_is_measured_once_and_kept_in_the_file(tmp_path):
    path = tmp_path / "choices.json"
    key = shape_key("forward", torch.float32, 1000, 96, 288)
    assert key == "forward|float32|1024|96|288"  # tokens rounded up to a power of two
    first = KernelChoices(path)
    assert first.pick(key, {ONEDNN: sleeper(0.002, 1.0), PYTORCH: sleeper(0.02, 2.0)})[0] == ONEDNN
    assert first.measured == 1 and json.loads(path.read_text())["choices"] == {key: ONEDNN}
    assert "cpu" in json.loads(path.read_text())["machine"]
    calls: list = []
    later = KernelChoices(path)  # another process: the file decides, nothing runs to measure
    name, out = later.pick(key, {ONEDNN: sleeper(0.02, 1.0, calls), PYTORCH: sleeper(0.002, 2.0, calls)})
    assert (name, out, later.measured, calls) == (ONEDNN, None, 0, [])


PICK = """
import json, sys, time
from pathlib import Path
import torch
from swinv2.layers.routing import KernelChoices, ONEDNN, PYTORCH
path, go, fast = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
def run(seconds, value):
    return lambda: time.sleep(seconds) or torch.tensor(value)
slow = {ONEDNN: 0.05, PYTORCH: 0.05, fast: 0.002}
candidates = {ONEDNN: run(slow[ONEDNN], 1.0), PYTORCH: run(slow[PYTORCH], 2.0)}
while not go.exists():
    time.sleep(0.01)
choices = KernelChoices(path)
name, _ = choices.pick("forward|float32|1024|96|288", candidates)
print(json.dumps({"choice": name, "measured": choices.measured}))
"""


def test_concurrent_processes_take_one_choice(tmp_path):
    """Two processes meeting a new shape at once, each measuring a different winner: the file lock makes
    the second wait and take the first one's choice (ranks of a job must run the same kernels)."""
    path, go = tmp_path / "choices.json", tmp_path / "go"
    procs = [
        subprocess.Popen([sys.executable, "-c", PICK, str(path), str(go), fast], stdout=subprocess.PIPE, text=True)
        for fast in (ONEDNN, PYTORCH)
    ]
    time.sleep(0.5)
    go.touch()
    results = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert results[0]["choice"] == results[1]["choice"], results
    assert sorted(r["measured"] for r in results) == [0, 1], results


def test_the_file_of_choices_is_per_machine_setting_and_can_be_switched_off(monkeypatch, tmp_path):
    monkeypatch.setenv("SWINV2_CACHE", str(tmp_path))
    plain = routing.choices_path()
    assert plain.parent == tmp_path / "cpu_kernels"
    held_back = "SSE41" if os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() == "AVX2" else "AVX2"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", held_back)  # a held-back ISA is another machine
    assert routing.choices_path() != plain
    monkeypatch.setenv("SWINV2_KERNEL_CHOICES", "off")
    assert routing.choices_path() is None


@needs_onednn
def test_the_recorded_choices_govern_the_kernels_a_model_runs(monkeypatch, tmp_path):
    monkeypatch.setenv("SWINV2_CACHE", str(tmp_path))
    model = randomize(tiny("swinv2_tiny_window8_256")).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad(), use_onednn("auto"):
        reference = model(x)  # measures every shape once and records it
        path = routing.choices_path()
        recorded = json.loads(path.read_text())["choices"]
        assert recorded and {k.split("|")[0] for k in recorded} == {"infer", "infer_gelu"}
        for forced, expected in ((PYTORCH, 0), (ONEDNN, 4 * blocks(model) + len(model.stages) - 1)):
            path.write_text(json.dumps({"choices": dict.fromkeys(recorded, forced)}))
            monkeypatch.setattr(routing, "_choices", {})  # a new process: it reads the file
            assert onednn_calls(lambda: model(x)) == expected, forced
            torch.testing.assert_close(model(x), reference, rtol=1e-5, atol=1e-5)


def test_the_environment_fixes_the_library_for_a_process():
    probe = "import warnings, swinv2.layers.linear as m; print(repr(m._mode))"
    for value, expected in (("on", "True"), ("off", "False"), ("auto", "'auto'"), ("sometimes", "'auto'")):
        env = {**os.environ, "SWINV2_ONEDNN": value}
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == expected, (value, out.stdout)
        assert ("is not one of" in out.stderr) == (value == "sometimes")

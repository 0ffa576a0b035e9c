"""``--amp auto`` follows the hardware: bf16 where the device computes it natively and faster than fp32,
fp32 elsewhere; an explicit bf16 on a CPU that emulates it runs, with one warning naming the slowdown."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from swinv2.train.precision import (
    AMP_MODES,
    BF16_MIN_SPEEDUP,
    autocast,
    bf16_support,
    cpu_bf16_speedup,
    cpu_bf16_support,
    resolve_amp,
)

CPU = torch.device("cpu")
# How a newer CPU imitates the AVX2 class (no native bf16): oneDNN is kept below AVX-512.
AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
PROBE = """
import json, logging, sys
import torch
from swinv2.train.precision import resolve_amp
records = []
logging.getLogger("swinv2").addHandler(type("H", (logging.Handler,), {"emit": lambda s, r: records.append(r)})())
choices = [resolve_amp(mode, torch.device("cpu")) for mode in sys.argv[1:]]
print(json.dumps({"choices": [[c.amp, c.reason] for c in choices], "warnings": [r.getMessage() for r in records]}))
"""


def _probe(*modes: str, env: dict | None = None) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, *modes], env={**os.environ, **(env or {})}, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _cpu_flags() -> bool:
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def test_auto_is_fp32_where_bf16_is_emulated_and_an_explicit_bf16_warns_once_with_the_slowdown():
    result = _probe("auto", "bf16", "bf16", "none", env=AVX2_ENV)
    (auto, auto_why), (bf16, bf16_why), second, none = result["choices"]
    assert auto == "none" and auto_why.startswith("auto: fp32, since ") and "emulated" in auto_why, auto_why
    assert bf16 == "bf16" and second[0] == "bf16" and "emulated" in bf16_why, bf16_why
    assert none == ["none", "--amp none"]
    assert len(result["warnings"]) == 1, result["warnings"]  # two bf16 requests, one warning
    warning = result["warnings"][0]
    print(warning)
    assert "slower than fp32 here" in warning and "--amp auto or none" in warning
    slowdown = float(warning.split("bf16 products run ")[1].split("x slower")[0])
    assert slowdown > 0


@pytest.mark.skipif(
    not _cpu_flags() or "ONEDNN_MAX_CPU_ISA" in os.environ, reason="no AVX512_BF16 or AMX, or oneDNN kept off them"
)
def test_where_the_cpu_computes_bf16_natively_auto_follows_the_measured_speed():
    result = _probe("auto", "bf16")
    (auto, why), (bf16, _) = result["choices"]
    speedup = cpu_bf16_speedup()
    print(f"bf16 products at {speedup:.2f}x fp32's speed here; auto chose {auto}: {why}")
    assert bf16 == "bf16" and result["warnings"] == []  # native: an explicit bf16 runs without a warning
    if speedup > 1.5 * BF16_MIN_SPEEDUP:  # far from the threshold, the probe in the subprocess agrees
        assert auto == "bf16" and why.startswith("auto: this CPU computes bf16 natively"), why
    elif speedup < BF16_MIN_SPEEDUP / 1.5:
        assert auto == "none" and "x fp32's speed (a 512 x 512 product, measured now" in why, why


@pytest.mark.parametrize(("speedup", "expected"), [(0.6, "none"), (1.19, "none"), (1.2, "bf16"), (3.0, "bf16")])
def test_a_native_bf16_that_is_slower_than_fp32_is_not_chosen(monkeypatch, speedup, expected):
    import swinv2.train.precision as precision

    monkeypatch.setattr(precision, "cpu_bf16_support", lambda: (True, "this CPU computes bf16 natively (X)"))
    monkeypatch.setattr(precision, "cpu_bf16_speedup", lambda: speedup)
    chosen = resolve_amp("auto", CPU)
    assert chosen.amp == expected
    if expected == "none":
        assert f"but at {speedup:.2f}x fp32's speed" in chosen.reason and "bf16 needs 1.2x" in chosen.reason
    assert resolve_amp("bf16", CPU).amp == "bf16"  # asked for, it is what runs


def test_native_support_names_its_reason_and_agrees_with_the_cpu_flags():
    native, why = cpu_bf16_support()
    assert isinstance(why, str) and why
    if not _cpu_flags():
        assert not native and "neither AVX512_BF16 nor AMX" in why
    assert bf16_support(CPU) == (native, why)


def test_fp16_off_cuda_and_unknown_modes_are_refused_by_name():
    with pytest.raises(ValueError, match="--amp fp16 needs a CUDA device"):
        resolve_amp("fp16", CPU)
    with pytest.raises(ValueError, match="amp must be one of"):
        resolve_amp("fp8", CPU)
    assert set(AMP_MODES) == {"auto", "none", "bf16", "fp16"}


def test_autocast_of_auto_follows_this_machine():
    x = torch.randn(4, 8)
    with autocast(CPU, "auto"):
        y = torch.nn.functional.linear(x, torch.randn(8, 8))
    expected = torch.bfloat16 if resolve_amp("auto", CPU).amp == "bf16" else torch.float32
    assert y.dtype == expected

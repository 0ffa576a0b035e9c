"""Mixed precision that follows the hardware.

``--amp auto`` (every train command's default) trains in bf16 where the device computes bf16 products
natively (a CUDA device with bf16 support; a CPU with AVX512_BF16 or AMX that oneDNN is allowed to use)
and faster than fp32 ones, and in fp32 elsewhere. A CPU can have AVX512_BF16 and still multiply bf16
slower than fp32 (an Intel Xeon whose AMX the hypervisor hides does), so on the CPU a short probe, once
per process, decides. Where PyTorch emulates bf16 products, many times slower than fp32, an explicit
``--amp bf16`` still runs but warns once, with the slowdown measured on the spot.

``ONEDNN_MAX_CPU_ISA`` below AVX512_CORE_BF16 (how a newer CPU imitates an older one) counts as emulation.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass

import torch

log = logging.getLogger("swinv2")

AMP_MODES = ("auto", "none", "bf16", "fp16")
# oneDNN ISA names (ONEDNN_MAX_CPU_ISA) that compute bf16 products in hardware.
BF16_ISAS = ("AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX", "AVX512_CORE_AMX_FP16", "AVX10_1_512_AMX")
_warned: set[str] = set()
BF16_MIN_SPEEDUP = 1.2  # auto takes bf16 on a CPU only where its products run at least this much faster
PROBE_SIZE = 512  # the probe's product: large enough for the kernels' steady speed, a few ms per call


@dataclass(frozen=True)
class Precision:
    """What a run computes in (``none``, ``bf16`` or ``fp16``) and why, in words for its first line."""

    amp: str
    reason: str


def cpu_bf16_support() -> tuple[bool, str]:
    """Whether this CPU computes bf16 products natively, and what decided it."""
    flags = [name for name, has in (("AMX", _cpu_has("amx_tile")), ("AVX512_BF16", _cpu_has("avx512_bf16"))) if has]
    if not flags:
        return False, "this CPU has neither AVX512_BF16 nor AMX (bf16 is emulated)"
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()
    if cap and cap != "ALL" and cap not in BF16_ISAS:
        return False, f"ONEDNN_MAX_CPU_ISA={cap} keeps oneDNN off this CPU's {'/'.join(flags)} (bf16 is emulated)"
    if not torch.backends.mkldnn.is_available() or not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return False, "PyTorch's oneDNN has no bf16 kernels here (bf16 is emulated)"
    return True, f"this CPU computes bf16 natively ({' and '.join(flags)})"


def _cpu_has(feature: str) -> bool:
    probe = getattr(torch.cpu, f"_is_{feature}_supported", None)
    return bool(probe()) if probe is not None else False


def bf16_support(device: torch.device) -> tuple[bool, str]:
    """Whether ``device`` computes bf16 natively, and why (a phrase)."""
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return True, f"{torch.cuda.get_device_name(device)} computes bf16 natively"
        return False, f"{torch.cuda.get_device_name(device)} has no native bf16"
    if device.type == "cpu":
        return cpu_bf16_support()
    return False, f"no bf16 check for {device.type} devices"


def resolve_amp(requested: str, device: torch.device) -> Precision:
    """The precision a run with ``--amp requested`` computes in on ``device``; ``auto`` decided here."""
    if requested not in AMP_MODES:
        raise ValueError(f"amp must be one of {AMP_MODES}, got {requested!r}")
    if requested == "fp16" and device.type != "cuda":
        raise ValueError(f"--amp fp16 needs a CUDA device (this run is on {device}); use --amp bf16, auto or none")
    native, why = bf16_support(device)
    if requested == "auto":
        if not native:
            return Precision("none", f"auto: fp32, since {why}")
        if device.type == "cpu" and (speedup := cpu_bf16_speedup()) < BF16_MIN_SPEEDUP:
            return Precision(
                "none",
                f"auto: fp32, since {why} but at {speedup:.2f}x fp32's speed (a {PROBE_SIZE} x {PROBE_SIZE} "
                f"product, measured now; bf16 needs {BF16_MIN_SPEEDUP}x)",
            )
        return Precision("bf16", f"auto: {why}")
    if requested == "bf16" and not native:
        warn_emulated_bf16(device, why)
        return Precision("bf16", f"--amp bf16, although {why}")
    return Precision(requested, f"--amp {requested}")


def warn_emulated_bf16(device: torch.device, why: str) -> None:
    """One warning per process and device type: bf16 runs here, slowly (measured by a short probe)."""
    if device.type in _warned:
        return
    _warned.add(device.type)
    slowdown = bf16_slowdown(device)
    log.warning(
        "bf16 on %s: %s; bf16 products run %.0fx slower than fp32 here (a 256 x 256 product, measured now). "
        "--amp auto or none trains in fp32.",
        device,
        why,
        slowdown,
    )


def product_seconds(device: torch.device, dtype: torch.dtype, n: int = 256, repeats: int = 3) -> float:
    """Median seconds of one ``n`` x ``n`` matrix product in ``dtype``: a short probe (tens of ms even where
    bf16 is emulated), for warnings and the bf16 roof of the benchmarks."""
    a, b = (t.to(dtype) for t in _probe_operands(n, device))
    times = []
    with torch.no_grad():
        a @ b  # first call: kernel selection, allocation
        for _ in range(repeats):
            _sync(device)
            start = time.perf_counter()
            a @ b
            _sync(device)
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


@functools.cache
def cpu_bf16_speedup(rounds: int = 21) -> float:
    """How many times faster a bf16 product runs than an fp32 one on this CPU (once per process).

    The two products alternate, and each keeps its fastest time: other work on the cores only ever adds
    time, and alternating exposes both to the same load. One thread: the ratio is the core's, and a
    product split over threads would wait for whichever shares its core with other work."""
    a, b = _probe_operands(PROBE_SIZE, torch.device("cpu"))
    pairs = {torch.float32: (a, b), torch.bfloat16: (a.bfloat16(), b.bfloat16())}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        best = _fastest_products(pairs, rounds)
    finally:
        torch.set_num_threads(threads)
    return best[torch.float32] / best[torch.bfloat16]


def _fastest_products(pairs: dict, rounds: int) -> dict:
    best = dict.fromkeys(pairs, math.inf)
    with torch.no_grad():
        for x, y in pairs.values():
            x @ y  # first call: kernel selection, allocation
        for _ in range(rounds):
            for dtype, (x, y) in pairs.items():
                start = time.perf_counter()
                x @ y
                best[dtype] = min(best[dtype], time.perf_counter() - start)
    return best


def _probe_operands(n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Two ``n`` x ``n`` random matrices from a private generator: a probe must not move the run's
    random streams, whenever it first runs."""
    gen = torch.Generator().manual_seed(0)
    return tuple(torch.randn(n, n, generator=gen).to(device) for _ in range(2))  # type: ignore[return-value]


def bf16_slowdown(device: torch.device) -> float:
    """How many times slower a bf16 product runs than an fp32 one on ``device`` (below 1: faster)."""
    return product_seconds(device, torch.bfloat16) / product_seconds(device, torch.float32)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, amp: str):
    """The autocast context of ``amp`` on ``device`` (``auto`` is resolved for it: a run's recipe read back
    by eval on another machine follows that machine)."""
    if amp == "auto":
        amp = resolve_amp(amp, device).amp
    if amp == "none":
        return nullcontext()
    if amp == "fp16" and device.type != "cuda":
        raise ValueError("fp16 mixed precision needs a CUDA device; use --amp bf16 on the CPU")
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)

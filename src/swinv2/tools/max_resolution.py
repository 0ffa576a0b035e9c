"""The largest image side one device trains at, plain and with the memory savers (``swinv2 bench-max-res``).

A trial is one real training step (autocast forward, backward, AdamW) of batch 1 at ``size x size``, in
bf16 where the device computes it natively and fp32 elsewhere (``--amp auto``; the result names it);
it fits when it runs. On a GPU that means the allocator did not run out (``capacity_gib`` caps it below
the card, e.g. 80 GiB on a larger one); on a CPU, where running out kills the process, a trial fits when
its measured peak stays under ``capacity_gib``. One model serves every size (the model accepts any input
size), so weights and AdamW state are allocated once, as in a real job.

The search measures two sizes that fit, fits ``peak = a + b * side**2`` (activations grow with the pixel
count), jumps to the predicted limit and then steps by ``step`` until it holds a bracket: the reported
side fitted, the next one up did not. Both ends of the bracket are measured steps, never predictions.
"""

from __future__ import annotations

import gc
import json
import math
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import WindowAttention
from ..models.swinv2 import SwinV2Block
from ..pretrained.factory import create_model
from ..train.precision import autocast, resolve_amp
from .bench import peak_memory, randomize_parameters
from .plan import SAVER_SETS  # name: (checkpointing, sequential attention, sequential MLP)

# Chunks on a GPU are larger than the CPU's automatic ones, which would launch too many small kernels there.
GPU_CHUNKS = {"sequential_attention": 256, "sequential_mlp": 1 << 18}  # windows, tokens


@dataclass
class Trial:
    side: int
    fits: bool
    peak_gib: float | None  # absolute: weights, gradients and AdamW state included
    seconds: float


def _clear_geometry_caches(model: nn.Module) -> None:
    """Drop cached shift masks and biases: each size has its own, and a finished size's would stay."""
    for m in model.modules():
        if isinstance(m, SwinV2Block):
            m._masks.clear()
        elif isinstance(m, WindowAttention):
            m.clear_cache()


def _release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, side: int, device: torch.device) -> None:
    """One training step on a random ``(1, 3, side, side)`` image, under ``--amp auto``'s autocast."""
    x = torch.randn(1, 3, side, side, device=device)
    y = torch.zeros(1, dtype=torch.long, device=device)
    with autocast(device, "auto"):
        loss = F.cross_entropy(model(x).float(), y)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def try_side(
    model: nn.Module, optimizer: torch.optim.Optimizer, side: int, device: torch.device, capacity: float
) -> Trial:
    """Run one step at ``side``; whether it fitted ``capacity`` bytes, and its absolute peak."""
    _clear_geometry_caches(model)
    _release(device)
    start = time.perf_counter()
    try:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            train_step(model, optimizer, side, device)
            torch.cuda.synchronize(device)
            peak = torch.cuda.max_memory_allocated(device)
        else:
            resident = sum(t.numel() * t.element_size() for t in _resident_tensors(model, optimizer))
            peak = resident + peak_memory(lambda: train_step(model, optimizer, side, device), device)
    except RuntimeError as err:  # torch.OutOfMemoryError, or a library's failed workspace allocation
        if not _out_of_memory(err):
            raise
        optimizer.zero_grad(set_to_none=True)
        return Trial(side, False, None, time.perf_counter() - start)
    finally:
        _clear_geometry_caches(model)
        _release(device)
    return Trial(side, peak <= capacity, peak / 2**30, time.perf_counter() - start)


def _out_of_memory(err: RuntimeError) -> bool:
    text = str(err)
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in text or "ALLOC_FAILED" in text


def _resident_tensors(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    state = [v for s in optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
    return list(model.parameters()) + state


def search(measure: Callable[[int], Trial], capacity: float, step: int, start: int, budget_s: float) -> list[Trial]:
    """Trials until one side fits and ``side + step`` does not (or the time budget runs out).

    ``measure(side)`` runs a trial; sides are multiples of ``step``. Fitting sides' peaks predict the limit.
    """
    deadline = time.perf_counter() + budget_s
    trials: list[Trial] = []

    def run(side: int) -> Trial:
        trials.append(measure(side))
        return trials[-1]

    def bracket() -> tuple[int, int | None]:
        fit = max((t.side for t in trials if t.fits), default=0)
        fail = min((t.side for t in trials if not t.fits), default=None)
        return fit, fail

    side = max(step, start // step * step)
    if not run(side).fits:  # even the start is too large: walk down
        while side > step and not trials[-1].fits and time.perf_counter() < deadline:
            side = max(step, side // 2 // step * step)
            run(side)
    while time.perf_counter() < deadline:
        fit, fail = bracket()
        if fit == 0 or (fail is not None and fail - fit <= step):
            break
        nxt = _predict(trials, capacity, step, fit, fail)
        run(nxt)
    return trials


def _predict(trials: list[Trial], capacity: float, step: int, fit: int, fail: int | None) -> int:
    """Next side to try, strictly between the bracket ends: the predicted limit, else midpoint / doubling."""
    fitted = sorted((t.side, t.peak_gib * 2**30) for t in trials if t.fits and t.peak_gib is not None)
    guess = None
    if len(fitted) >= 2:
        (s1, p1), (s2, p2) = fitted[-2], fitted[-1]
        b = (p2 - p1) / (s2**2 - s1**2)
        if b > 0:
            guess = math.sqrt(max(0.0, capacity - (p1 - b * s1**2)) / b) // step * step
    elif fitted:  # one point: as if all memory grew with the pixel count (a slight overestimate)
        s1, p1 = fitted[0]
        guess = s1 * math.sqrt(capacity / p1) // step * step
    if guess is None:
        guess = 2 * fit if fail is None else (fit + fail) // 2 // step * step
    upper = fail - step if fail is not None else math.inf
    return int(min(max(guess, fit + step), upper))


def largest_resolution(
    model_name: str = "swinv2_base_window16_256",
    window_size: int | None = None,
    savers: tuple[str, ...] = tuple(SAVER_SETS),
    device: str = "cuda",
    capacity_gib: float | None = None,
    step: int = 256,
    start: int = 1024,
    budget_s: float = 120.0,
) -> dict:
    """Per saver set, the measured bracket of the largest trainable side; see the module docstring."""
    unknown = set(savers) - set(SAVER_SETS)
    if unknown:
        raise ValueError(f"unknown saver set(s) {sorted(unknown)}; expected some of {list(SAVER_SETS)}")
    dev = torch.device(device)
    if capacity_gib is None:
        if dev.type != "cuda":
            raise ValueError("capacity_gib is required off a GPU (the memory a trial may use)")
        capacity = float(torch.cuda.get_device_properties(dev).total_memory)
    else:
        capacity = capacity_gib * 2**30
        if dev.type == "cuda":
            total = torch.cuda.get_device_properties(dev).total_memory
            torch.cuda.set_per_process_memory_fraction(min(1.0, capacity / total), dev.index or 0)
    overrides = {} if window_size is None else {"window_size": window_size}
    model = randomize_parameters(create_model(model_name, drop_path_rate=0.0, **overrides)).to(dev).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)
    train_step(model, optimizer, 64, dev)  # AdamW's state exists from here on, as in a running job
    rows = []
    for name in savers:
        _apply_savers(model, SAVER_SETS[name], dev)
        try:
            trials = search(lambda s: try_side(model, optimizer, s, dev, capacity), capacity, step, start, budget_s)
        except RuntimeError as err:  # not running out of memory (that is a trial's result): report, go on
            rows.append({"savers": name, "error": f"{type(err).__name__}: {err}"[:500]})
            print(f"{name}: {rows[-1]['error']}", flush=True)
            continue
        fit = max((t.side for t in trials if t.fits), default=0)
        fail = min((t.side for t in trials if not t.fits), default=None)
        row = {"savers": name, "largest_side": fit, "first_failing_side": fail, "trials": [asdict(t) for t in trials]}
        row["bracketed"] = fail is not None and fit > 0 and fail - fit <= step
        rows.append(row)
        print(_row_line(row), flush=True)
    return {
        "model": model_name,
        "window_size": model.cfg.window_size,
        "params": sum(p.numel() for p in model.parameters()),
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "capacity_gib": capacity / 2**30,
        "amp": resolve_amp("auto", dev).amp,
        "step": step,
        "rows": rows,
    }


def _apply_savers(model: nn.Module, savers: tuple[bool, bool, bool], device: torch.device) -> None:
    checkpointing, attention, mlp = savers
    model.set_grad_checkpointing(checkpointing)
    model.set_sequential_attention(
        GPU_CHUNKS["sequential_attention"] if attention and device.type == "cuda" else attention
    )
    model.set_sequential_mlp(GPU_CHUNKS["sequential_mlp"] if mlp and device.type == "cuda" else mlp)


def _row_line(row: dict) -> str:
    tried = ", ".join(
        f"{t['side']}:{'ok' if t['fits'] else ('over' if t['peak_gib'] else 'OOM')}"
        + (f" {t['peak_gib']:.1f}G" if t["peak_gib"] else "")
        for t in row["trials"]
    )
    if not row["largest_side"]:
        return f"{row['savers']:<36} no side fitted  [{tried}]"
    return f"{row['savers']:<36} largest {row['largest_side']:>6} px (next {row['first_failing_side']})  [{tried}]"


def nothing_fitted(result: dict) -> str | None:
    """Why no saver set found a side that trains within the cap, or None where one did."""
    rows = result["rows"]
    if any(row.get("largest_side") for row in rows):
        return None
    sides = [t["side"] for row in rows for t in row.get("trials", ())]  # a row that failed to run has none
    down_to = f", down to {min(sides)} px" if sides else ""
    return (
        f"no side fitted within the capacity{down_to}: lower --start or --step, raise --capacity-gib, "
        "or give the search more --budget-s"
    )


CLI_FLAGS = {  # largest_resolution's keyword -> `swinv2 bench-max-res` flag
    "model_name": "--model",
    "window_size": "--window-size",
    "device": "--device",
    "capacity_gib": "--capacity-gib",
    "step": "--step",
    "start": "--start",
    "budget_s": "--budget-s",
}


def run_isolated(savers: tuple[str, ...], **kwargs) -> dict:
    """Each saver set in its own process: after running out of memory a CUDA context can stay unusable
    (seen on an H200: the next step failed with 'invalid argument'), which would spoil the next search."""
    result, rows = None, []
    for name in savers:
        argv = [sys.executable, "-m", "swinv2", "bench-max-res", "--savers", name, "--no-isolate"]
        for key, value in kwargs.items():
            if value is not None:
                argv += [CLI_FLAGS[key], str(value)]
        proc = subprocess.run(argv, capture_output=True, text=True)
        lines = proc.stdout.strip().splitlines()
        if proc.returncode != 0 or not lines or not lines[-1].startswith("{"):
            tail = (proc.stderr or proc.stdout).strip()[-500:]
            rows.append({"savers": name, "error": f"exit {proc.returncode}: {tail}"})
            print(f"{name}: {rows[-1]['error']}", flush=True)
            continue
        result = json.loads(lines[-1])
        rows += result["rows"]
        print(_row_line(result["rows"][0]) if "trials" in result["rows"][0] else lines[0], flush=True)
    if result is None:
        raise RuntimeError("no saver set could be measured: " + "; ".join(r["error"] for r in rows))
    return result | {"rows": rows}


def main(isolate: bool | None = None, **kwargs) -> dict:
    savers = kwargs.pop("savers", tuple(SAVER_SETS))
    if isolate is None:
        isolate = kwargs.get("device", "cuda").startswith("cuda") and len(savers) > 1
    result = run_isolated(savers, **kwargs) if isolate else largest_resolution(savers=savers, **kwargs)
    print(json.dumps(result))
    return result

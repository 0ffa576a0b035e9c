"""Training-step memory of the memory savers against timm (``swinv2 bench-memory``).

One training step (forward, backward, AdamW) of the same randomised weights at high resolution, for
this project's model plain, with activation checkpointing, with sequential attention, with both, and
with both plus the sequential MLP; for timm plain and with its own checkpointing. Each row gives the
growth of peak memory over what was live before the step (CUDA's allocator statistics on a GPU, the
profiler's allocation events on a CPU) in a running job (AdamW's state already exists), the step time,
and, for the savers, the worst relative gradient difference against the plain step.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..pretrained.factory import create_model
from .bench import _timm, peak_memory, randomize_parameters

SAVERS: dict[str, dict] = {
    "plain": {"checkpointing": False, "sequential": False},
    "checkpointing": {"checkpointing": True, "sequential": False},
    "sequential": {"checkpointing": False, "sequential": True},
    "checkpointing+sequential": {"checkpointing": True, "sequential": True},
    "checkpointing+sequential+mlp": {"checkpointing": True, "sequential": True, "mlp": True},
}


def _step_fn(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> Callable:
    def step() -> torch.Tensor:
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


def _measure(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> tuple[float, float, dict]:
    """(peak MiB above the live memory before the step, seconds, first-step gradients); weights restored.

    A first, unmeasured step creates AdamW's state, as in a running job; the second step is measured, so
    the growth is activations, gradients and temporaries: what the savers act on.
    """
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    step = _step_fn(model, optimizer, x, y)
    loss = step()
    grads = {n: p.grad.detach().cpu().clone() for n, p in model.named_parameters() if p.grad is not None}
    grads["__loss__"] = loss.cpu()
    optimizer.zero_grad(set_to_none=True)
    start = time.perf_counter()
    peak = peak_memory(step, device)
    seconds = time.perf_counter() - start
    optimizer.zero_grad(set_to_none=True)
    del optimizer
    model.load_state_dict(saved)
    return peak / 2**20, seconds, grads


def worst_relative_diff(ref: dict, got: dict) -> float:
    """max over tensors of ``max|a - b| / max|a|``: how far a saver's gradients are from the plain step's."""
    worst = 0.0
    for name, a in ref.items():
        if name == "__loss__":
            continue
        scale = a.abs().max().clamp_min(1e-30)
        worst = max(worst, ((a - got[name]).abs().max() / scale).item())
    return worst


def memory_benchmark(
    model_name: str = "swinv2_tiny_window8_256",
    img_size: int = 1024,
    batch: int = 1,
    peers: tuple[str, ...] = ("timm",),
    device: str = "cpu",
) -> dict:
    """Rows of peak-memory growth per contender and saver; see the module docstring."""
    unknown = set(peers) - {"timm"}
    if unknown:
        raise ValueError(f"peers: only timm is measured here, got {sorted(unknown)}")
    if "timm" in peers:
        import timm

        if model_name not in timm.list_models("swinv2*"):
            raise ValueError(f"timm has no {model_name}; give a timm-named model or --peers '' for this project alone")
    dev = torch.device(device)
    torch.manual_seed(0)
    ours = randomize_parameters(create_model(model_name, img_size=img_size, drop_path_rate=0.0)).to(dev).train()
    x = torch.randn(batch, 3, img_size, img_size, device=dev)
    y = torch.randint(0, ours.cfg.num_classes, (batch,), device=dev)
    rows, plain_grads = [], None
    for saver, switch in SAVERS.items():
        ours.set_grad_checkpointing(switch["checkpointing"])
        ours.set_sequential_attention(switch["sequential"])
        ours.set_sequential_mlp(switch.get("mlp", False))
        peak, seconds, grads = _measure(ours, x, y, dev)
        row = {"contender": "swinv2", "savers": saver, "peak_mb": peak, "seconds": seconds}
        if plain_grads is None:
            plain_grads = grads
        else:
            row["grad_rel_diff"] = worst_relative_diff(plain_grads, grads)
        row["loss"] = grads["__loss__"].item()
        rows.append(row)
        print(_row_line(row), flush=True)
    if "timm" in peers:
        ours.set_grad_checkpointing(False)
        ours.set_sequential_attention(False)
        ours.set_sequential_mlp(False)
        peer = _timm(ours.eval(), model_name, img_size).model.to(dev).train()
        del ours
        for saver in ("plain", "checkpointing"):
            peer.set_grad_checkpointing(saver == "checkpointing")
            peak, seconds, grads = _measure(peer, x, y, dev)
            row = {"contender": "timm", "savers": saver, "peak_mb": peak, "seconds": seconds}
            row["loss"] = grads["__loss__"].item()
            rows.append(row)
            print(_row_line(row), flush=True)
    _add_ratios(rows)
    return {"model": model_name, "img_size": img_size, "batch": batch, "device": str(dev), "rows": rows}


def _add_ratios(rows: list[dict]) -> None:
    base = {r["savers"]: r["peak_mb"] for r in rows if r["contender"] == "timm"}
    for r in rows:
        if "plain" in base:
            r["vs_timm"] = r["peak_mb"] / base["plain"]
        if "checkpointing" in base:
            r["vs_timm_checkpointing"] = r["peak_mb"] / base["checkpointing"]


def _row_line(r: dict) -> str:
    diff = f"{r['grad_rel_diff']:.1e}" if "grad_rel_diff" in r else "-"
    return f"{r['contender']:<8} {r['savers']:<26} {r['peak_mb']:>9.0f} MiB {r['seconds']:>7.1f} s  grad diff {diff}"


def format_table(result: dict) -> str:
    lines = [
        f"{result['model']} at {result['img_size']} px, batch {result['batch']}, {result['device']}: one training "
        "step (forward, backward, AdamW)",
        "",
        "| contender | savers | peak growth (MiB) | x timm | x timm+ckpt | step (s) | grad rel. diff |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        ratio = f"{r['vs_timm']:.2f}" if "vs_timm" in r else "-"
        ratio_ckpt = f"{r['vs_timm_checkpointing']:.2f}" if "vs_timm_checkpointing" in r else "-"
        diff = f"{r['grad_rel_diff']:.1e}" if "grad_rel_diff" in r else "-"
        lines.append(
            f"| {r['contender']} | {r['savers']} | {r['peak_mb']:.0f} | {ratio} | {ratio_ckpt} | "
            f"{r['seconds']:.1f} | {diff} |"
        )
    return "\n".join(lines)


def main(**kwargs) -> dict:
    result = memory_benchmark(**kwargs)
    print(format_table(result))
    print(json.dumps(result))
    return result

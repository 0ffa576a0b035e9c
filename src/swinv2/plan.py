"""Memory planner (``swinv2 plan``): per-rank bytes of a training job, before renting the machines.

The model is built on the meta device (no memory, no time), so even SwinV2-G at 1536 px plans in
seconds. Parameters, gradients and AdamW states follow from the parameter count and the strategy:

* ``single`` / ``ddp``: every rank holds everything (fp32 weights, fp32 gradients, two fp32 AdamW states);
* ``zero`` (stage 1, ``ZeroRedundancyOptimizer``): AdamW states split across the ranks;
* ``fsdp`` (``fully_shard`` per block): weights, gradients and states split across the ranks, plus the
  gathered weights and gradients of the largest block (twice: the running one and the prefetched one),
  in the compute dtype.

Activations are what autograd saves for the backward pass, counted by a saved-tensor hook during one
forward pass on the meta device (each storage once, parameters excluded). With activation checkpointing
the job holds every checkpointed block's input plus the saved tensors of one block being recomputed (the
largest); sequential attention and the sequential MLP shrink that block's share. Gradient temporaries,
allocator fragmentation and the framework's workspace are not counted: keep 10-20% headroom.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from .factory import create_model
from .models.swinv2 import SwinV2Block
from .train.recipe import STRATEGIES

SAVER_SETS = {
    "none": {},
    "checkpointing": {"checkpointing": True},
    "checkpointing+sequential": {"checkpointing": True, "sequential": True},
}
GIB = 2**30


@dataclass
class ActivationCount:
    """Bytes saved for backward, per block (keyed by the block module) and outside any block."""

    per_block: dict[nn.Module, int] = field(default_factory=dict)
    block_inputs: dict[nn.Module, int] = field(default_factory=dict)
    outside: int = 0

    def total(self, checkpointing: bool) -> int:
        if not checkpointing:
            return self.outside + sum(self.per_block.values())
        return self.outside + sum(self.block_inputs.values()) + max(self.per_block.values(), default=0)


@contextmanager
def _count_saved(model: nn.Module, count: ActivationCount):
    """Attribute every tensor autograd saves to the block running at the time (storages counted once)."""
    params = {p.untyped_storage()._cdata for p in model.parameters()}
    seen: set[int] = set()
    current: list[nn.Module] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        key = t.untyped_storage()._cdata
        if key not in params and key not in seen:
            seen.add(key)
            nbytes = t.untyped_storage().nbytes()
            if current:
                count.per_block[current[-1]] = count.per_block.get(current[-1], 0) + nbytes
            else:
                count.outside += nbytes
        return t

    def enter(block: nn.Module, args: tuple) -> None:
        current.append(block)
        count.block_inputs[block] = args[0].numel() * args[0].element_size()

    def leave(block: nn.Module, args: tuple, out: torch.Tensor) -> None:
        current.pop()

    handles = []
    for module in model.modules():
        if isinstance(module, SwinV2Block):
            handles += [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            yield
    finally:
        for h in handles:
            h.remove()


def count_activations(model: nn.Module, img_size: int, batch: int, sequential: bool) -> ActivationCount:
    """Saved-for-backward bytes of one training forward pass of ``model`` (on its device, the meta one in plans)."""
    model.set_grad_checkpointing(False)  # per-block counts need the insides; total() applies checkpointing
    model.set_sequential_attention(sequential)
    model.set_sequential_mlp(sequential)
    count = ActivationCount()
    x = torch.empty(batch, model.cfg.in_chans, img_size, img_size, device=next(model.parameters()).device)
    with _count_saved(model, count):
        model.train()(x).sum()
    return count


def state_bytes(params: int, largest_block: int, strategy: str, world: int, amp: str) -> dict[str, float]:
    """Per-rank bytes of weights, gradients and AdamW states for ``params`` fp32 parameters."""
    compute = 2 if amp == "bf16" else 4
    shard = world if strategy == "fsdp" else 1
    out = {"params": 4 * params / shard, "grads": 4 * params / shard}
    out["optimizer"] = 8 * params / (world if strategy in ("zero", "fsdp") else 1)
    if strategy == "fsdp" and world > 1:
        # all-gathered weights of the running and the prefetched block, and the unsharded block gradient
        out["params"] += 2 * compute * largest_block
        out["grads"] += compute * largest_block
    return out


def plan(
    model_name: str,
    img_size: int | None = None,
    window_size: int | None = None,
    batch_size: int = 1,
    world_size: int = 1,
    strategy: str = "fsdp",
    amp: str = "bf16",
) -> dict:
    """Per-rank memory (bytes) for each set of savers; ``batch_size`` is per rank."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if world_size < 1 or batch_size < 1:
        raise ValueError(f"world size and batch size must be >= 1, got {world_size} and {batch_size}")
    if amp not in ("none", "bf16", "fp16"):
        raise ValueError(f"amp must be none, bf16 or fp16, got {amp!r}")
    overrides = {k: v for k, v in (("img_size", img_size), ("window_size", window_size)) if v is not None}
    with torch.device("meta"):
        model = create_model(model_name, drop_path_rate=0.0, **overrides)
    size = model.cfg.img_size if isinstance(model.cfg.img_size, int) else model.cfg.img_size[0]
    params = sum(p.numel() for p in model.parameters())
    largest = max(sum(p.numel() for p in m.parameters()) for m in model.modules() if isinstance(m, SwinV2Block))
    states = state_bytes(params, largest, strategy, world_size, amp)
    activation_scale = 0.5 if amp in ("bf16", "fp16") else 1.0  # counted in fp32; autocast saves half-width
    counts = {seq: count_activations(model, size, batch_size, seq) for seq in (False, True)}
    rows = []
    for name, savers in SAVER_SETS.items():
        count = counts[bool(savers.get("sequential"))]
        act = activation_scale * count.total(bool(savers.get("checkpointing")))
        rows.append({"savers": name, **states, "activations": act, "total": sum(states.values()) + act})
    return {
        "model": model_name,
        "img_size": size,
        "window_size": model.cfg.window_size,
        "params": params,
        "strategy": strategy,
        "world_size": world_size,
        "batch_per_rank": batch_size,
        "amp": amp,
        "rows": rows,
    }


def format_plan(result: dict) -> str:
    head = (
        f"{result['model']} ({result['params'] / 1e9:.2f}B params) at {result['img_size']} px, window "
        f"{result['window_size']}, {result['strategy']} on {result['world_size']} rank(s), batch "
        f"{result['batch_per_rank']} per rank, amp {result['amp']}: GiB per rank"
    )
    lines = [head, "", "| savers | params | grads | AdamW | activations | total |", "|---|---|---|---|---|---|"]
    for r in result["rows"]:
        cells = " | ".join(f"{r[k] / GIB:.2f}" for k in ("params", "grads", "optimizer", "activations", "total"))
        lines.append(f"| {r['savers']} | {cells} |")
    return "\n".join(lines)


def main(**kwargs) -> dict:
    result = plan(**kwargs)
    print(format_plan(result))
    print(json.dumps(result))
    return result

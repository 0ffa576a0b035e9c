"""Memory planner (``swinv2 plan``): per-rank bytes of a training job, before renting the machines.

The model is built on the meta device (no memory, no time), so even SwinV2-G at 1536 px plans in
seconds. Parameters, gradients and AdamW states follow from the parameter count and the strategy:

* ``single`` / ``ddp``: every rank holds everything (fp32 weights, fp32 gradients, two fp32 AdamW states,
  and under ``amp`` autocast's bf16 / fp16 copy of the weights for the forward pass);
* ``zero`` (stage 1, ``ZeroRedundancyOptimizer``): AdamW states split across the ranks;
* ``fsdp`` (``fully_shard`` per block): weights, gradients and states split across the ranks, plus the
  gathered weights and gradients of the largest block (twice: the running one and the prefetched one),
  in the compute dtype.

Activations are what autograd saves for the backward pass, counted by a saved-tensor hook during one
forward pass on the meta device (each storage once, parameters excluded). With activation checkpointing
the job holds every checkpointed block's input plus the saved tensors of one block being recomputed (the
largest); sequential attention and the sequential MLP shrink that block's share. Activations are counted
in fp32 whatever ``amp`` says, an upper bound: autocast keeps norms, softmax and more in fp32, so a bf16
step holds well over half the fp32 bytes (docs/scale.md has the measured ratio). Attention is counted
as its math path saves it, (B, heads, N, N) probabilities per block, as on a CPU; CUDA's fused SDPA
kernels keep only q, k, v, the output and the log-sum-exp, so on a GPU the rows without sequential
attention overstate. The shift masks the blocks cache are included. Gradient temporaries,
allocator fragmentation and the framework's workspace are not counted: keep 10-20% headroom.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from ..models.swinv2 import SwinV2Block
from ..pretrained.factory import create_model
from ..train.recipe import STRATEGIES

SAVER_SETS = {  # name: (activation checkpointing, sequential attention, sequential MLP)
    "none": (False, False, False),
    "checkpointing": (True, False, False),
    "checkpointing+seq_attention": (True, True, False),
    "checkpointing+seq_attention+seq_mlp": (True, True, True),
}
GIB = 2**30


@dataclass
class ActivationCount:
    """Bytes saved for backward, per block (keyed by the block module) and outside any block."""

    per_block: dict[nn.Module, int] = field(default_factory=dict)
    block_inputs: dict[nn.Module, int] = field(default_factory=dict)
    outside: int = 0
    masks: int = 0  # shift masks the blocks cache (one per stage and geometry), held between steps

    def total(self, checkpointing: bool) -> int:
        if not checkpointing:
            return self.outside + self.masks + sum(self.per_block.values())
        kept = sum(self.block_inputs.values()) + max(self.per_block.values(), default=0)
        return self.outside + self.masks + kept


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


def count_activations(
    model: nn.Module,
    img_size: int,
    batch: int,
    sequential: bool,
    sequential_mlp: bool | None = None,
    checkpointing: bool = False,
) -> ActivationCount:
    """Saved-for-backward bytes of one training forward pass of ``model`` (on its device, the meta one in
    plans), plus the shift masks it caches. Leaves the model in training mode with block checkpointing off
    (per-block counts need the insides; :meth:`ActivationCount.total` applies it), the GELU recomputation
    that comes with ``checkpointing`` and the given sequential switches."""
    model.set_grad_checkpointing(checkpointing)
    for stage in model.stages:
        stage.grad_checkpointing = False
    model.set_sequential_attention(sequential)
    model.set_sequential_mlp(sequential if sequential_mlp is None else sequential_mlp)
    count = ActivationCount()
    x = torch.empty(batch, model.cfg.in_chans, img_size, img_size, device=next(model.parameters()).device)
    with _count_saved(model, count):
        model.train()(x).sum()
    masks = {
        m.untyped_storage()._cdata: m.untyped_storage().nbytes()
        for block in model.modules()
        if isinstance(block, SwinV2Block)
        for m in block._masks.values()
        if m is not None
    }
    count.masks = sum(masks.values())
    return count


def state_bytes(params: int, largest_block: int, strategy: str, world: int, amp: str) -> dict[str, float]:
    """Per-rank bytes of weights, gradients and AdamW states for ``params`` fp32 parameters."""
    compute = 2 if amp == "bf16" else 4
    shard = world if strategy == "fsdp" else 1
    out = {"params": 4 * params / shard, "grads": 4 * params / shard}
    if strategy != "fsdp" and amp != "none":
        out["params"] += compute * params  # autocast's cached low-precision copy of the weights
    out["optimizer"] = 8 * params / (world if strategy in ("zero", "fsdp") else 1)
    if strategy == "fsdp" and world > 1:
        # all-gathered weights of the running and the prefetched block, and the unsharded block gradient
        out["params"] += 2 * compute * largest_block
        out["grads"] += compute * largest_block
    return out


MAX_BATCH, MAX_SIDE = 65536, 32768  # far past any GPU; beyond them counting takes minutes or overflows


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
    if batch_size > MAX_BATCH or (img_size or 0) > MAX_SIDE:
        raise ValueError(
            f"plans go up to {MAX_BATCH} images per rank and {MAX_SIDE} px (counting the activations runs the "
            f"model's shapes window by window); got --batch-size {batch_size}, --img-size {img_size or 'default'}"
        )
    if amp not in ("none", "bf16", "fp16"):
        raise ValueError(f"amp must be none, bf16 or fp16, got {amp!r}")
    overrides = {k: v for k, v in (("img_size", img_size), ("window_size", window_size)) if v is not None}
    with torch.device("meta"):
        model = create_model(model_name, drop_path_rate=0.0, **overrides)
    size = model.cfg.img_size if isinstance(model.cfg.img_size, int) else model.cfg.img_size[0]
    params = sum(p.numel() for p in model.parameters())
    largest = max(sum(p.numel() for p in m.parameters()) for m in model.modules() if isinstance(m, SwinV2Block))
    states = state_bytes(params, largest, strategy, world_size, amp)
    rows = []
    for name, (checkpointing, attn, mlp) in SAVER_SETS.items():
        act = count_activations(model, size, batch_size, attn, mlp, checkpointing).total(checkpointing)
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


def largest_resolution(budget_gib: float, step: int = 128, limit: int = 8192, **plan_args) -> dict[str, int]:
    """Per saver set, the largest image side (a multiple of ``step``) whose planned total fits the budget.

    A bisection over sizes (one meta-device plan per size tried, shared by the saver sets); 0 where even
    ``step`` pixels do not fit, ``limit`` where everything up to it does.
    """
    plans: dict[int, dict[str, float]] = {}

    def total(units: int, name: str) -> float:
        if units not in plans:
            rows = plan(img_size=units * step, **plan_args)["rows"]
            plans[units] = {r["savers"]: r["total"] for r in rows}
        return plans[units][name]

    best = {}
    for name in SAVER_SETS:
        lo, hi = 0, limit // step  # in units of step: lo fits (or is 0); above hi is not considered
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if total(mid, name) <= budget_gib * GIB else (lo, mid - 1)
        best[name] = lo * step
    return best


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


def main(fit_gib: float | None = None, **kwargs) -> dict:
    if fit_gib is not None:
        if kwargs.pop("img_size", None) is not None:
            raise ValueError("--fit-gib searches the image size: give it or --img-size, not both")
        best = largest_resolution(fit_gib, **kwargs)
        for name, side in best.items():
            shown = {0: "none (even 128 px needs more)", 8192: "8192 px or more (the search stops there)"}
            print(f"{name:<26} largest trainable image side within {fit_gib:g} GiB: {shown.get(side, f'{side} px')}")
        print(json.dumps({"fit_gib": fit_gib, **kwargs, "largest_img_size": best}))
        return best
    result = plan(**kwargs)
    print(format_plan(result))
    print(json.dumps(result))
    return result

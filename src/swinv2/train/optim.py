"""Parameter groups (weight decay, layer-wise lr decay), AdamW and the warmup + cosine schedule."""

from __future__ import annotations

import math
import re

import torch
from torch import nn


def layer_id(name: str, depths: tuple[int, ...]) -> int:
    """Depth index for layer-wise lr decay: 0 = patch embedding (and mask token), then one per block,
    last = final norm and head. Patch merging shares the id of the block before it (the official layout
    stores it at the end of the previous stage)."""
    num_layers = sum(depths)
    if name.startswith(("patch_embed", "mask_token", "pos_drop")):
        return 0
    m = re.match(r"stages\.(\d+)\.(blocks\.(\d+)|downsample)", name)
    if m:
        stage = int(m.group(1))
        before = sum(depths[:stage])
        return before + int(m.group(3)) + 1 if m.group(3) is not None else before
    return num_layers + 1


def param_groups(model: nn.Module, weight_decay: float, layer_decay: float = 1.0) -> list[dict]:
    """AdamW groups: no decay for 1-D params, biases and what ``no_weight_decay()`` names, on the model or
    on any submodule (a backbone inside a detector); lr scale ``layer_decay ** (L + 1 - layer_id)`` per
    depth when ``layer_decay < 1``."""
    skip = {
        f"{prefix}.{name}" if prefix else name
        for prefix, module in model.named_modules()
        if callable(getattr(module, "no_weight_decay", None))
        for name in module.no_weight_decay()
    }
    depths = tuple(model.cfg.depths) if hasattr(model, "cfg") else (0,)
    num_layers = sum(depths)
    groups: dict[tuple[int, bool], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = p.ndim <= 1 or name.endswith(".bias") or name in skip
        lid = layer_id(name, depths) if layer_decay < 1 else num_layers + 1
        key = (lid, no_decay)
        if key not in groups:
            groups[key] = {
                "params": [],
                "names": [],
                "weight_decay": 0.0 if no_decay else weight_decay,
                "lr_scale": layer_decay ** (num_layers + 1 - lid),
            }
        groups[key]["params"].append(p)
        groups[key]["names"].append(name)
    return list(groups.values())


def build_optimizer(
    model: nn.Module, lr: float, weight_decay: float, layer_decay: float = 1.0, shard: bool = False
) -> torch.optim.Optimizer:
    """AdamW over :func:`param_groups`; ``shard``: ZeRO stage 1, each rank keeping the state of its share
    of the parameters (same groups, same ``lr_scale`` keys: the schedule sets the wrapper's groups and
    ZeRO copies them to its local AdamW at every step)."""
    groups = param_groups(model, weight_decay, layer_decay)
    for g in groups:
        g["lr"] = lr * g["lr_scale"]
    # The fused kernel (one pass over all tensors) is the faster one on a CPU too (docs/results.md).
    devices = {p.device.type for g in groups for p in g["params"]}
    fused = devices <= {"cpu", "cuda"}
    if not shard:
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8, fused=fused)
    from torch.distributed.optim import ZeroRedundancyOptimizer

    # ZeRO's load_state_dict moves the "step" counters to the CPU, which fused AdamW on CUDA does not accept.
    fused = devices == {"cpu"}
    return ZeroRedundancyOptimizer(
        groups, optimizer_class=torch.optim.AdamW, lr=lr, betas=(0.9, 0.999), eps=1e-8, fused=fused
    )


class WarmupCosine:
    """Per-step schedule: linear warmup from 0 to ``base_lr``, then cosine down to ``min_lr``.

    It sets each group's lr to ``lr(step) * group["lr_scale"]``; its state is just the step count.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, base_lr: float, min_lr: float, total: int, warmup: int):
        self.optimizer, self.base_lr, self.min_lr = optimizer, base_lr, min_lr
        self.total, self.warmup = max(total, 1), max(warmup, 0)
        self.step_count = 0
        self._apply()

    def lr_at(self, step: int) -> float:
        if step < self.warmup:
            return self.base_lr * (step + 1) / self.warmup
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return self.min_lr + 0.5 * (self.base_lr - self.min_lr) * (1 + math.cos(math.pi * progress))

    def _apply(self) -> None:
        lr = self.lr_at(self.step_count)
        for g in self.optimizer.param_groups:
            g["lr"] = lr * g.get("lr_scale", 1.0)

    def step(self) -> None:
        self.step_count += 1
        self._apply()

    @property
    def lr(self) -> float:
        return self.lr_at(self.step_count)

    def state_dict(self) -> dict:
        return {"step_count": self.step_count}

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step_count"])
        self._apply()

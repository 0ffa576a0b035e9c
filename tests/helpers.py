"""Shared test utilities: parameter randomisation and parity reporting."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from swinv2 import SwinV2, create_model, get_config
from swinv2.data import find_fashion_mnist


def _have_fashion_mnist() -> bool:
    try:
        find_fashion_mnist(download=False)
    except FileNotFoundError:
        return False
    return True


# Tests that train on the real dataset skip where Debian's dataset-fashion-mnist is not installed.
needs_fmnist = pytest.mark.skipif(
    not _have_fashion_mnist(), reason="Fashion-MNIST IDX files not installed (dataset-fashion-mnist)"
)

TINY = {"embed_dim": 8, "cpb_hidden": 16, "num_classes": 5}


def tiny(name: str, **overrides) -> SwinV2:
    """The named architecture shrunk in width (same depths, windows and stage count) for CPU tests."""
    cfg = get_config(name)
    heads = tuple(1 for _ in cfg.num_heads)
    depths = tuple(min(d, 2) for d in cfg.depths)
    return create_model(name, num_heads=heads, depths=depths, **{**TINY, **overrides})


@torch.no_grad()
def randomize(module: nn.Module, seed: int = 0) -> nn.Module:
    """Give EVERY parameter a random, non-default value.

    Default SwinV2 init zeroes the post-norms, which makes every block an identity: a parity test on
    default weights would compare patch embeddings and heads only.
    """
    gen = torch.Generator().manual_seed(seed)
    for name, p in module.named_parameters():
        r = torch.randn(p.shape, generator=gen)
        if name.endswith("logit_scale"):
            # ln(2) .. ln(200): some heads exceed the ln(100) clamp, so the clamp is exercised too.
            p.copy_(torch.empty(p.shape).uniform_(math.log(2), math.log(200), generator=gen))
        elif p.ndim == 1 and ("norm" in name or "layernorm" in name) and name.endswith("weight"):
            p.copy_(1 + 0.2 * r)
        elif p.ndim == 1:
            p.copy_(0.1 * r)
        else:
            fan_in = p[0].numel()
            p.copy_(r / math.sqrt(fan_in))
    return module


def blocks(model: SwinV2) -> int:
    """Transformer blocks in all stages of ``model``."""
    return sum(len(stage.blocks) for stage in model.stages)


def diff(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """(max, mean) absolute difference, printed by every parity test."""
    d = (a.double() - b.double()).abs()  # float64 results keep their small differences
    return d.max().item(), d.mean().item()


def hf_simmim(image_size: int, window_size: int) -> nn.Module:
    """A randomised, two-stage, one-channel Hugging Face ``Swinv2ForMaskedImageModeling`` (the test oracle)."""
    import transformers

    cfg = transformers.Swinv2Config(
        image_size=image_size,
        patch_size=4,
        embed_dim=16,
        depths=[2, 2],
        num_heads=[1, 2],
        window_size=window_size,
        num_channels=1,
        encoder_stride=8,
    )
    return randomize(transformers.Swinv2ForMaskedImageModeling(cfg))


def drop_segmentations(coco: dict) -> None:
    """A COCO dict as box-only datasets come: no ``segmentation`` in any annotation."""
    for annotation in coco["annotations"]:
        annotation.pop("segmentation")


def branch_run(source: Path, checkpoint: str, target: Path) -> Path:
    """A run folder ``target`` that stops where ``source``'s ``checkpoint`` was written: its recipe (with
    ``target`` as output), that checkpoint and its digest, and the metric rows of the epochs it holds.
    Resuming it replays what a run killed right after that checkpoint would do."""
    import json
    import shutil

    from swinv2.train.checkpoints import checkpoint_position
    from swinv2.train.state import read_metrics

    target.mkdir(parents=True)
    recipe = json.loads((source / "config.json").read_text())
    (target / "config.json").write_text(json.dumps({**recipe, "output": str(target)}))
    saved = source / checkpoint
    if saved.is_dir():
        shutil.copytree(saved, target / checkpoint)
    else:
        shutil.copy(saved, target / checkpoint)
        shutil.copy(saved.with_name(saved.name + ".sha256"), target)
    epochs = checkpoint_position(saved)[0]
    rows = [r for r in read_metrics(source) if r["epoch"] <= epochs]
    (target / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return target

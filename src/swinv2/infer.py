"""Loading a trained classifier from a run folder or weights file, evaluating it, predicting images."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .checkpoint import read_checkpoint
from .models import SwinV2, SwinV2Config
from .models.config import to_pair


def load_classifier(
    path: str | Path, img_size: int | None = None, window_size: int | None = None
) -> tuple[SwinV2, dict]:
    """A model saved by ``swinv2 train`` (run folder or its ``model.safetensors``), at any size / window.

    Returns the model (eval mode) and the file's metadata (``classes``, ``mean``, ``std``).
    """
    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    tensors, meta = read_checkpoint(path)
    if "config" not in meta:
        raise ValueError(f"{path} has no swinv2 config; convert it with `swinv2 convert SRC DST --model NAME` first")
    cfg = SwinV2Config(**json.loads(meta["config"]))
    model = SwinV2(cfg)
    model.load_state_dict(tensors, strict=True)
    if img_size is not None or window_size is not None:
        model.set_input_size(img_size=img_size, window_size=window_size)  # trained windows stay the CPB's
    info = {k: json.loads(meta[k]) for k in ("classes", "mean", "std", "crop_pct") if k in meta}
    return model.eval(), info


def evaluate_classifier(
    path: str | Path,
    img_size: int | None = None,
    window_size: int | None = None,
    data: str | None = None,
    limit: int | None = None,
    device: str = "auto",
    batch_size: int = 256,
    dtype: str = "float32",
) -> dict:
    """Top-1 / top-5 of a saved classifier on ``data``'s validation split (Fashion-MNIST's test set by
    default), optionally at another image size and window (``swinv2 eval``)."""
    from torch.utils.data import DataLoader

    from .data import build_classification_data
    from .train.loop import evaluate, resolve_device

    model, _ = load_classifier(path, img_size, window_size)
    size = to_pair(model.cfg.img_size)[0]
    dataset = build_classification_data(data, size, model.cfg.in_chans, {}, 1, limit)
    dev = resolve_device(device)
    model = model.to(dev, getattr(torch, dtype))
    loader = DataLoader(dataset.val, batch_size=batch_size)
    result = evaluate(model, loader, dev, batch_transform=dataset.val_batch_transform)
    result.update(images=len(dataset.val), img_size=size, window_size=model.cfg.window_size, dtype=dtype)
    return result


@torch.no_grad()
def predict_images(model: SwinV2, info: dict, paths: list[str], topk: int = 5) -> list[list[tuple[str, float]]]:
    """Top-k (class name, probability) for each image file."""
    from .data import eval_transform
    from .data.datasets import read_image

    cfg = model.cfg
    size = to_pair(cfg.img_size)[0]
    mean = tuple(info.get("mean", (0.5,) * cfg.in_chans))
    std = tuple(info.get("std", (0.5,) * cfg.in_chans))
    classes = info.get("classes") or [str(i) for i in range(cfg.num_classes)]
    transform = eval_transform(size, mean, std, info.get("crop_pct", 1.0))
    results = []
    for p in paths:
        if not Path(p).is_file():
            raise FileNotFoundError(f"image not found: {p}")
        image = read_image(p, 1 if cfg.in_chans == 1 else 3)
        probs = model(transform(image).unsqueeze(0)).softmax(-1)[0]
        top = probs.topk(min(topk, len(probs)))
        results.append([(classes[i], float(v)) for v, i in zip(top.values, top.indices)])
    return results

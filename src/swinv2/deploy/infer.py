"""Loading a trained classifier from a run folder or weights file, evaluating it, predicting images."""

from __future__ import annotations

from pathlib import Path

import torch

from ..models import SwinV2
from ..models.config import to_pair
from ..runs import expect_run


def load_classifier(
    path: str | Path, img_size: int | None = None, window_size: int | None = None
) -> tuple[SwinV2, dict]:
    """A classifier saved by ``swinv2 train`` (run folder or its ``model.safetensors``) or by
    ``save_pretrained``, at any size / window.

    Returns the model (eval mode) and what came with the weights: ``classes``, ``mean``, ``std``,
    ``crop_pct`` and the whole ``preprocessing``.
    """
    from . import from_pretrained

    expect_run(path, ("classify",), "`swinv2 eval` / `predict`")
    model = from_pretrained(path)
    if not isinstance(model, SwinV2):
        raise ValueError(f"{path} holds a {type(model).__name__}, not an image classifier")
    if model.cfg.num_classes == 0:
        raise ValueError(
            f"{path} holds an encoder without a classifier head (SimMIM pretraining writes those): "
            "fine-tune it first, `swinv2 train --pretrained PATH`"
        )
    return _at_size(model, img_size, window_size)


def _at_size(model: SwinV2, img_size: int | None, window_size: int | None) -> tuple[SwinV2, dict]:
    """``model`` (eval mode) at another size / window, and what came with its weights."""
    from ..models.preprocess import model_preprocessing

    if img_size is not None or window_size is not None:
        # trained windows stay the CPB's; the stored preprocessing follows the new size
        model.set_input_size(img_size=img_size, window_size=window_size)
    prep = model_preprocessing(model)
    info = {"mean": prep.mean, "std": prep.std, "crop_pct": prep.crop_pct, "preprocessing": prep}
    if model.classes is not None:
        info["classes"] = model.classes
    return model.eval(), info


def released_classifier(
    name: str, source: str = "auto", img_size: int | None = None, window_size: int | None = None
) -> tuple[SwinV2, dict]:
    """The released weights ``name`` (``model.tag``) as :func:`load_classifier` returns a run's."""
    from ..pretrained.factory import create_model

    return _at_size(create_model(name, pretrained=True, source=source), img_size, window_size)


def check_image_path(path: str | Path) -> None:
    """Predict takes image files: a folder or a missing path is named as such."""
    if Path(path).is_dir():
        raise IsADirectoryError(f"{path} is a folder; give the image files in it (e.g. {path}/*.png)")
    if not Path(path).is_file():
        raise FileNotFoundError(f"image not found: {path}")


def evaluate_classifier(
    path: str | Path,
    img_size: int | None = None,
    window_size: int | None = None,
    data: str | None = None,
    limit: int | None = None,
    device: str = "auto",
    batch_size: int = 256,
    dtype: str = "float32",
    amp: str | None = None,
) -> dict:
    """Top-1 / top-5 of a saved classifier on ``data``'s validation split (by default a run's own image
    folder, else Fashion-MNIST's test set), optionally at another image size and window (``swinv2 eval``).
    ``amp`` is the autocast of the forward passes; None: the run's own (so eval repeats its evaluation),
    fp32 for weights that no run of this project wrote.

    Images are prepared with the preprocessing stored with the weights, not the data's defaults: a model
    is scored on what it was trained or published to see. An image folder goes through the whole stored
    transform (resize, interpolation, crop, statistics); Fashion-MNIST's 28 px images are resized and
    normalised with the stored statistics, as training evaluated them. Only the validation split is read."""
    from torch.utils.data import DataLoader

    from ..data.datasets import ReadableCollate, take_unreadable
    from ..runs import run_recipe
    from ..train.loop import evaluate, resolve_device
    from ..train.precision import resolve_amp

    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be >= 1, got {limit}")
    model, info = load_classifier(path, img_size, window_size)
    data = data if data is not None else run_data(path)
    val, names, batch_transform = validation_split(data, model, info["preprocessing"], limit)
    val = _in_model_classes(val, names, model)
    dev = resolve_device(device)
    model = model.to(dev, getattr(torch, dtype))
    loader = DataLoader(val, batch_size=batch_size, collate_fn=ReadableCollate(val))
    precision = resolve_amp(amp or (run_recipe(path) or {}).get("amp", "none"), dev)
    result = evaluate(model, loader, dev, precision.amp, batch_transform=batch_transform)
    unreadable = len(take_unreadable(val))
    size = to_pair(model.cfg.img_size)[0]
    result.update(images=len(val) - unreadable, img_size=size, window_size=model.cfg.window_size, dtype=dtype)
    result["amp"] = precision.amp
    if unreadable:
        result["unreadable_files"] = unreadable
    return result


def run_data(path: str | Path) -> str | None:
    """The image folder a run (``path`` is its folder or weights) trained on, if it still exists; None
    (Fashion-MNIST) otherwise."""
    from ..runs import run_recipe

    data = (run_recipe(path) or {}).get("data")
    return data if isinstance(data, str) and Path(data).is_dir() else None


def validation_split(data: str | None, model: SwinV2, prep, limit: int | None):
    """``(dataset, class names, batch transform)``: Fashion-MNIST's test set as raw uint8 batches normalised
    on the device, or ``data/val`` read through ``prep``'s transform."""
    from ..data import (
        FASHION_MNIST_CLASSES,
        BatchAugment,
        TensorImageDataset,
        fashion_mnist_images,
        image_folder,
        limit_subset,
    )

    chans = model.cfg.in_chans
    if data is None:
        val = TensorImageDataset(*fashion_mnist_images("test", chans))
        transform = BatchAugment(prep.size[0], prep.mean, prep.std, train=False)
        names = list(FASHION_MNIST_CLASSES)
    else:
        val = image_folder(data, "val", prep.transform(), chans)
        transform, names = None, list(val.classes)
    return (limit_subset(val, limit, spread=data is not None) if limit else val), names, transform


class _Relabelled(torch.utils.data.Dataset):
    """A dataset whose labels are mapped through ``mapping`` (unreadable samples stay None)."""

    def __init__(self, dataset, mapping: list[int]):
        self.dataset, self.mapping = dataset, mapping

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i):
        sample = self.dataset[i]
        return None if sample is None else (sample[0], self.mapping[sample[1]])


def _in_model_classes(val, names: list[str], model: SwinV2):
    """``val`` with labels in the model's class order, matched by name (folders list theirs sorted, which
    need not be the training order); an unknown class is refused. Weights without class names are matched
    by position, so the data must list exactly the model's number of classes (one missing class folder
    would shift every label after it)."""
    if model.classes is None:
        if len(names) != model.cfg.num_classes:
            raise ValueError(
                f"the data has {len(names)} classes, the model {model.cfg.num_classes} and no class names to "
                "match them by: give data with one folder per class of the model, in its order when sorted"
            )
        return val
    unknown = [n for n in names if n not in model.classes]
    if unknown:
        raise ValueError(f"classes the model was not trained on: {unknown[:5]}; it knows {list(model.classes)[:10]}")
    mapping = [list(model.classes).index(n) for n in names]
    return val if mapping == list(range(len(names))) else _Relabelled(val, mapping)


@torch.no_grad()
def predict_images(model: SwinV2, info: dict, paths: list[str], topk: int = 5) -> list[list[tuple[str, float]]]:
    """Top-k (class name, probability) for each image file."""
    from ..data.decode import read_image
    from ..models.preprocess import model_preprocessing

    cfg = model.cfg
    classes = info.get("classes") or [str(i) for i in range(cfg.num_classes)]
    transform = info["preprocessing"].transform() if "preprocessing" in info else model_preprocessing(model).transform()
    results = []
    for p in paths:
        check_image_path(p)
        image = read_image(p, 1 if cfg.in_chans == 1 else 3)
        probs = model(transform(image).unsqueeze(0)).softmax(-1)[0]
        top = probs.topk(min(topk, len(probs)))
        results.append([(classes[i], float(v)) for v, i in zip(top.values, top.indices)])
    return results


def predict_onnx(path: str | Path, paths: list[str], topk: int = 5) -> list[list[tuple[str, float]]]:
    """Top-k (class name, probability) from an ONNX file written by ``swinv2 export``, in onnxruntime,
    with the preprocessing and class names stored in the file."""
    import numpy as np

    from ..data.decode import read_image
    from ..models.preprocess import Preprocessing
    from .export import onnx_metadata, onnx_session

    meta = onnx_metadata(path)
    if "preprocessing" not in meta:
        raise ValueError(f"{path} was not written by `swinv2 export` (no swinv2.preprocessing metadata)")
    prep = Preprocessing.from_dict(meta["preprocessing"])
    # a file exported with --dynamic takes any size: the image keeps its aspect ratio, uncropped
    transform, session = prep.transform(keep_aspect=bool(meta.get("dynamic_sizes"))), onnx_session(path)
    name = session.get_inputs()[0].name
    results = []
    for p in paths:
        check_image_path(p)
        image = transform(read_image(p, prep.input_size[0]))[None].numpy()
        logits = session.run(None, {name: image})[0][0]
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        classes = meta.get("classes") or [str(i) for i in range(len(probs))]
        order = np.argsort(-probs)[:topk]
        results.append([(classes[i], float(probs[i])) for i in order])
    return results

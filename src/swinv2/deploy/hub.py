"""``save_pretrained`` / ``from_pretrained``: a folder (or Hugging Face Hub repository) holding
``config.json`` and ``model.safetensors``.

``config.json`` names the architecture, its full config, the preprocessing and the class names; the same
facts are in the safetensors metadata, so the weights file alone is enough too. Local folders and files
always load offline; Hub ids go through ``huggingface_hub`` when it is installed (and honour its cache
and ``HF_HUB_OFFLINE``). A string that looks like a path (``./``, ``../``, ``/``, ``~``, a file extension,
or a parent folder that exists here) is never sent to the Hub: a typo in it fails at once.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from torch import nn

from ..checkpoint import read_checkpoint, save_weights
from ..runs import expect_run
from .preprocess import Preprocessing

CONFIG, WEIGHTS = "config.json", "model.safetensors"
HUB_PREFIX = "hf://"
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")  # owner/name
FILE_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt", ".pt2", ".onnx", ".json")


def _architectures() -> dict:
    from ..models import SwinV2, SwinV2Config
    from ..video.config import VideoSwinV2Config
    from ..video.model import VideoSwinV2

    return {"SwinV2": (SwinV2, SwinV2Config), "VideoSwinV2": (VideoSwinV2, VideoSwinV2Config)}


def description(model: nn.Module, preprocessing: Preprocessing | None = None, classes=None) -> dict:
    """What ``config.json`` holds for ``model``."""
    from .. import __version__

    arch = type(model).__name__
    if arch not in _architectures():
        raise ValueError(f"save_pretrained handles {sorted(_architectures())}, not {arch}")
    prep = preprocessing or model_preprocessing(model)
    names = list(classes) if classes is not None else getattr(model, "classes", None)
    if names is not None and len(names) != model.cfg.num_classes:
        raise ValueError(f"{len(names)} class names for a model with {model.cfg.num_classes} classes")
    return {
        "architecture": arch,
        "config": model.cfg.to_dict(),
        "preprocessing": prep.to_dict(),
        "classes": names,
        "library": "swinv2",
        "library_version": __version__,
    }


def model_preprocessing(model: nn.Module) -> Preprocessing:
    """The model's preprocessing: what it was loaded with, else the default for its config."""
    prep = getattr(model, "preprocessing", None)
    return prep if prep is not None else Preprocessing.for_model(model.cfg)


def save_pretrained(
    model: nn.Module, directory: str | os.PathLike, preprocessing: Preprocessing | None = None, classes=None
) -> Path:
    """Write ``config.json`` and ``model.safetensors`` (the Hub layout; upload the folder as it is)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    info = description(model, preprocessing, classes)
    meta = {
        "architecture": info["architecture"],
        "preprocessing": json.dumps(info["preprocessing"]),
        "classes": json.dumps(info["classes"]),
    }
    save_weights(model, directory / WEIGHTS, meta)
    from ..train.state import write_json

    write_json(directory / CONFIG, info)
    return directory


def from_pretrained(
    name_or_path: str | os.PathLike, *, revision: str | None = None, cache_dir: str | None = None
) -> nn.Module:
    """A model from a folder written by :func:`save_pretrained` or ``swinv2 train`` (a run folder), a
    ``.safetensors`` file of this project, or a Hugging Face Hub repository id. Strict: every tensor
    must fit. Returned in eval mode with ``.preprocessing`` and ``.classes`` set."""
    weights, config = _resolve(name_or_path, revision, cache_dir)
    tensors, meta = read_checkpoint(weights)
    info = json.loads(config.read_text()) if config is not None and config.is_file() else {}
    if "architecture" not in info:  # a run folder's config.json is its recipe: the weights describe the model
        info = _from_metadata(meta, weights)
    model_class, config_class = _architectures()[info["architecture"]]
    cfg = config_class(**info["config"])
    model = model_class(cfg)
    from ..checkpoint import load_state_dict_into

    load_state_dict_into(model, tensors, strict=True)
    prep = info.get("preprocessing")
    model.preprocessing = Preprocessing.from_dict(prep) if prep else Preprocessing.for_model(model.cfg)
    model.classes = info.get("classes")
    return model.eval()


def _from_metadata(meta: dict[str, str], weights: Path) -> dict:
    if "config" not in meta:
        expect_run(weights, ("classify", "pretrain", "video"), "`swinv2 export` (from_pretrained)")
        raise ValueError(f"{weights} carries no swinv2 config; convert it with `swinv2 convert SRC DST --model NAME`")
    config = json.loads(meta["config"])
    arch = meta.get("architecture") or ("VideoSwinV2" if "num_frames" in config else "SwinV2")
    prep = json.loads(meta["preprocessing"]) if "preprocessing" in meta else None
    if prep is None and "mean" in meta:  # written by swinv2 train before preprocessing was recorded whole
        cfg = _architectures()[arch][1](**config)
        prep = Preprocessing.for_model(
            cfg,
            mean=tuple(json.loads(meta["mean"])),
            std=tuple(json.loads(meta["std"])),
            crop_pct=json.loads(meta.get("crop_pct", "1.0")),
            interpolation="bilinear",
        ).to_dict()
    classes = json.loads(meta["classes"]) if "classes" in meta else None
    return {"architecture": arch, "config": config, "preprocessing": prep, "classes": classes}


def _resolve(name_or_path, revision, cache_dir) -> tuple[Path, Path | None]:
    """(weights file, config file or None) for a local folder / file or a Hub id (``hf://owner/name`` is
    always the Hub's, even where a folder named like its owner exists here)."""
    if str(name_or_path).startswith(HUB_PREFIX):
        return _from_hub(str(name_or_path).removeprefix(HUB_PREFIX), revision, cache_dir)
    local = Path(os.path.expanduser(name_or_path))  # os.path's: an unknown ~user stays as it is
    if local.is_dir():
        if not (local / WEIGHTS).is_file():
            raise FileNotFoundError(f"{local} has no {WEIGHTS} (expected a folder written by save_pretrained)")
        return local / WEIGHTS, local / CONFIG
    if local.is_file():
        return local, None
    repo = str(name_or_path)
    reason = _local_reason(repo)
    if reason is not None or not HUB_ID.fullmatch(repo):
        why = f"; taken as a local path: {reason} (write {HUB_PREFIX}{repo} for the Hub)" if reason else ""
        raise FileNotFoundError(f"no such file or directory: {repo} (not shaped like a Hub id owner/name{why})")
    return _from_hub(repo, revision, cache_dir)


def _from_hub(repo: str, revision, cache_dir) -> tuple[Path, Path | None]:
    if not HUB_ID.fullmatch(repo):
        raise FileNotFoundError(f"{HUB_PREFIX}{repo}: a Hub id is owner/name")
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as exc:
        raise FileNotFoundError(
            f"{repo} is not a local folder, and huggingface_hub is not installed to fetch it from the Hub "
            "(pip install huggingface_hub)"
        ) from exc
    where = {"revision": revision, "cache_dir": cache_dir, "local_files_only": hub_offline()}
    try:
        weights = hf_hub_download(repo, WEIGHTS, **where)
        config = hf_hub_download(repo, CONFIG, **where)
    except Exception as exc:  # offline without a cached copy, no such repository, no such file
        raise FileNotFoundError(f"{repo}: not a local folder, and the Hub gave {type(exc).__name__}: {exc}") from exc
    return Path(weights), Path(config)


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` as it is now: huggingface_hub reads it once, when it is first imported (often by
    transformers or timm, before a user sets it), and would then try the network for 20 s or more."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "on", "yes", "true")


def _local_reason(text: str) -> str | None:
    """Why ``text`` names a local path rather than a Hub id, or None: a mistyped path must fail at once,
    not after the Hub client's network retries (about 23 s)."""
    seps = {"/", os.sep, os.altsep or "/"}
    prefixes = ("~", *seps, *(dots + sep for dots in (".", "..") for sep in seps))
    if text.startswith(prefixes) or text in (".", ".."):
        return "it starts like a path"
    if any(sep in text for sep in seps) and text.lower().endswith(FILE_SUFFIXES):
        return f"it has a file extension ({Path(text).suffix})"
    parent = Path(os.path.expanduser(text)).parent
    if parent != Path(".") and parent.is_dir():
        return f"{parent}{os.sep} is a folder here"
    return None

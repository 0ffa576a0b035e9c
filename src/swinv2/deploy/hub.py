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

from ..models.preprocess import Preprocessing, model_preprocessing
from ..pretrained.fetch import HUB_WEIGHTS, hub_extra, hub_files
from ..runs import expect_run
from ..weights.checkpoint import read_checkpoint
from ..weights.saving import CONFIG, write_pretrained
from ..weights.transformers_layout import is_transformers_config

HUB_PREFIX = "hf://"
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")  # owner/name
FILE_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt", ".pt2", ".onnx", ".json")


def _architectures() -> dict:
    from ..models import SwinV2, SwinV2Config
    from ..video.config import VideoSwinV2Config
    from ..video.model import VideoSwinV2

    return {"SwinV2": (SwinV2, SwinV2Config), "VideoSwinV2": (VideoSwinV2, VideoSwinV2Config)}


def save_pretrained(
    model: nn.Module,
    directory: str | os.PathLike,
    preprocessing: Preprocessing | None = None,
    classes=None,
    layout: str = "swinv2",
) -> Path:
    """Write ``config.json`` and ``model.safetensors`` (the Hub layout; upload the folder as it is).

    ``layout="transformers"`` writes what ``transformers.AutoModelForImageClassification.from_pretrained``
    reads instead (a ``Swinv2Config``, its weight names, ``preprocessor_config.json``): a model trained here
    published for transformers users. Configurations transformers cannot express are refused by name.
    ``preprocessing`` defaults to the model's own (what it was loaded with, else its config's)."""
    return write_pretrained(model, directory, preprocessing or model_preprocessing(model), classes, layout)


def from_pretrained(
    name_or_path: str | os.PathLike, *, revision: str | None = None, cache_dir: str | None = None
) -> nn.Module:
    """A model from a folder written by :func:`save_pretrained` or ``swinv2 train`` (a run folder), a
    ``.safetensors`` file of this project, a transformers Swinv2 repository or folder (``config.json`` of a
    ``Swinv2Config`` beside ``model.safetensors`` or ``pytorch_model.bin``; a masked-image-modelling one
    gives a :class:`~swinv2.models.SimMIM`), or a Hugging Face Hub id of any of these. Strict: every tensor
    must fit, and a config whose shapes disagree with the weights' is refused before the model is
    allocated (checked on the meta device against the file's header). Returned in eval mode with
    ``.preprocessing`` and ``.classes`` set."""
    weights, config = _resolve(name_or_path, revision, cache_dir)
    info = json.loads(config.read_text()) if config is not None and config.is_file() else {}
    if is_transformers_config(info):
        return _from_transformers(weights, config, info)
    tensors = None
    if "architecture" not in info:  # a run folder's config.json is its recipe: the weights describe the model
        tensors, meta = read_checkpoint(weights)  # names a file that is no checkpoint; no more than it holds
        info = _from_metadata(meta, weights)
    if info["architecture"] not in _architectures():
        raise ValueError(
            f"{config or weights} describes a {info['architecture']!r}, expected {sorted(_architectures())}"
        )
    model_class, config_class = _architectures()[info["architecture"]]
    cfg = config_class(**info["config"])
    model = build_checked(lambda: model_class(cfg), weights, f"{config or weights}")
    if tensors is None:
        tensors, _ = read_checkpoint(weights)
    from ..weights.checkpoint import load_state_dict_into

    load_state_dict_into(model, tensors, strict=True)
    prep = info.get("preprocessing")
    model.preprocessing = Preprocessing.from_dict(prep) if prep else Preprocessing.for_model(model.cfg)
    model.classes = info.get("classes")
    return model.eval()


def build_checked(make, weights: Path, what: str, convert=None, part: str = "") -> nn.Module:
    """``make()`` once its state dict, built on the meta device, has the shapes of ``weights`` (after
    ``convert``; ``part``: the prefix of the model's keys the file holds): a config that disagrees with
    the weights is refused before anything the config sizes is allocated."""
    import torch

    from ..weights.checkpoint import check_shapes, checkpoint_skeleton

    with torch.device("meta"):
        skeleton = make()
    expected = {k.removeprefix(part): v for k, v in skeleton.state_dict().items() if k.startswith(part)}
    incoming = checkpoint_skeleton(weights)
    if convert is not None:
        incoming = convert(incoming)
    check_shapes(expected, incoming, f"{what} does not describe the weights in {weights}")
    return make()


def _from_transformers(weights: Path, config: Path, info: dict) -> nn.Module:
    """A transformers Swinv2 repository: its classifier, bare encoder or masked-image model."""
    from ..models import SimMIM, SwinV2, SwinV2Config
    from ..pretrained.released import id2label_names
    from ..weights.convert import convert_state_dict
    from ..weights.transformers_layout import config_fields, kind_of

    cfg = SwinV2Config(**config_fields(info))
    kind = kind_of(info)
    what = f"{config} (a transformers Swinv2Config)"

    def convert(sd: dict) -> dict:
        return convert_state_dict(sd, "hf")

    def encoder_only(sd: dict) -> dict:
        return {k: v for k, v in convert(sd).items() if k != "mask_token" and not k.startswith("decoder.")}

    if kind == "masked":
        model = build_checked(lambda: SimMIM(SwinV2(cfg)), weights, what, encoder_only, part="encoder.")
        tensors, _ = read_checkpoint(weights)
        model.load_converted(convert(tensors))
        model.encoder.preprocessing = _transformers_preprocessing(config, model.encoder)
        return model.eval()
    model = build_checked(lambda: SwinV2(cfg), weights, what, convert)
    from ..weights.checkpoint import load_state_dict_into

    tensors, _ = read_checkpoint(weights)
    load_state_dict_into(model, convert(tensors), strict=True)
    model.preprocessing = _transformers_preprocessing(config, model)
    names = id2label_names(info) if kind == "classify" else None
    model.classes = names if names is not None and len(names) == cfg.num_classes else None
    return model.eval()


def _transformers_preprocessing(config: Path, model: nn.Module) -> Preprocessing:
    """The repository's ``preprocessor_config.json`` (its statistics and resampling), else the defaults."""
    path = config.with_name("preprocessor_config.json")
    if not path.is_file():
        return Preprocessing.for_model(model.cfg)
    data = json.loads(path.read_text())
    resample = {0: "nearest", 2: "bilinear", 3: "bicubic"}.get(data.get("resample"), "bicubic")
    keep = {"mean": tuple(data["image_mean"]), "std": tuple(data["image_std"])} if "image_mean" in data else {}
    return Preprocessing.for_model(model.cfg, interpolation=resample, crop_pct=1.0, **keep)


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
        found = next((local / name for name in HUB_WEIGHTS if (local / name).is_file()), None)
        if found is None:
            raise FileNotFoundError(
                f"{local} has no {' or '.join(HUB_WEIGHTS)} (expected a folder written by save_pretrained)"
            )
        return found, local / CONFIG
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
    weights, config = hub_files(repo, cache_dir, revision)
    if config is not None:  # a transformers repository keeps its preprocessing beside its config
        hub_extra(repo, "preprocessor_config.json", cache_dir, revision)
    return weights, config


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

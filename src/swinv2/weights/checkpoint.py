"""Reading and writing weight files safely, and loading any known layout into a model.

Only safetensors and ``torch.load(weights_only=True)`` are used: a checkpoint from a stranger cannot run
code here. Loading adapts what can be adapted (a new head for another class count, position tables for
another window, patch embedding for another channel count) and reports the rest by key name.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..layers.position import resize_position_table
from .convert import convert_state_dict

log = logging.getLogger("swinv2")
PRETRAINING_ONLY = ("mask_token", "decoder.")


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and string metadata from a ``.safetensors`` file or a weights-only torch pickle (a run or
    ``save_pretrained`` folder stands for its ``model.safetensors``)."""
    path = Path(path)
    if path.is_dir():
        if not (path / "model.safetensors").is_file():
            raise FileNotFoundError(f"{path} is a folder without model.safetensors (expected a run's weights)")
        path = path / "model.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        return _read_safetensors(path, lambda f: ({k: f.get_tensor(k) for k in f.keys()}, _metadata(f)))  # noqa: SIM118
    _torch_format(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # an unpickler refusal, a truncated file
        reason = str(exc).split("Re-running `torch.load`")[0].split("\n")[0].strip()[:300]  # not its unsafe advice
        raise ValueError(
            f"{path} could not be read as a weights-only checkpoint ({type(exc).__name__}: {reason}). "
            "Only tensors and plain containers are accepted; convert trusted files to .safetensors."
        ) from exc
    if not isinstance(obj, dict):
        raise ValueError(f"{path} holds a {type(obj).__name__}, expected a state dict")
    return obj, {}


def _read_safetensors(path: Path, read):
    """``read(handle)`` on an open ``.safetensors`` file; a damaged one is named."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return read(f)
    except SafetensorError as exc:  # a bad header, offsets past the end, a truncated file
        raise ValueError(f"{path} is not a valid safetensors file ({exc})") from exc


def _metadata(handle) -> dict[str, str]:
    return dict(handle.metadata() or {})


def _torch_format(path: Path) -> str:
    """``"zip"`` (torch's format) or ``"pickle"`` (a legacy one) from the file's first bytes; ``ValueError``
    for anything else."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head[:1] == b"\x80":
        return "pickle"
    raise ValueError(
        f"{path} is not a checkpoint (expected a .safetensors file, a PyTorch .pt / .pth / .bin state "
        "dict or a run folder)"
    )


def checkpoint_metadata(path: str | os.PathLike) -> dict[str, str]:
    """A ``.safetensors`` file's string metadata, read from its header alone (other checkpoints have none;
    a file that is no checkpoint is named so)."""
    path = Path(path)
    if path.suffix != ".safetensors":
        _torch_format(path)
        return {}
    return _read_safetensors(path, _metadata)


def checkpoint_skeleton(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A checkpoint's tensors as meta tensors (names, shapes, dtypes) without reading their data: the
    safetensors header, or a zip-format torch file memory-mapped (weights-only). What a model built from an
    untrusted config is checked against before anything is allocated."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return _read_safetensors(path, lambda f: {k: _meta(f.get_slice(k)) for k in f.keys()})  # noqa: SIM118
    if _torch_format(path) == "pickle":  # a legacy pickle cannot be memory-mapped: read it (no more than it holds)
        tensors, _ = read_checkpoint(path)
    else:
        try:
            tensors = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as exc:
            raise ValueError(f"{path} could not be read as a weights-only checkpoint ({type(exc).__name__})") from exc
    from .convert import unwrap

    return {k: torch.empty(v.shape, dtype=v.dtype, device="meta") for k, v in unwrap(tensors).items()}


_SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def _meta(view) -> torch.Tensor:
    dtype = _SAFETENSORS_DTYPES.get(view.get_dtype(), torch.float32)
    return torch.empty(view.get_shape(), dtype=dtype, device="meta")


def check_shapes(own: dict[str, torch.Tensor], incoming: dict[str, torch.Tensor], what: str) -> None:
    """``ValueError`` naming every key whose presence or shape differs (dtypes may: loading casts them)."""
    problems = [f"missing {k}" for k in own if k not in incoming]
    problems += [f"unexpected {k}" for k in incoming if k not in own]
    problems += [
        f"{k} {tuple(incoming[k].shape)} in the file, {tuple(own[k].shape)} in the model"
        for k in own.keys() & incoming.keys()
        if incoming[k].shape != own[k].shape
    ]
    if problems:
        more = f" (+{len(problems) - 8} more)" if len(problems) > 8 else ""
        raise ValueError(f"{what}: {'; '.join(sorted(problems)[:8])}{more}")


def save_weights(
    model: nn.Module,
    path: str | os.PathLike,
    metadata: dict[str, str] | None = None,
    tensors: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write a model's tensors (and its config, for SwinV2 models) to ``.safetensors``, atomically.

    ``tensors`` replaces ``model.state_dict()`` (the full weights of a sharded model, gathered).
    """
    meta = {"format": "swinv2"}
    cfg = getattr(model, "cfg", None)
    if cfg is not None:
        meta["config"] = json.dumps(cfg.to_dict())
    meta.update(metadata or {})
    write_safetensors(model.state_dict() if tensors is None else tensors, path, meta)


def write_safetensors(tensors: dict[str, torch.Tensor], path: str | os.PathLike, metadata: dict[str, str]) -> None:
    from safetensors.torch import save_file

    path = Path(path)
    make_parent(path)
    tmp = path.with_name(path.name + ".tmp")
    check_writable(path)
    save_file({k: v.detach().contiguous().clone() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def write_json(path: Path, obj: dict) -> None:
    """Atomically: temp file, fsync, rename."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(json.dumps(obj, indent=2) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def check_writable(path: str | os.PathLike) -> None:
    """Open ``path`` for writing once, so a place no file can go fails with Python's ``OSError`` naming it
    (safetensors' and PyTorch's writers raise their own errors, without the path), and before the work
    whose result would go there. A file that was not there before is removed again."""
    path = Path(path)
    existed = path.exists()
    with open(path, "ab"):
        pass
    if not existed:
        path.unlink()


def make_parent(path: str | os.PathLike) -> None:
    """Create the folder ``path`` goes in; ``NotADirectoryError`` naming the file standing where a folder
    is needed (mkdir's own error says only "File exists")."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocking = next((p for p in reversed(path.parents) if p.exists() and not p.is_dir()), path.parent)
        raise NotADirectoryError(f"cannot write {path}: {blocking} is a file, expected a folder") from None


@dataclass
class LoadReport:
    """What happened to each key when a checkpoint was loaded into a model."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self) -> str:
        parts = [
            f"{name}: {', '.join(keys[:6])}{' ...' if len(keys) > 6 else ''} ({len(keys)})"
            for name, keys in vars(self).items()
            if keys
        ]
        return "; ".join(parts) or "all keys loaded"


def _adapt(key: str, value: torch.Tensor, target: torch.Tensor, report: LoadReport) -> torch.Tensor | None:
    """``value`` reshaped for the model where the change is meaningful, else None (mis-shaped)."""
    if key.endswith("rel_pos.table") and value.shape[1] == target.shape[1]:
        old, new = _table_window(value.shape[0]), _table_window(target.shape[0])
        if old and new:
            report.adapted.append(f"{key} (window {old} -> {new}, bicubic)")
            return resize_position_table(value, old, new)
    if key == "patch_embed.proj.weight" and value.shape[0] == target.shape[0] and value.shape[2:] == target.shape[2:]:
        c_old, c_new = value.shape[1], target.shape[1]
        # Same response to a grey image whichever way the channels go (timm's input-conv adaptation).
        adapted = value.sum(1, keepdim=True).repeat(1, c_new, *(1,) * (value.dim() - 2)) / c_new
        report.adapted.append(f"{key} (the checkpoint's {c_old} -> {c_new} input channels)")
        return adapted
    return None


def _table_window(length: int) -> tuple[int, int] | None:
    side = math.isqrt(length)
    return ((side + 1) // 2,) * 2 if side * side == length and side % 2 else None


def load_state_dict_into(model: nn.Module, state_dict: dict[str, torch.Tensor], strict: bool = False) -> LoadReport:
    """Load a state dict already in this project's layout, adapting heads, tables and input channels.

    Every tensor's shape and kind (floating point or not) is checked before anything is copied; with
    ``strict`` a checkpoint that does not fit raises ``ValueError`` and the model is left untouched.
    """
    report = LoadReport()
    own = model.state_dict()
    kept = {}
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            report.mismatched.append(f"{key} ({type(value).__name__}, not a tensor)")
        elif key.startswith(PRETRAINING_ONLY) and key not in own:
            report.ignored.append(key)
        elif key not in own:
            report.unexpected.append(key)
        elif value.is_floating_point() != own[key].is_floating_point():
            report.mismatched.append(f"{key} dtype {value.dtype} vs {own[key].dtype}")
        elif own[key].shape == value.shape:
            kept[key] = value
        elif key.startswith("head."):
            report.adapted.append(
                f"{key} (re-created for {own[key].shape[0]} classes; the checkpoint has {value.shape[0]})"
            )
        elif (adapted := _adapt(key, value, own[key], report)) is not None:
            kept[key] = adapted
        else:
            report.mismatched.append(f"{key} {tuple(value.shape)} vs {tuple(own[key].shape)}")
    head_recreated = any(a.startswith("head.") for a in report.adapted)
    not_loaded = {m.split(" ")[0] for m in report.mismatched}  # reported once, as mis-shaped
    report.missing = [
        k for k in own if k not in kept and k not in not_loaded and not (head_recreated and k.startswith("head."))
    ]
    if strict and not report.clean:
        raise ValueError(f"checkpoint does not match the model: {report.summary()}")
    model.load_state_dict(kept, strict=False)
    return report


def refuse_partial_start(
    report: LoadReport, pretrained: str | os.PathLike, model: str, may_lack: tuple[str, ...] = ()
) -> None:
    """A run starts from the whole of ``pretrained`` or not at all: ``ValueError`` when some of the model's
    weights would keep their random values (missing or mis-shaped keys, beyond the prefixes in ``may_lack``)
    or part of the file's network has no place in the model (a deeper model's blocks). Training on would
    silently waste the pretraining; SimMIM's decoder and a classifier head are the only parts left out."""
    missing = [k for k in report.missing if not k.startswith(may_lack)]
    unused = [k for k in report.unexpected if not k.startswith((*PRETRAINING_ONLY, "head."))]
    if not (missing or report.mismatched or unused):
        return
    tables = any(k.endswith(("rel_pos.table", "relative_position_bias_table")) for k in report.unexpected)
    v1 = tables and any(k.endswith("logit_scale") for k in missing)
    hint = "Learned bias tables and no logit scales: Swin Transformer V1 weights, which SwinV2 cannot start from. "
    raise ValueError(
        f"{pretrained} does not fit {model}: {len(missing) + len(report.mismatched)} of the model's tensors would "
        f"keep random values and {len(unused)} of the file's would go unused. {hint if v1 else ''}Give the "
        f"--model the weights were trained as (`swinv2 models` lists them). Load report: {report.summary()}"
    )


def check_compatible(own: dict[str, torch.Tensor], incoming: dict[str, object], what: str) -> None:
    """``ValueError`` naming every key whose presence, shape or dtype differs (before any copy)."""
    problems = [f"missing {k}" for k in own if k not in incoming]
    problems += [f"unexpected {k}" for k in incoming if k not in own]
    for key in own.keys() & incoming.keys():
        value, mine = incoming[key], own[key]
        if not isinstance(value, torch.Tensor):
            problems.append(f"{key} is a {type(value).__name__}")
        elif value.shape != mine.shape or value.dtype != mine.dtype:
            problems.append(f"{key} {tuple(value.shape)} {value.dtype} vs {tuple(mine.shape)} {mine.dtype}")
    if problems:
        more = f" (+{len(problems) - 8} more)" if len(problems) > 8 else ""
        raise ValueError(f"{what} does not fit this model: {'; '.join(sorted(problems)[:8])}{more}")


def load_pretrained(
    model: nn.Module, path: str | os.PathLike, source: str = "auto", strict: bool = False
) -> LoadReport:
    """Read ``path`` (any known layout), convert, adapt and load it into ``model``; log what did not fit."""
    tensors, _ = read_checkpoint(path)
    return load_converted(model, tensors, source, strict, name=str(path))


def load_converted(
    model: nn.Module, tensors: dict[str, torch.Tensor], source: str = "auto", strict: bool = False, name: str = ""
) -> LoadReport:
    """Convert tensors of any known layout, load them with :func:`load_state_dict_into`, log the report."""
    report = load_state_dict_into(model, convert_state_dict(tensors, source), strict=strict)
    (log.info if report.clean else log.warning)("loaded %s: %s", name or "checkpoint", report.summary())
    return report

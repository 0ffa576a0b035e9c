"""Export a classifier to ONNX, TorchScript or a torch.export program, and check it against PyTorch.

ONNX goes through PyTorch's torch.export-based exporter (opset 18 by default): the shifted-window
``torch.roll``, the padding and the attention masks are traced as graph operations, and the batch
dimension stays dynamic. Each export is re-loaded and run (ONNX in onnxruntime) at several batch sizes
on the same random images as the PyTorch model; the command fails when the outputs differ by more than
the tolerance. The preprocessing, class names and model config travel inside the file.

An opset outside what the installed onnx / onnxscript can write is refused before anything is exported.
TorchScript files refuse inputs of another size (the traced window geometry would give wrong logits);
ONNX and torch.export files already refuse them through their static image dimensions, unless exported
with ``dynamic``: then one file takes every size, computing the window padding, clipping, shifts and masks
in its graph.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..models.config import to_pair
from ..models.preprocess import model_preprocessing
from ..weights.checkpoint import check_writable, make_parent
from ..weights.saving import description

FORMATS = ("onnx", "torchscript", "export")
OPSET_MIN = 17  # LayerNormalization; the exporter writes 18 and converts to the asked opset


@dataclass
class Parity:
    """Exported model against PyTorch on one batch of random images."""

    batch: int
    max_diff: float
    mean_diff: float
    size: tuple[int, int] | None = None  # (H, W) where it is not the model's own

    def line(self) -> str:
        at = f" at {self.size[0]} x {self.size[1]}" if self.size else ""
        return f"batch {self.batch}{at}: max |diff| {self.max_diff:.2e}, mean |diff| {self.mean_diff:.2e}"


# Sizes a --dynamic file is checked at besides the model's own: odd, non-square and larger (images), each
# at every batch size asked for; video clips are checked at other spatial sizes of their frame count.
DYNAMIC_CHECK_SIZES = ((97, 130), (192, 320))


def export_model(
    model: nn.Module,
    fmt: str,
    output: str | os.PathLike,
    opset: int = 18,
    batches: tuple[int, ...] = (1, 3),
    seed: int = 0,
    dynamic: bool = False,
) -> list[Parity]:
    """Write ``model`` (eval mode, its configured image size; video models at their frame count too) as
    ``fmt`` to ``output`` and return the parity with PyTorch at each batch size in ``batches``.

    ``dynamic`` (ONNX and torch.export): one file for every batch, height and width (and clip length),
    whose window geometry is computed in the graph (:mod:`swinv2.layers.symbolic_windows`); it is also
    checked at :data:`DYNAMIC_CHECK_SIZES`."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    if dynamic and fmt == "torchscript":
        raise ValueError("TorchScript traces one image size: export --dynamic as onnx or export")
    if fmt == "onnx":
        check_opset(opset)
    model = model.eval()
    output = Path(output)
    make_parent(output)
    check_writable(output)
    example = _images(model, 2, seed)  # batch 2: tracing at 1 would specialise the batch dimension to 1
    info = {
        k: json.dumps(v)
        for k, v in {**description(model, model_preprocessing(model)), "dynamic_sizes": dynamic}.items()
    }
    if fmt == "onnx":
        _export_onnx(model, example, output, opset, info, dynamic)
        run = _onnx_runner(output)
    elif fmt == "torchscript":
        with torch.no_grad():
            traced = torch.jit.trace(model, example, check_trace=False)
        fixed = torch.jit.script(FixedSize(traced, list(example.shape[1:])).eval())  # eval: freezable
        torch.jit.save(fixed, str(output), _extra_files=info)
        loaded = torch.jit.load(str(output))
        run = lambda x: loaded(x)  # noqa: E731
    else:
        program = _program(model, example, dynamic)
        torch.export.save(program, output, extra_files=info)
        loaded = torch.export.load(output).module()
        run = lambda x: loaded(x)  # noqa: E731
    sizes = [None, *(DYNAMIC_CHECK_SIZES if dynamic else ())]
    return [parity_at(model, run, b, seed, size) for size in sizes for b in batches]


def _program(model: nn.Module, example: torch.Tensor, dynamic: bool) -> torch.export.ExportedProgram:
    """torch.export of ``model`` with a dynamic batch, and with ``dynamic`` every other axis but channels
    dynamic too. Some shape facts of the traced geometry hold for every size but are beyond the tracer's
    proofs (that a padded size rounded up is not below the size, say): they become runtime checks in the
    program instead of errors at export, and size-1 axes are not treated as special."""
    if not dynamic:
        batch = torch.export.Dim("batch", min=1, max=4096)
        return torch.export.export(model, (example,), dynamic_shapes={"x": {0: batch}})
    import torch.fx.experimental._config as shape_config

    axes = {i: torch.export.Dim.DYNAMIC for i in range(example.dim()) if i != 1}
    with shape_config.patch(backed_size_oblivious=True):
        return torch.export.export(
            model, (example,), dynamic_shapes={"x": axes}, prefer_deferred_runtime_asserts_over_guards=True
        )


class FixedSize(nn.Module):
    """A traced model that refuses inputs of another size than it was traced at: the window padding,
    clipping, shifts and masks are constants of the trace, so another size would run and give wrong
    logits. Scripted, so the check survives in the saved file; the batch dimension stays free. The traced
    model is its ``model`` submodule (state-dict keys ``model.*``)."""

    def __init__(self, traced: nn.Module, shape: list[int]) -> None:
        super().__init__()
        self.model = traced
        self.shape = shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if list(x.shape[1:]) != self.shape:
            dims = ", ".join([str(d) for d in self.shape])
            raise ValueError(
                f"this TorchScript file was exported for inputs (B, {dims}), got {list(x.shape)}: "
                "resize the input, or re-export with `swinv2 export --img-size`"
            )
        return self.model(x)


def onnx_opsets() -> tuple[int, int]:
    """The opsets the installed exporter can write: from the higher of :data:`OPSET_MIN` and the oldest the
    onnxscript version converter handles to the lower of onnx's newest opset and the newest it handles
    (outside them, conversion fails and the exporter writes its own opset 18, or an older stack writes a
    file onnx cannot check)."""
    try:
        import onnx
    except ImportError as exc:
        raise ImportError("onnx is not installed: pip install 'swinv2[deploy]'") from exc
    oldest, newest = OPSET_MIN, onnx.defs.onnx_opset_version()
    try:
        from onnxscript.version_converter import _version_converter

        oldest = max(oldest, _version_converter.SUPPORTED_MIN_ONNX_OPSET)
        newest = min(newest, _version_converter.SUPPORTED_MAX_ONNX_OPSET)
    except (ImportError, AttributeError):  # an onnxscript without the constants: onnx's bounds alone
        pass
    return oldest, newest


def check_opset(opset: int) -> None:
    """Refuse an opset the installed exporter cannot write, before exporting (which takes a while)."""
    low, high = onnx_opsets()
    if not low <= opset <= high:
        raise ValueError(
            f"ONNX opset {opset} is outside what the installed exporter writes: {low} to {high} "
            f"(--opset; bounds from onnx / onnxscript's version converter, and {OPSET_MIN} for LayerNormalization)"
        )


def _images(model: nn.Module, batch: int, seed: int, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Random inputs of the model's size (or ``size``): ``(B, C, H, W)`` images, or ``(B, C, T, H, W)`` clips."""
    cfg = model.cfg
    frames = (cfg.num_frames,) if hasattr(cfg, "num_frames") else ()
    shape = (batch, cfg.in_chans, *frames, *(size or to_pair(cfg.img_size)))
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed + batch))


@torch.no_grad()
def parity_at(model: nn.Module, run, batch: int, seed: int, size: tuple[int, int] | None = None) -> Parity:
    """``run`` (an exported model's runner) against ``model`` on one batch of random inputs at ``size``."""
    images = _images(model, batch, seed, size)
    expected = model(images)
    got = torch.as_tensor(run(images))
    diff = (got - expected).abs()
    return Parity(batch, float(diff.max()), float(diff.mean()), tuple(images.shape[-2:]) if size else None)


def _export_onnx(model: nn.Module, example: torch.Tensor, output: Path, opset: int, info: dict, dynamic: bool) -> None:
    import onnx

    try:
        torch.onnx.export(
            _program(model, example, dynamic),
            (example,),
            str(output),
            dynamo=True,
            opset_version=opset,
            input_names=["images"],
            output_names=["logits"],
            verbose=False,
        )
    except BaseException:  # no partial file left behind
        output.unlink(missing_ok=True)
        raise
    proto = onnx.load(str(output))
    written = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if written != opset:  # the exporter falls back to its own opset when converting to the asked one fails
        output.unlink()
        raise ValueError(f"asked for ONNX opset {opset}, the exporter wrote {written}: export with --opset {written}")
    onnx.helper.set_model_props(proto, {f"swinv2.{k}": v for k, v in info.items()})
    onnx.save(proto, str(output))


def _onnx_runner(path: Path):
    session = onnx_session(path)
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x.numpy()})[0]


def onnx_session(path: str | os.PathLike, threads: int | None = None):
    """An onnxruntime CPU session for ``path``: ``FileNotFoundError`` / ``ValueError`` naming the path when
    it is missing or not a model onnxruntime loads (the CLI prints those as one line, not a traceback),
    ``ImportError`` naming the extra when onnxruntime is missing."""
    path = Path(path)
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "no such file"
        raise FileNotFoundError(f"{path}: {what} (expected an .onnx file written by `swinv2 export`)")
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise ImportError("onnxruntime is not installed: pip install 'swinv2[deploy]'") from exc
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's InvalidProtobuf, InvalidGraph, Fail... derive from Exception only
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(
            f"{path} is not an ONNX model onnxruntime can load (expected an .onnx file written by "
            f"`swinv2 export`): {reason}"
        ) from exc


def onnx_metadata(path: str | os.PathLike) -> dict:
    """What :func:`export_model` stored in an ONNX file: architecture, config, preprocessing, classes."""
    session = onnx_session(path)
    props = session.get_modelmeta().custom_metadata_map
    return {k.removeprefix("swinv2."): json.loads(v) for k, v in props.items() if k.startswith("swinv2.")}

"""Which library runs a CPU linear-layer product: oneDNN or PyTorch's own (MKL / OpenBLAS), by measured
speed on this machine.

Neither wins everywhere: on AMD Zen 5 oneDNN's fp32 products were the faster ones; on an Intel Xeon, and
with oneDNN and MKL held to AVX2, the two tied in the forward pass and oneDNN's weight gradients were the
slower ones (docs/results.md has the per-product tables). So the first time a product of a new shape runs, both
libraries compute it on the real operands, the faster one (oneDNN only when it beats PyTorch by more
than :data:`MARGIN`) is kept for that shape and returns the result, and the choice is remembered:

- in this process, and
- in a file of the user's cache folder (``SWINV2_CACHE`` or ``$XDG_CACHE_HOME/swinv2``), one per CPU,
  PyTorch version, ISA setting and thread count, written under a file lock.

The file makes later processes, and concurrent ones (ranks of a job, test workers), run the kernels the
first measurement chose. That is what keeps a resumed run bit for bit equal to an uninterrupted one: the
two libraries round differently. ``SWINV2_KERNEL_CHOICES=off`` keeps choices in memory only.

A shape is ``(kind, dtype, tokens rounded up to a power of two, in features, out features)``; the kinds are
``infer`` and ``infer_gelu`` (no autograd; oneDNN fuses GELU into the second), ``forward``, ``input_grad``
and ``weight_grad`` (fp32 training).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

ONEDNN, PYTORCH = "onednn", "pytorch"
MARGIN = 0.05  # oneDNN is chosen only when it is this much faster: closer calls are noise on a shared machine
TIMED_CALLS = 3  # per library, alternating, the fastest call counts (the first pays kernel set-up)
ENV_FILE = "SWINV2_KERNEL_CHOICES"

Candidates = dict[str, Callable[[], torch.Tensor | None]]


def shape_key(kind: str, dtype: torch.dtype, tokens: int, features_in: int, features_out: int) -> str:
    """The choice that a ``kind`` product of a linear layer (``features_in -> features_out`` over ``tokens``)
    shares with others: tokens are rounded up to a power of two (at least 64)."""
    bucket = 1 << max(6, (tokens - 1).bit_length())
    return f"{kind}|{str(dtype).removeprefix('torch.')}|{bucket}|{features_in}|{features_out}"


class KernelChoices:
    """Measured choices per shape, read from and written to ``path`` (None: this process only)."""

    def __init__(self, path: Path | None):
        self.path = path
        self.choices: dict[str, str] | None = None  # read on first use
        self.measured = 0  # choices this process made itself (the rest came from the file)
        self._lock = threading.Lock()

    def pick(self, key: str, candidates: Candidates) -> tuple[str, torch.Tensor | None]:
        """The library chosen for ``key``, and its output where it was measured just now (else None)."""
        choices = self._loaded()
        if key in choices:
            return choices[key], None
        with self._lock, self._file_lock():
            choices.update(self._read())  # another process may have chosen meanwhile
            if key in choices:
                return choices[key], None
            name, out = measure(candidates)
            choices[key] = name
            self.measured += 1
            self._write(choices)
            return name, out

    def _loaded(self) -> dict[str, str]:
        if self.choices is None:
            self.choices = self._read()
        return self.choices

    def _read(self) -> dict[str, str]:
        if self.path is None:
            return {}
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):  # missing, being replaced, or damaged: measure again
            return {}
        choices = data.get("choices", {}) if isinstance(data, dict) else {}
        return {k: v for k, v in choices.items() if v in (ONEDNN, PYTORCH)}

    def _write(self, choices: dict[str, str]) -> None:
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"machine": machine(), "choices": choices}, indent=1, sort_keys=True))
            tmp.replace(self.path)  # atomic: readers see the old file or the new one
        except OSError:  # a read-only cache: choices stay in this process
            self.path = None

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        if self.path is None:
            yield
            return
        try:
            import fcntl

            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(self.path.with_name(self.path.name + ".lock"), "a")  # noqa: SIM115 (held while locked)
        except (ImportError, OSError):
            yield
            return
        with handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def measure(candidates: Candidates) -> tuple[str, torch.Tensor | None]:
    """Run each candidate :data:`TIMED_CALLS` times, alternating; the faster one and its last output. A
    candidate that returns None (a kernel that failed on this machine) loses."""
    best = dict.fromkeys(candidates, float("inf"))
    outputs: dict[str, torch.Tensor | None] = {}
    for _ in range(TIMED_CALLS):
        for name, run in candidates.items():
            start = time.perf_counter()
            out = run()
            elapsed = time.perf_counter() - start
            outputs[name] = out
            if out is not None:
                best[name] = min(best[name], elapsed)
    chosen = ONEDNN if best[ONEDNN] < (1 - MARGIN) * best[PYTORCH] else PYTORCH
    return chosen, outputs[chosen]


def machine() -> dict:
    """What a choice depends on: the CPU, PyTorch, the ISA limits a user can set, the thread count."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    limits = {
        k: os.environ.get(k, "") for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")
    }
    return {
        "cpu": cpu,
        "capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        **limits,
    }


def choices_path() -> Path | None:
    """This machine's file of choices, or None where ``SWINV2_KERNEL_CHOICES=off``."""
    if os.environ.get(ENV_FILE, "").lower() in ("off", "0", "none"):
        return None
    root = os.environ.get("SWINV2_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "swinv2"
    )
    digest = hashlib.sha256(json.dumps(machine(), sort_keys=True).encode()).hexdigest()[:16]
    return Path(root) / "cpu_kernels" / f"{digest}.json"


_choices: dict[tuple, KernelChoices] = {}


def kernel_choices() -> KernelChoices:
    """The choices of this process, for its current thread count and environment."""
    key = (torch.get_num_threads(), os.environ.get(ENV_FILE), os.environ.get("SWINV2_CACHE"))
    if key not in _choices:
        _choices[key] = KernelChoices(choices_path())
    return _choices[key]

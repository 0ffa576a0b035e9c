"""How a command's failure reaches the user: one ``swinv2 CMD: error: ...`` line and exit code 2 for
everything a user can fix (bad input, missing files, out of memory), 130 for Ctrl-C; a traceback only
for what is a bug."""

from __future__ import annotations

import argparse
import os
import sys

from ..errors import NonFiniteLossError, RankLostError

USER_ERRORS = (
    ValueError,
    NonFiniteLossError,
    RankLostError,
    OSError,  # missing files, permissions, a full disk, a read-only or special file system
)


def run_command(args: argparse.Namespace) -> int:
    """``args.func(args)``, its expected failures reported in one line."""
    try:
        return args.func(args)
    except USER_ERRORS as exc:
        if isinstance(exc, BrokenPipeError):  # `swinv2 models | head`: the reader has what it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
            return 0
        print(f"swinv2 {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        resume = " (a run resumes from its last checkpoint with --resume DIR)" if hasattr(args, "resume") else ""
        print(f"swinv2 {args.command}: interrupted{resume}", file=sys.stderr)
        return 130
    except (RuntimeError, MemoryError) as exc:
        if not out_of_memory(exc):
            raise
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        print(f"swinv2 {args.command}: error: out of memory ({first}); {memory_remedies(args)}", file=sys.stderr)
        return 2


def memory_remedies(args: argparse.Namespace) -> str:
    """The flags of this command that lower its memory."""
    flags = [f"--{n.replace('_', '-')}" for n in ("batch_size", "img_size", "size", "test_size") if hasattr(args, n)]
    savers = [f"--{n.replace('_', '-')}" for n in ("grad_checkpointing", "sequential_attention") if hasattr(args, n)]
    text = f"a smaller {' or '.join(flags)} needs less" if flags else "smaller inputs need less"
    return text + (f", as do the memory savers ({', '.join(savers)})" if savers else "")


def out_of_memory(exc: BaseException) -> bool:
    """An allocation failure of the host (PyTorch's CPU allocator, numpy) or of a GPU."""
    text = str(exc)
    return isinstance(exc, MemoryError) or "can't allocate memory" in text or "out of memory" in text.lower()

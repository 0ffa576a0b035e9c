"""Errors a run raises on purpose, importable without torch (the CLI maps them to messages)."""


class NonFiniteLossError(RuntimeError):
    """Training produced NaN or Inf; the run stopped with its last good checkpoint intact."""

"""Errors a run raises on purpose, importable without torch (the CLI maps them to messages)."""


class NonFiniteLossError(RuntimeError):
    """Training produced NaN or Inf; the run stopped with its last good checkpoint intact."""


class RankLostError(RuntimeError):
    """A collective of a distributed run failed or timed out: another rank died or hung."""

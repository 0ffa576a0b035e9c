"""The ``swinv2`` command line: one module per command group, flags shared through :mod:`.common`."""

from .main import build_parser, main

__all__ = ["build_parser", "main"]

"""``swinv2 <command>``: a thin layer that parses arguments and calls library functions. Each command
group registers its own subcommands."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from . import classify, dense, export, tools, video, weights
from .errors import run_command

GROUPS = (weights, classify, export, tools, dense, video)  # the order of `swinv2 --help`


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="swinv2", description="Swin Transformer V2 on PyTorch.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    return run_command(args)


if __name__ == "__main__":
    sys.exit(main())

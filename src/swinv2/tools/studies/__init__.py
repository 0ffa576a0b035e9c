"""The paper's experiments in miniature, on real data (``swinv2 study NAME --output DIR``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from ...weights.checkpoint import write_json


def write_results(out: Path, results: dict, table: str, plot: Callable[[dict, Path], Path], png: str) -> None:
    """A study's outputs: ``results.json``, ``results.md`` and the plot; the table and a one-line JSON summary
    (lists left out) printed."""
    write_json(out / "results.json", results)
    (out / "results.md").write_text(table)
    plot(results, out / png)
    print(table)
    print(json.dumps({k: v for k, v in results.items() if not isinstance(v, (list, dict))}))

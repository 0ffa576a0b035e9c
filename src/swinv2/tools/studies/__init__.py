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


def spread(values: list[float]) -> dict:
    """Mean, sample standard deviation (0 for one value) and the values of one cell over the seeds."""
    import statistics

    values = [float(v) for v in values]
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "std": std, "n": len(values), "values": values}


def mean_std(cell: dict, digits: int = 2) -> str:
    """``mean ± std`` (the mean alone for one seed)."""
    if cell["n"] == 1:
        return f"{cell['mean']:.{digits}f}"
    return f"{cell['mean']:.{digits}f} ± {cell['std']:.{digits}f}"


def verdict(a: dict, b: dict) -> str:
    """Whether ``a`` and ``b`` differ: only when their means are further apart than their spreads together
    (the sum of the two standard deviations); with one seed each, nothing can be told from noise."""
    if a["n"] < 2 or b["n"] < 2:
        return "one seed: noise unknown"
    gap = a["mean"] - b["mean"]
    if abs(gap) <= a["std"] + b["std"]:
        return "within noise"
    return "higher" if gap > 0 else "lower"


def seed_list(seeds: int) -> list[int]:
    """Seeds 0 .. ``seeds`` - 1; at least one."""
    if seeds < 1:
        raise ValueError(f"--seeds takes the number of seeds, at least 1; got {seeds}")
    return list(range(seeds))

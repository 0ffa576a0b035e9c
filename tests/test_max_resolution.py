"""The largest-trainable-side search of ``swinv2 bench-max-res``: its bracket logic on a known memory curve,
and real training steps of a tiny model on the CPU against a memory cap."""

from __future__ import annotations

import pytest

from swinv2.cli import main
from swinv2.tools.max_resolution import Trial, largest_resolution, search

GIB = 2**30


def _curve(a: float, b: float, capacity: float, calls: list[int]):
    """A device whose step at ``side`` needs ``a + b * side**2`` bytes."""

    def measure(side: int) -> Trial:
        calls.append(side)
        peak = a + b * side**2
        return Trial(side, peak <= capacity, peak / GIB, 0.0)

    return measure


@pytest.mark.parametrize("start", [256, 1024, 8192])
def test_search_brackets_the_true_limit_in_few_trials(start):
    a, b, capacity, step = 3 * GIB, 4e-6 * GIB, 80 * GIB, 256
    calls: list[int] = []
    trials = search(_curve(a, b, capacity, calls), capacity, step, start, budget_s=60)
    truth = max(s for s in range(step, 20000, step) if a + b * s**2 <= capacity)  # 4352 for this curve
    fit = max(t.side for t in trials if t.fits)
    fail = min(t.side for t in trials if not t.fits)
    assert (fit, fail) == (truth, truth + step)
    assert all(s % step == 0 for s in calls)
    assert len(calls) <= 6, calls


def test_search_stops_at_the_time_budget():
    calls: list[int] = []
    search(_curve(0, 1e-6 * GIB, 80 * GIB, calls), 80 * GIB, 256, 1024, budget_s=0)
    assert calls == [1024]


def test_tiny_model_on_cpu_fits_below_the_cap_and_not_above():
    result = largest_resolution(
        "swinv2_test_window4_32", savers=("none", "checkpointing"), device="cpu", capacity_gib=0.03,
        step=32, start=64, budget_s=60,
    )  # fmt: skip
    sides = {}
    for row in result["rows"]:
        assert row["bracketed"], row
        by_side = {t["side"]: t for t in row["trials"]}
        assert by_side[row["largest_side"]]["peak_gib"] <= 0.03 < by_side[row["first_failing_side"]]["peak_gib"]
        sides[row["savers"]] = row["largest_side"]
    assert sides["checkpointing"] > sides["none"]  # recomputing activations buys resolution


def test_cli_rejects_unknown_saver_sets_and_a_cpu_run_without_a_cap(capsys):
    base = ["bench-max-res", "--model", "swinv2_test_window4_32", "--device", "cpu"]
    assert main([*base, "--savers", "none,zram"]) == 2
    assert "unknown saver set(s) ['zram']" in capsys.readouterr().err
    assert main([*base, "--savers", "none"]) == 2
    assert "capacity_gib is required" in capsys.readouterr().err


def test_cli_fails_when_no_side_fits_under_the_cap(capsys):
    """A cap below the smallest step's needs is a failed search, not a result of 0 px."""
    args = ["--model", "swinv2_test_window4_32", "--device", "cpu", "--savers", "none", "--capacity-gib", "1e-6"]
    assert main(["bench-max-res", *args, "--step", "32", "--start", "64", "--budget-s", "30"]) == 1
    out, err = capsys.readouterr()
    assert "no side fitted" in out and "largest      0 px" not in out
    assert "no side fitted within the capacity, down to 32 px" in err and "--capacity-gib" in err

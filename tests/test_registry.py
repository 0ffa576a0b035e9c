"""The registry's recorded metadata is recomputed here, so it cannot drift from the code."""

from __future__ import annotations

import pytest

from swinv2 import list_models
from swinv2.models.flops import count_gflops, count_params
from swinv2.models.registry import get_entry, register

# The paper's parameter counts for 1000 classes (PAPER.md section 1) and GFLOPs where it gives them.
PAPER_PARAMS = {"tiny": 28.3e6, "small": 49.7e6, "base": 87.9e6, "large": 196.7e6, "huge": 658e6, "giant": 3.0e9}
PAPER_GFLOPS = {
    "swinv2_tiny_window8_256": 5.9,
    "swinv2_tiny_window16_256": 6.6,
    "swinv2_small_window8_256": 11.5,
    "swinv2_small_window16_256": 12.6,
    "swinv2_base_window8_256": 20.3,
    "swinv2_base_window16_256": 21.8,
    "swinv2_base_window12to24_192to384": 54.7,
    "swinv2_large_window12to16_192to256": 47.5,
    "swinv2_large_window12to24_192to384": 115.4,
}


@pytest.mark.parametrize("name", list_models())
def test_recorded_params_and_gflops_are_measured(name):
    entry = get_entry(name)
    assert count_params(entry.config) == entry.params
    assert count_gflops(entry.config) == pytest.approx(entry.gflops, abs=1e-3)


@pytest.mark.parametrize("size", PAPER_PARAMS)
def test_params_match_paper_within_1_5_percent(size):
    name = next(n for n in list_models(f"swinv2_{size}_*") if get_entry(n).config.num_classes == 1000)
    params = count_params(get_entry(name).config)
    print(f"{size}: {params:,} params vs paper {PAPER_PARAMS[size]:,.0f}")
    assert params == pytest.approx(PAPER_PARAMS[size], rel=0.015)


@pytest.mark.parametrize(("name", "paper"), PAPER_GFLOPS.items())
def test_gflops_match_paper_within_2_percent(name, paper):
    assert get_entry(name).gflops == pytest.approx(paper, rel=0.02)


def test_released_timm_names_are_registered():
    for size in ("tiny", "small", "base"):
        for window in (8, 16):
            assert f"swinv2_{size}_window{window}_256" in list_models()
    for size in ("base", "large"):
        for suffix in ("window12_192", "window12to16_192to256", "window12to24_192to384"):
            assert f"swinv2_{size}_{suffix}" in list_models()
    assert get_entry("swinv2_large_window12to24_192to384").config.pretrained_window_sizes == (12, 12, 12, 6)
    assert list_models("swinv2_huge_*") and list_models("swinv2_giant_*")
    assert get_entry("swinv2_giant_window12_192").config.depths == (2, 2, 42, 4)


def test_duplicate_names_are_refused():
    entry = get_entry("swinv2_tiny_window8_256")
    with pytest.raises(ValueError, match="already registered"):
        register(entry.name, entry.config, entry.params, entry.gflops)

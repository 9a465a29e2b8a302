"""Which serving variants `benchmarks/bench_serving.py` runs (BENCH_SERVING_VARIANTS)."""

import pytest

from benchmarks.bench_serving import QUICK_VARIANTS, VARIANTS, selected_variants


def test_every_variant_by_default_with_the_default_first():
    assert selected_variants("") == ["default", *[n for n in VARIANTS if n != "default"]]


def test_quick_mode_runs_the_main_switches_only():
    assert selected_variants("", quick=True) == ["default", "cache_off", "fast_redis_off"]
    assert set(QUICK_VARIANTS) <= set(VARIANTS)


def test_named_variants_win_over_quick_mode():
    assert selected_variants("hiredis_off", quick=True) == ["default", "hiredis_off"]


def test_named_variants_always_include_the_baseline():
    assert selected_variants("cache_off, hiredis_off") == ["default", "cache_off", "hiredis_off"]
    assert selected_variants("default") == ["default"]


def test_unknown_variant_is_a_clear_error():
    with pytest.raises(ValueError, match=r"unknown serving variants \['turbo'\]"):
        selected_variants("default,turbo")

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


def test_highest_rate_within_stops_at_the_first_rate_that_misses():
    from benchmarks.bench_serving import highest_rate_within

    def row(rate, p99, errors=0.0):
        return {"rate": rate, "p99": p99, "error_rate": errors}

    assert highest_rate_within([row(500, 3.0), row(300, 2.0), row(700, 9.9)]) == 700
    assert (
        highest_rate_within([row(300, 2.0), row(500, 11.0), row(700, 4.0)]) == 300
    )  # the ladder stopped at 500
    assert highest_rate_within([row(300, 2.0), row(500, 3.0, errors=0.001)]) == 300
    assert highest_rate_within([row(300, 10.5)]) is None
    assert highest_rate_within([row(300, 10.0)], p99_ms=10.0) == 300

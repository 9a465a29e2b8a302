from benchmarks.bench_faults import table


def test_the_faults_table_puts_expected_next_to_found():
    result = {
        "chaos": {
            "lines": 10_000,
            "events": 9_500,
            "malformed_lines": 500,
            "burst_before_redis_kill": 950,
            "faults": [{"fault": "SIGKILL job"}] * 5 + [{"fault": "SIGKILL redis-server"}],
            "bronze_rows": 9_500,
            "bronze_distinct_ids": 9_500,
            "quarantine_rows": 500,
            "feature_mismatches": [],
            "ok": True,
        },
        "poison": {
            "big_entry_mb": 64,
            "wide_events": 5_000,
            "wide_context_kb": 200,
            "normal_events": 100,
            "job_kept_running": True,
            "quarantine_reasons": {"context_too_large": 5_000, "oversize": 1},
            "bronze_rows": 100,
            "feature_mismatches": ["lr:s:trending:1h: {} != {'i0': 1.0}"],
            "seconds_publish_to_normal_counted": 41.5,
            "target_s": 30.0,
            "ok": False,
        },
        "partition": {
            "rate": 200,
            "seconds": {"before": 15.0, "frozen": 30.0, "after": 10.0},
            "redis_budget_ms": 100.0,
            "non_200": 0,
            "frozen_requests": 6_000,
            "frozen_degraded": 6_000,
            "latency_ms_frozen": {"p50": 101.2, "p99": 108.4, "p100": 131.0},
            "max_in_flight": 24,
            "seconds_thaw_to_first_non_degraded": 0.55,
            "ok": True,
        },
    }
    rows = table(result)["rows"]
    assert rows[0][1:] == [
        "10,000 lines, 500 of them malformed; job SIGKILLed 5x at random moments; redis-server SIGKILLed "
        "once after a burst of 950 publishes",
        "bronze rows / distinct ids; quarantine rows; speed-feature keys off the ground truth",
        "9,500 / 9,500; 500; 0",
        "9,500 / 9,500; 500; 0",
        True,
    ]
    assert rows[1][3:] == [
        "yes; oversize 1, context_too_large 5,000; 100; 0; <= 30",
        "yes; context_too_large 5,000, oversize 1; 100; 1; 41.5",
        False,
    ]
    assert rows[2][1:] == [
        "redis-server frozen (SIGSTOP) for 30 s under 200 requests/s to lambdarec serve",
        "non-200 answers; degraded answers while frozen; p99 / max ms while frozen; requests in flight at "
        "most; s from the thaw to the first non-degraded answer",
        "0; 6,000; max <= 200 (twice the Redis budget); bounded; <= 2",
        "0; 6,000; 108.4 / 131.0; 24; 0.55",
        True,
    ]

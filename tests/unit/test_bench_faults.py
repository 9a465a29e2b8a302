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
            "ok": False,
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

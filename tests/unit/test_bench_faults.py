from benchmarks.bench_faults import kill_plan, poison_reasons, table, uncommitted_data_files


def test_the_kill_plan_aims_the_second_and_fourth_kill():
    plan = kill_plan(5, [900, 40, 7_000, 3_000, 5_000])
    assert [(p["at"], p["failpoint"]) for p in plan] == [
        (40, None),
        (None, "bronze_write:0.5"),
        (900, None),
        (None, "redis_apply"),
        (3_000, None),
    ]
    assert [p["at"] for p in kill_plan(2, [5, 1])] == [None, None]


def test_data_files_no_commit_adds_are_uncommitted(tmp_path):
    log = tmp_path / "_delta_log"
    log.mkdir()
    (log / "00000000000000000000.json").write_text(
        '{"commitInfo": {}}\n{"add": {"path": "date=2026-11-01/part-0.parquet"}}\n'
    )
    (tmp_path / "date=2026-11-01").mkdir()
    for name in ("part-0.parquet", "part-1.parquet"):
        (tmp_path / "date=2026-11-01" / name).write_bytes(b"")
    assert uncommitted_data_files(tmp_path) == {"date=2026-11-01/part-1.parquet"}
    assert uncommitted_data_files(tmp_path / "missing") == set()


def test_the_faults_table_puts_expected_next_to_found():
    result = {
        "chaos": {
            "lines": 10_000,
            "events": 9_500,
            "malformed_lines": 500,
            "burst_before_redis_kill": 950,
            "faults": [
                {"fault": f}
                for f in [p["fault"] for p in kill_plan(5, [900, 40, 7_000, 3_000, 5_000])]
                + ["SIGKILL redis-server"]
            ],
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
            "expected_reasons": {"oversize": 5_001},
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
        "10,000 lines, 500 of them malformed; job SIGKILLed 5x (inside a bronze Delta MERGE, inside a "
        "Redis apply, 3 at random moments); redis-server SIGKILLed once after a burst of 950 publishes",
        "bronze rows / distinct ids; quarantine rows; speed-feature keys off the ground truth",
        "9,500 / 9,500; 500; 0",
        "9,500 / 9,500; 500; 0",
        True,
    ]
    assert rows[1][3:] == [
        "yes; oversize 5,001; 100; 0; <= 30",
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


def test_poison_expects_the_big_entry_and_the_wide_events_by_reason():
    assert poison_reasons("oversize", 5_000) == {"oversize": 5_001}
    assert poison_reasons("context_too_large", 5_000) == {"context_too_large": 5_000, "oversize": 1}

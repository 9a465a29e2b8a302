from collections import defaultdict

from benchmarks.bench_soak import (
    EVENTS,
    REC,
    commit_lag_ms,
    failures,
    per_minute,
    rss_growth_pct,
    schedule,
    soak_events,
    status_counts,
    table,
    verdict,
)


def test_the_schedule_interleaves_both_rates_recommendations_first():
    assert schedule(1.0, 4, 2) == [
        (0.0, REC),
        (0.0, EVENTS),
        (0.25, REC),
        (0.5, REC),
        (0.5, EVENTS),
        (0.75, REC),
    ]
    plan = schedule(600, 300, 20)
    assert (
        sum(kind == REC for _, kind in plan) == 180_000 and sum(kind == EVENTS for _, kind in plan) == 12_000
    )


def test_soak_events_cycle_users_and_their_items():
    assert soak_events(0, 2, 1000, users=2000) == [
        {
            "event_id": "s0",
            "user_id": "u0",
            "item_id": "i0",
            "event_type": "view",
            "ts": 1000,
            "context": {"category": "c0"},
        },
        {
            "event_id": "s1",
            "user_id": "u19190",
            "item_id": "i79",
            "event_type": "view",
            "ts": 1000,
            "context": {"category": "c19"},
        },
    ]
    assert soak_events(6, 1, 5, users=2000)[0] == {
        "event_id": "s6",
        "user_id": "u15140",
        "item_id": "i74",
        "event_type": "rating",
        "ts": 5,
        "context": {"category": "c14"},
        "value": 4.0,
    }
    # the user's next visit is on its next item
    assert soak_events(2000, 1, 0, users=2000)[0]["user_id"] == "u0"
    assert soak_events(2000, 1, 0, users=2000)[0]["item_id"] == "i11"


def test_soak_events_keep_the_speed_layer_ground_truth_exact():
    items_by_user = defaultdict(set)
    for event in soak_events(0, 2000 * 8 * 3, 0, users=2000):
        items_by_user[event["user_id"]].add(event["item_id"])
    assert len(items_by_user) == 2000
    assert {len(items) for items in items_by_user.values()} == {8}  # <= 20 co-visitation session items
    neighbours = defaultdict(set)
    for items in items_by_user.values():
        for item in items:
            neighbours[item] |= items - {item}
    assert max(len(n) for n in neighbours.values()) <= 100  # the co-visited items kept per item


def test_per_minute_status_counts_and_failures():
    records = [
        (0.0, 1.0, 200, False),
        (30.0, 3.0, 200, False),
        (61.0, 5.0, 503, False),
        (62.0, 10_000.0, 0, False),
    ]
    assert per_minute(records) == [
        {"minute": 0, "requests": 2, "non_200": 0, "p50": 2.0, "p99": 2.98, "max": 3.0},
        {"minute": 1, "requests": 2, "non_200": 2, "p50": 5002.5, "p99": 9900.05, "max": 10_000.0},
    ]
    assert status_counts(records) == {"200": 2, "503": 1, "timeout/error": 1}
    assert failures(records) == [
        {"at_s": 61.0, "status": 503, "latency_ms": 5.0},
        {"at_s": 62.0, "status": 0, "latency_ms": 10_000.0},
    ]


def test_rss_growth_is_from_the_first_sample_at_the_mark_to_the_last():
    samples = [
        {"t_s": 0.0, "server_rss_mb": 100.0},
        {"t_s": 55.0, "server_rss_mb": 150.0},
        {"t_s": 60.1, "server_rss_mb": 200.0},
        {"t_s": 600.0, "server_rss_mb": 210.0},
    ]
    assert rss_growth_pct(samples, 60.0) == 5.0
    assert rss_growth_pct(samples, 15.0) == 40.0
    assert rss_growth_pct(samples, 601.0) is None


def test_commit_lag():
    assert commit_lag_ms(5_000, 4_000, 1_000) == 1_000
    assert commit_lag_ms(5_000, 6_000, 1_000) == 0
    assert commit_lag_ms(5_000, 0, 1_000) == 4_000  # not committed yet: all of the bus is behind
    assert commit_lag_ms(None, 4_000, None) is None


def result_of(**changes) -> dict:
    result = {
        "duration_s": 600.0,
        "rec_rate": 300,
        "api_workers": 2,
        "events_per_s": 1000,
        "event_batches_per_s": 20,
        "events_per_batch": 50,
        "status_counts": {"recommendations": {"200": 180_000}, "events": {"202": 12_000}},
        "latency_ms": {"p50": 1.5, "p95": 3.0, "p99": 6.25, "p999": 14.0, "p100": 40.5},
        "per_minute": [{"minute": 0, "p99": 5.0}, {"minute": 7, "p99": 9.5}],
        "server_rss": {"from_s": 60.0, "at_from_mb": 200.0, "end_mb": 210.0, "growth_pct": 5.0},
        "events_accepted": 600_000,
        "bronze": {
            "rows": 600_000,
            "distinct_ids": 600_000,
            "ids_equal_accepted": True,
            "accepted_ids_missing": 0,
            "ids_not_acknowledged": 0,
        },
        "feature_mismatches_count": 0,
        "stream_lag_ms_max": {"speed": 900, "bronze": 9_800},
        "seconds_to_commit_after_load": 4.2,
    }
    result.update(changes)
    return result


def test_the_verdict_checks_each_target():
    assert verdict(result_of()) == {
        "no_5xx_or_timeout": True,
        "rec_p99_within_target": True,
        "rss_growth_within_target": True,
        "bronze_equals_accepted": True,
        "speed_features_match": True,
    }
    missed = verdict(
        result_of(
            status_counts={
                "recommendations": {"200": 179_999, "timeout/error": 1},
                "events": {"202": 12_000},
            },
            latency_ms={"p99": 10.01},
            server_rss={"growth_pct": 10.0},
            bronze={"rows": 600_001, "distinct_ids": 600_000, "ids_equal_accepted": True},
            feature_mismatches_count=3,
        )
    )
    assert not any(missed.values())
    assert (
        verdict(result_of(status_counts={"recommendations": {"200": 1}, "events": {"503": 1}}))[
            "no_5xx_or_timeout"
        ]
        is False
    )
    assert verdict(result_of(server_rss={"growth_pct": None}))["rss_growth_within_target"] is False


def test_the_soak_table_puts_expected_next_to_found():
    result = result_of(
        status_counts={
            "recommendations": {"200": 179_998, "503": 1, "timeout/error": 1},
            "events": {"202": 12_000},
        }
    )
    result["checks"] = verdict(result)
    made = table(result)
    assert made["title"] == (
        "Soak: 600 s of 300 recommendations/s and 1,000 events/s (20 x 50) through the API (2 workers) into the "
        "streaming job"
    )
    assert made["rows"] == [
        ["5xx / time-outs: recommendations; events", "0 / 0; 0 / 0", "1 / 1; 0 / 0", False],
        [
            "recommendation latency ms: p99 (p50 / p99.9 / max; worst minute's p99)",
            "<= 10",
            "6.25 (1.5 / 14.0 / 40.5; minute 7: 9.5)",
            True,
        ],
        ["server RSS growth from 60 s to the end, %", "< 10", "5.0 (200.0 -> 210.0 MB)", True],
        [
            "bronze rows / distinct ids vs events accepted",
            "600,000 / 600,000",
            "600,000 / 600,000 (0 accepted missing, 0 not acknowledged)",
            True,
        ],
        ["speed-feature keys off the ground truth", "0", "0", True],
        [
            "streaming lag at most, ms (speed / bronze commit); s to commit all after the load",
            "(no target)",
            "900 / 9800; 4.2",
            "",
        ],
    ]

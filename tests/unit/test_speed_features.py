import random
from datetime import UTC, datetime, timedelta

import orjson

from feature_store.events import EventTypes, QuarantineReason
from feature_store.redis_keys import RedisKeys
from feature_store.settings import Settings
from spark_jobs.streaming.speed_features import (
    Rejected,
    SpeedEvent,
    SpeedParams,
    TrendWindow,
    counter_ops,
    freshness_fields,
    items_without_category,
    percentile,
    reject_oversize,
    shard_count,
    shard_of,
    shard_ops,
    trend_increments,
    trend_weights,
    trending_ops,
    user_ops,
    validate_entries,
    window_buckets,
    with_catalog_categories,
)

KEYS = RedisKeys("lr")
T0 = 1_700_000_000_000  # epoch ms
PARAMS = SpeedParams(
    recent_items_max=3,
    ttl_s=100,
    session_gap_ms=1_800_000,
    events_per_shard=2,
    trend_windows=(TrendWindow("2m", 120_000, 60_000),),
    trend_weights=trend_weights(EventTypes()),
)


def _raw(**over):
    base = {"event_id": "e1", "user_id": "u1", "item_id": "i1", "event_type": "view", "ts": T0}
    return orjson.dumps({**base, **over}).decode()


def _ev(entry, user, item, etype="view", ts=T0, bus=None, category=None, event_id=None):
    return SpeedEvent(
        entry, event_id or f"e{entry}", user, item, etype, ts, bus if bus is not None else ts, category
    )


def test_validate_entries_keeps_good_events_and_gives_each_bad_one_its_reason():
    entries = [
        ("1-0", T0, _raw(context={"category": "books", "page": "home"})),
        ("1-1", T0, None),
        ("1-2", T0, '{"event_id": '),
        ("1-3", T0, _raw(user_id=None)),
        ("1-4", T0, _raw(event_type="teleport")),
        ("1-5", T0, _raw(ts=T0 + 11 * 60_000)),  # 11 min after its bus time, tolerance is 10
        ("1-6", T0 + 60_000, _raw(ts=T0 + 11 * 60_000, event_id="e6")),  # 10 min after bus time: fine
        ("1-7", T0, "[1, 2]"),
    ]
    good, bad = validate_entries(entries, future_tolerance=timedelta(minutes=10), event_types=EventTypes())
    assert [speed for speed, _ in good] == [
        SpeedEvent("1-0", "e1", "u1", "i1", "view", T0, T0, "books"),
        SpeedEvent("1-6", "e6", "u1", "i1", "view", T0 + 11 * 60_000, T0 + 60_000, None),
    ]
    assert [event.event_id for _, event in good] == ["e1", "e6"]
    assert [(r.entry_id, r.reason) for r in bad] == [
        ("1-1", QuarantineReason.MALFORMED),
        ("1-2", QuarantineReason.MALFORMED),
        ("1-3", QuarantineReason.MISSING_USER_ID),
        ("1-4", QuarantineReason.UNKNOWN_EVENT_TYPE),
        ("1-5", QuarantineReason.FUTURE_TIMESTAMP),
        ("1-7", QuarantineReason.MALFORMED),
    ]
    assert bad[2].raw == _raw(user_id=None)


def test_entries_above_the_byte_limit_are_rejected_undecoded():
    entries = [
        ("1-0", T0, _raw(), 80),
        ("1-1", T0, "{not even json", 5_000),
        ("1-2", T0, None, 0),
        ("1-3", T0, "x", 100),
    ]
    kept, oversize = reject_oversize(entries, max_bytes=100)
    assert kept == [("1-0", T0, _raw()), ("1-2", T0, None), ("1-3", T0, "x")]
    assert oversize == [
        Rejected(
            "1-1",
            "{not even json",
            QuarantineReason.OVERSIZE,
            "bus entry of 5000 bytes, above the limit of 100",
        )
    ]


def test_catalog_fills_only_missing_categories():
    events = [_ev("1", "u", "a", category="books"), _ev("2", "u", "b"), _ev("3", "u", "c")]
    assert items_without_category(events) == ["b", "c"]
    filled = with_catalog_categories(events, {"a": "toys", "b": "games"})
    assert [e.category for e in filled] == ["books", "games", None]


def test_user_ops_are_in_event_time_order_each_behind_its_dedupe_then_trim():
    b = T0 // 60_000  # bucket of T0 in the 2-minute window
    events = [_ev("1-1", "u1", "b", "click", T0 + 5), _ev("1-0", "u1", "a", "skip", T0, category="books")]
    recent, meta, session, ids = (
        "lr:s:{u:u1}:recent",
        "lr:s:{u:u1}:recent_meta",
        "lr:s:{u:u1}:session",
        "lr:s:{u:u1}:event_ids",
    )
    assert user_ops(KEYS, PARAMS, events) == [
        ["d", ids, "e1-0", T0],
        [
            "e",
            "u1",
            "a",
            "skip",
            T0,
            "books",
            recent,
            meta,
            session,
            0,
        ],  # skip: no co-visitation, no trending
        ["d", ids, "e1-1", T0 + 5],
        ["e", "u1", "b", "click", T0 + 5, "", recent, meta, session, 1],
        ["z", f"lr:s:trending:{{2m}}:{b}", "b", 2.0, 180],  # the click's weight in its bucket
        ["u", recent, meta, session],
    ]
    assert user_ops(KEYS, PARAMS, []) == []


def test_shards_are_stable_and_do_not_depend_on_arrival_order():
    events = [_ev(f"1-{i}", f"u{i % 5}", f"i{i}", ts=T0 + i) for i in range(10)]
    planned = shard_ops(KEYS, PARAMS, events)
    shuffled = events[:]
    random.Random(7).shuffle(shuffled)
    assert shard_ops(KEYS, PARAMS, shuffled) == planned
    assert shard_count(10, 2) == 5 and shard_count(0, 2) == 1 and shard_count(3, 2) == 2
    assert shard_of("u1", 5) == 0x424F9F76 % 5  # crc32("u1"): the same in every process
    users_by_shard = {s: {op[1] for op in ops if op[0] == "e"} for s, ops in planned.items()}
    assert sorted(u for users in users_by_shard.values() for u in users) == ["u0", "u1", "u2", "u3", "u4"]
    assert all(shard_of(u, 5) == s for s, users in users_by_shard.items() for u in users)


def test_window_buckets_end_at_the_bucket_of_the_end_time():
    assert window_buckets(TrendWindow("2m", 120_000, 60_000), 600_000 + 59_999) == [9, 10]
    assert window_buckets(TrendWindow("15m", 900_000, 60_000), 900_000)[0] == 1


def test_trending_adds_weights_to_buckets_then_recomputes_the_window():
    b = T0 // 60_000  # bucket of T0
    end = T0 + 60_000
    events = [
        _ev("1", "u1", "a", "view", ts=T0, bus=end),  # weight 1 in bucket b
        _ev("2", "u2", "a", "purchase", ts=T0 + 60_000, bus=end),  # 8 in bucket b+1
        _ev("3", "u3", "c", "rating", ts=T0 + 999_999_999, bus=end),  # future ts: clamped to bus time
        _ev("4", "u3", "d", "skip", ts=T0 + 60_000, bus=end),  # skip counts 0: left out
        _ev("5", "u3", "e", "view", ts=T0 - 120_000, bus=end),  # older than the window: left out
    ]
    assert [trend_increments(KEYS, PARAMS, e, end) for e in events] == [
        [["z", f"lr:s:trending:{{2m}}:{b}", "a", 1.0, 180]],
        [["z", f"lr:s:trending:{{2m}}:{b + 1}", "a", 8.0, 180]],
        [["z", f"lr:s:trending:{{2m}}:{b + 1}", "c", 1.0, 180]],
        [],
        [],
    ]
    assert trending_ops(KEYS, PARAMS, events) == [
        ["U", "lr:s:trending:{2m}", 120, f"lr:s:trending:{{2m}}:{b}", f"lr:s:trending:{{2m}}:{b + 1}"],
    ]
    assert trending_ops(KEYS, PARAMS, []) == []
    by_shard = shard_ops(
        KEYS, PARAMS, events
    )  # the increments travel with each user, against the batch's end
    assert sorted(op[1:4] for ops in by_shard.values() for op in ops if op[0] == "z") == [
        [f"lr:s:trending:{{2m}}:{b}", "a", 1.0],
        [f"lr:s:trending:{{2m}}:{b + 1}", "a", 8.0],
        [f"lr:s:trending:{{2m}}:{b + 1}", "c", 1.0],
    ]


def test_counters_count_processed_and_quarantined_by_reason():
    rejected = [
        Rejected("1", "x", QuarantineReason.MALFORMED, ""),
        Rejected("2", "y", QuarantineReason.UNKNOWN_EVENT_TYPE, ""),
        Rejected("3", "z", QuarantineReason.MALFORMED, ""),
    ]
    assert counter_ops(KEYS, 7, rejected) == [
        ["h", "lr:s:status", "processed", 7],
        ["h", "lr:s:status", "quarantined", 3],
        ["h", "lr:s:status", "quarantined:malformed", 2],
        ["h", "lr:s:status", "quarantined:unknown_event_type", 1],
    ]


def test_trend_weights_count_ratings_once_and_never_negative():
    weights = trend_weights(EventTypes())
    assert (weights["view"], weights["purchase"], weights["rating"], weights["skip"]) == (1.0, 8.0, 1.0, 0.0)


def test_freshness_percentiles():
    assert percentile([1, 2, 3, 4], 50) == 2.0
    assert percentile(list(range(1, 101)), 99) == 99.0
    assert freshness_fields([300, 100, 200], [1000]) == {
        "lag_ms_p50": "200",
        "lag_ms_p99": "300",
        "lag_ms_max": "300",
        "event_lag_ms_p50": "1000",
        "event_lag_ms_p99": "1000",
        "event_lag_ms_max": "1000",
    }
    assert freshness_fields([], []) == {}


# -- the Redis Stream source's offset planning -----------------------------------------------------
def test_latest_offset_respects_admission_control_and_the_available_now_target():
    from spark_jobs.streaming.redis_stream_source import latest_allowed

    assert latest_allowed("5-0", newest="9-0", nth=None, target=None) == "9-0"  # everything available
    assert latest_allowed("5-0", newest=None, nth="7-2", target=None) == "7-2"  # the max_rows-th entry
    assert latest_allowed("5-0", newest=None, nth=None, target=None) == "5-0"  # empty stream: no batch
    assert latest_allowed("5-0", newest="4-0", nth=None, target=None) == "5-0"  # stream recreated behind us
    assert (
        latest_allowed("5-0", newest="9-0", nth=None, target="7-0") == "7-0"
    )  # AvailableNow stops at its target
    assert latest_allowed("8-0", newest="9-0", nth=None, target="7-0") == "8-0"


def test_job_restart_backoff_and_bronze_admission():
    from feature_store.settings import Settings
    from spark_jobs.streaming.speed_job import BRONZE_QUERY, SPEED_QUERY, max_rows_per_batch, restart_delay_s

    assert [restart_delay_s(n) for n in (1, 2, 3, 6, 7, 20)] == [1.0, 2.0, 4.0, 32.0, 60.0, 60.0]
    settings = Settings(stream_trigger_ms=500, stream_bronze_trigger_ms=5_000, stream_max_rows_per_batch=100)
    assert max_rows_per_batch(settings, SPEED_QUERY) == 100
    assert max_rows_per_batch(settings, BRONZE_QUERY) == 1_000  # ten speed triggers' worth per bronze trigger
    defaults = Settings()  # 150 ms: the micro-batch takes ~115 ms at 1,000 events/s, the wait is the rest
    assert (defaults.stream.trigger_ms, defaults.stream.bronze_trigger_ms) == (150, 5_000)
    assert max_rows_per_batch(defaults, BRONZE_QUERY) == 20_000 * 33


def test_arrow_batch_keeps_every_value_and_the_table_schema():
    from pyspark.sql.types import (
        DateType,
        DoubleType,
        MapType,
        StringType,
        StructField,
        StructType,
        TimestampType,
    )

    from spark_jobs.streaming.bronze_rows import arrow_batch

    schema = StructType(
        [
            StructField("event_id", StringType()),
            StructField("value", DoubleType()),
            StructField("context", MapType(StringType(), StringType())),
            StructField("ts", TimestampType()),
            StructField("event_date", DateType()),
        ]
    )
    ts = datetime(2026, 11, 1, 10, 0, 0, 123456, tzinfo=UTC)
    rows = [("e1", 4.5, {"device": "ios"}, ts, ts.date()), ("e2", None, None, ts, ts.date())]
    table = arrow_batch(rows, schema)
    assert table.column_names == ["event_id", "value", "context", "ts", "event_date"]
    assert str(table.schema.field("ts").type) == "timestamp[us, tz=UTC]"
    assert table.to_pylist() == [
        {"event_id": "e1", "value": 4.5, "context": [("device", "ios")], "ts": ts, "event_date": ts.date()},
        {"event_id": "e2", "value": None, "context": None, "ts": ts, "event_date": ts.date()},
    ]
    assert arrow_batch([], schema).num_rows == 0


def test_scheduler_pools_give_the_speed_query_the_next_free_core():
    from spark_jobs.streaming.speed_job import scheduler_pools_xml

    assert scheduler_pools_xml() == (
        '<?xml version="1.0"?>\n<allocations>\n'
        '  <pool name="speed"><schedulingMode>FAIR</schedulingMode><weight>8</weight><minShare>1</minShare></pool>\n'
        '  <pool name="bronze"><schedulingMode>FAIR</schedulingMode><weight>1</weight><minShare>0</minShare></pool>\n'
        "</allocations>\n"
    )


def test_streaming_checkpoints_are_written_through_hadoop_file_system_not_file_context(tmp_path):
    """Hadoop's FileContext forks `chmod` and `readlink` processes for every checkpoint file on a local
    disk (no native Hadoop library): 80-90 ms of each micro-batch's offset and commit log writes."""
    from spark_jobs.streaming.speed_job import streaming_spark_conf

    settings = Settings(data_dir=tmp_path, spark_shuffle_partitions=2)
    assert streaming_spark_conf(settings) == {
        "spark.databricks.delta.snapshotPartitions": "2",
        "spark.sql.streaming.checkpointFileManagerClass": (
            "org.apache.spark.sql.execution.streaming.checkpointing.FileSystemBasedCheckpointFileManager"
        ),
    }

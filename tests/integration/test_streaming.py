"""The speed layer against a real redis-server and real Spark streaming queries on tiny data.

In-process queries use the shared `spark` fixture; the SIGKILL recovery test runs the job as its own
process (`python -m spark_jobs.streaming.speed_job`) and kills it hard mid-run. Every wait is a
condition with a deadline.

Why one module: the tests share one vocabulary of waits, snapshots and job runners (`wait_for`,
`snapshot`, `RunningJob`, `run_until_counted`) over the same fixtures, and read as one account of the
speed layer's guarantees.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
import redis

from feature_store.event_bus import (
    EVENT_FIELD,
    newest_entry_id,
    publish_events,
    publish_events_async,
    read_committed,
    record_committed,
    trim_consumed,
)
from feature_store.events import EventTypes
from feature_store.redis_keys import RedisKeys
from feature_store.settings import Settings, project_root
from feature_store.tables import BRONZE_EVENTS, QUARANTINE
from lambdarec.testing import shop_events, speed_feature_mismatches, start_speed_job
from spark_jobs.streaming.failpoints import BRONZE_WRITE, REDIS_APPLY
from spark_jobs.streaming.failpoints import ENV as FAILPOINT
from spark_jobs.streaming.progress import phases_in_status

pytestmark = pytest.mark.integration
KEYS = RedisKeys("lr")
DEADLINE_S = 300  # generous: the machine may be shared; a wait returns as soon as its condition holds


def wait_for(condition, what: str, timeout_s: float = DEADLINE_S, interval_s: float = 0.1):
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval_s)


def text_hash(client, key: str) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in client.hgetall(key).items()}


def zset(client, key: str) -> dict[str, float]:
    return {m.decode(): s for m, s in client.zrange(key, 0, -1, withscores=True)}


def table_count(spark, settings: Settings, table) -> int:
    from pyspark.errors import AnalysisException

    try:
        return spark.read.format("delta").load(settings.table_path(table.name)).count()
    except AnalysisException:  # not created yet
        return 0


def status_counts(client) -> tuple[int, int]:
    status = text_hash(client, KEYS.speed_status)
    return int(status.get("processed", -1)), int(status.get("quarantined", -1))


def snapshot(client) -> dict:
    """Every key's content (the status hash without its per-batch/time fields)."""
    out = {}
    for key in sorted(k.decode() for k in client.keys("*")):
        kind = client.type(key).decode()
        if kind == "zset":
            out[key] = zset(client, key)
        elif kind == "hash":
            value = text_hash(client, key)
            if key == KEYS.speed_status:
                value = {
                    k: v
                    for k, v in value.items()
                    if k in ("processed", "quarantined") or k.startswith("quarantined:")
                }
            out[key] = value
        elif kind == "stream":
            out[key] = [e[0] for e in client.xrange(key)]
        else:
            out[key] = client.get(key)
    return out


@pytest.fixture
def stream_settings(table_settings: Settings, redis_server) -> Settings:
    return table_settings.updated(
        redis_url=redis_server.url,
        stream_trigger_ms=100,
        stream_bronze_trigger_ms=200,
        stream_max_rows_per_batch=3,
    )


@pytest.fixture
def streaming_spark(spark, stream_settings: Settings):
    """The shared session with the job's own streaming conf (as `speed_job.run` builds its session),
    restored afterwards."""
    from spark_jobs.streaming.speed_job import streaming_spark_conf

    conf = streaming_spark_conf(stream_settings)
    before = {key: spark.conf.get(key, None) for key in conf}
    for key, value in conf.items():
        spark.conf.set(key, value)
    yield spark
    for key, value in before.items():
        if value is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, value)


def run_queries(spark, settings: Settings, client, *, bronze: bool = True):
    from spark_jobs.streaming.speed_job import start_queries

    return start_queries(spark, settings, settings.redis.url, client, bronze=bronze)


class RunningJob:
    """The job's queries in this process; `wait_for` restarts a query that died from its checkpoint, as
    the job's own loop does (on a loaded machine a Python worker may not start in time)."""

    def __init__(self, spark, settings: Settings, client, *, bronze: bool = True) -> None:
        from spark_jobs.streaming.speed_job import BRONZE_QUERY, SPEED_QUERY, start_query

        self.start = lambda name: start_query(spark, settings, settings.redis.url, client, name)
        self.queries = {
            name: self.start(name) for name in ((SPEED_QUERY, BRONZE_QUERY) if bronze else (SPEED_QUERY,))
        }

    def wait_for(self, condition, what: str) -> None:
        def revived_then(condition=condition):
            for name, query in self.queries.items():
                if not query.isActive:
                    self.queries[name] = self.start(name)
            return condition()

        wait_for(revived_then, what)

    def stop(self) -> None:
        stop_all(self.queries.values())


def run_until_counted(spark, settings: Settings, client, *, good: int, bad: int) -> None:
    """Run both queries until Redis counted every entry and bronze/quarantine hold them, then stop."""
    job = RunningJob(spark, settings, client)
    try:
        job.wait_for(lambda: status_counts(client) == (good, bad), "the speed query to count every entry")
        job.wait_for(lambda: table_count(spark, settings, BRONZE_EVENTS) == good, "bronze rows")
        job.wait_for(lambda: table_count(spark, settings, QUARANTINE) == bad, "quarantine rows")
    finally:
        job.stop()


def stop_all(queries) -> None:
    from spark_jobs.streaming.speed_job import stop_gracefully

    for query in queries:
        stop_gracefully(query)


# -- the bus -------------------------------------------------------------------------------------
def test_trim_keeps_everything_a_query_has_not_committed(redis_client):
    ids = publish_events(redis_client, "bus", [{"n": i} for i in range(6)])
    assert trim_consumed(redis_client, "bus") == 0  # nobody committed yet: nothing may go
    record_committed(redis_client, "bus", "speed", ids[4])
    record_committed(redis_client, "bus", "bronze", ids[2])
    assert read_committed(redis_client, "bus") == {"speed": ids[4], "bronze": ids[2]}
    assert (
        publish_events(redis_client, "bus", [], maxlen=10) == [] and redis_client.xlen("bus") == 6
    )  # short enough
    assert trim_consumed(redis_client, "bus") == 2  # below the lowest commit (bronze's) only
    assert [e[0].decode() for e in redis_client.xrange("bus")] == ids[2:]
    new = publish_events(redis_client, "bus", [{"n": 9}], maxlen=1)  # too long, but trims only committed
    assert [e[0].decode() for e in redis_client.xrange("bus")] == ids[2:] + new


def test_a_committed_offset_only_moves_forward(redis_client):
    assert newest_entry_id(["1700000000000-2", "999-0", "1700000000000-10"]) == "1700000000000-10"
    assert newest_entry_id([]) is None
    assert record_committed(redis_client, "bus", "speed", "2000-5") is True
    assert record_committed(redis_client, "bus", "speed", "2000-4") is False  # Spark's lagging commit
    assert record_committed(redis_client, "bus", "speed", "1999-9") is False
    assert read_committed(redis_client, "bus") == {"speed": "2000-5"}
    assert record_committed(redis_client, "bus", "speed", "10000-0") is True  # numbers, not text
    assert read_committed(redis_client, "bus") == {"speed": "10000-0"}


def test_the_source_admits_batches_by_rows_and_bytes_and_ships_oversize_entries_as_a_prefix(
    redis_server, redis_client
):
    from spark_jobs.streaming.redis_stream_source import OVERSIZE_PREFIX_BYTES, RedisStreamReader

    sizes = {"a": 1_000, "b": 1_000, "c": 3_000, "d": 5_000, "e": 10, "f": 1_000}  # d: above the event limit
    ids = publish_events(redis_client, "bus", [letter * size for letter, size in sizes.items()])
    ids.append(redis_client.xadd("bus", {"other": "x"}).decode())  # no `event` field: no payload bytes

    def reader(max_rows: int) -> RedisStreamReader:
        return RedisStreamReader(
            {
                "url": redis_server.url,
                "stream": "bus",
                "max_rows_per_batch": str(max_rows),
                "max_bytes_per_batch": "2500",
                "max_event_bytes": "4000",
            }
        )

    def batches(source: RedisStreamReader) -> list[list[str]]:
        """The entry ids of each micro-batch the source plans, from the stream's start until nothing is new."""
        planned, start = [], {"id": "0-0"}
        while True:
            rows, end = source.read(start)
            ids_read = [row[0] for row in rows]
            if end == start:
                assert ids_read == []
                return planned
            assert ids_read[-1] == end["id"]
            planned.append(ids_read)
            start = end

    # a+b fit 2,500 bytes; c alone is over but a batch always takes one entry; d counts as its prefix
    assert batches(reader(10)) == [ids[0:2], ids[2:3], ids[3:7]]
    assert batches(reader(2)) == [ids[0:2], ids[2:3], ids[3:5], ids[5:7]]
    available_now = reader(10)
    available_now.prepareForTriggerAvailableNow()
    publish_events(redis_client, "bus", ["g"])  # after the trigger asked: the next run's
    assert batches(available_now) == [ids[0:2], ids[2:3], ids[3:7]]
    replayed = reader(10).readBetweenOffsets(
        {"id": "0-0"}, {"id": ids[6]}
    )  # a restart replays a planned batch
    assert [
        (entry_id, raw[:1] if raw else raw, len(raw) if raw else 0, size)
        for entry_id, _, raw, size in replayed
    ] == [
        (ids[0], "a", 1_000, 1_000),
        (ids[1], "b", 1_000, 1_000),
        (ids[2], "c", 3_000, 3_000),
        (ids[3], "d", OVERSIZE_PREFIX_BYTES, 5_000),
        (ids[4], "e", 10, 10),
        (ids[5], "f", 1_000, 1_000),
        (ids[6], None, 0, 0),
    ]
    available_now.stop()


def test_publish_async_twin_writes_the_same_wire_format(redis_server):
    import asyncio

    import redis.asyncio as aredis

    from feature_store.events import Event

    event = Event.model_validate(
        {"event_id": "e1", "user_id": "u1", "item_id": "i1", "event_type": "view", "ts": 5}
    )

    async def publish() -> list[str]:
        client = aredis.Redis.from_url(redis_server.url)
        try:
            return await publish_events_async(client, "abus", [event])
        finally:
            await client.aclose()

    ids = asyncio.run(publish())
    sync = redis.Redis.from_url(redis_server.url)
    assert sync.xrange("abus") == [
        (
            ids[0].encode(),
            {
                EVENT_FIELD.encode(): b'{"event_id":"e1","user_id":"u1","item_id":"i1","event_type":"view","ts":5,"value":null,"context":null}'
            },
        )
    ]


def test_the_redis_apply_counts_a_re_sent_event_once_within_the_users_latest_ids(redis_client):
    from spark_jobs.streaming.redis_apply import apply_batch
    from spark_jobs.streaming.speed_features import (
        SpeedEvent,
        SpeedParams,
        shard_ops,
        trend_weights,
        trending_ops,
    )

    params = SpeedParams(dedupe_events_per_user=2, trend_weights=trend_weights(EventTypes()))
    t0 = int(time.time() * 1000) - 60_000

    def apply(batch_id: int, *events: tuple[str, str, str, str, int]) -> None:
        planned = [
            SpeedEvent(f"{t0 + n}-{batch_id}", eid, "u1", item, kind, ts, t0 + 1_000)
            for n, (eid, item, kind, ts) in enumerate(events)
        ]
        apply_batch(
            redis_client,
            KEYS,
            params,
            "speed",
            batch_id,
            shard_ops(KEYS, params, planned),
            trending_ops(KEYS, params, planned),
        )

    apply(0, ("e1", "a", "view", t0), ("e2", "b", "click", t0 + 1))
    apply(
        1, ("e2", "b", "click", t0 + 1), ("e3", "c", "purchase", t0 + 2), ("e3", "c", "purchase", t0 + 2)
    )  # e2 again, e3 twice
    session = {
        k: v for k, v in text_hash(redis_client, KEYS.session_counters("u1")).items() if k.startswith("type:")
    }
    assert session == {"type:view": "1", "type:click": "1", "type:purchase": "1"}
    assert zset(redis_client, KEYS.trending("15m")) == {"a": 1.0, "b": 2.0, "c": 8.0}
    assert text_hash(redis_client, KEYS.speed_status) == {"duplicates": "2"}
    assert zset(redis_client, KEYS.recent_event_ids("u1")) == {
        "e2": t0 + 1_000,
        "e3": t0 + 1_000,
    }  # the latest 2 ids
    apply(1, ("e9", "z", "view", t0 + 3))  # a replayed batch id changes nothing, whatever it holds
    assert zset(redis_client, KEYS.trending("15m")) == {"a": 1.0, "b": 2.0, "c": 8.0}
    apply(
        2, ("e1", "a", "view", t0)
    )  # beyond the user's latest ids: counted again (bronze still keeps it once)
    assert text_hash(redis_client, KEYS.session_counters("u1"))["type:view"] == "2"


def test_an_event_arriving_after_the_users_later_events_still_pairs_with_them(redis_client):
    """A client's retried batch can reach the bus after the same user's later events: the late event
    pairs with every positive item of the session on either side of it in time, as it would have in
    event-time order (the soak found co-visitation counts short by exactly these pairs)."""
    from spark_jobs.streaming.redis_apply import apply_batch
    from spark_jobs.streaming.speed_features import SpeedEvent, SpeedParams, shard_ops, trend_weights

    params = SpeedParams(trend_weights=trend_weights(EventTypes()))
    t0 = int(time.time() * 1000) - 60_000

    def apply(client, batch_id: int, *events: tuple[str, str, int]) -> None:
        planned = [
            SpeedEvent(f"{t0 + n}-{batch_id}", eid, "u1", item, "view", ts, t0 + 1_000)
            for n, (eid, item, ts) in enumerate(events)
        ]
        apply_batch(client, KEYS, params, "speed", batch_id, shard_ops(KEYS, params, planned), [])

    def neighbours(client) -> dict[str, dict[str, float]]:
        return {item: zset(client, KEYS.covisit(item)) for item in ("a", "b", "c")}

    apply(redis_client, 0, ("e1", "a", t0), ("e3", "c", t0 + 2_000))
    apply(redis_client, 1, ("e2", "b", t0 + 1_000))  # late: its batch was resent
    late = neighbours(redis_client)
    redis_client.flushdb()
    apply(redis_client, 0, ("e1", "a", t0), ("e2", "b", t0 + 1_000), ("e3", "c", t0 + 2_000))
    in_order = {"a": {"b": 1.0, "c": 1.0}, "b": {"a": 1.0, "c": 1.0}, "c": {"a": 1.0, "b": 1.0}}
    assert neighbours(redis_client) == in_order
    assert late == in_order


# -- the streaming job ---------------------------------------------------------------------------
def _shop_events(t0: int) -> tuple[list, list]:
    good = [
        {
            "event_id": "g1",
            "user_id": "u1",
            "item_id": "a",
            "event_type": "view",
            "ts": t0,
            "context": {"category": "books"},
        },
        {"event_id": "g2", "user_id": "u2", "item_id": "b", "event_type": "view", "ts": t0 + 500},
        {"event_id": "g3", "user_id": "u1", "item_id": "b", "event_type": "click", "ts": t0 + 1000},
        {"event_id": "g4", "user_id": "u2", "item_id": "a", "event_type": "skip", "ts": t0 + 1500},
        {"event_id": "g5", "user_id": "u1", "item_id": "a", "event_type": "view", "ts": t0 + 2000},
        {
            "event_id": "g6",
            "user_id": "u1",
            "item_id": "c",
            "event_type": "purchase",
            "ts": t0 + 3000,
            "value": 9.5,
        },
    ]
    bad = [
        "this is not json",
        {"event_id": "b2", "item_id": "a", "event_type": "view", "ts": t0},
        {"event_id": "b3", "user_id": "u1", "item_id": "a", "event_type": "teleport", "ts": t0},
        {"event_id": "b4", "user_id": "u1", "item_id": "a", "event_type": "view", "ts": t0 + 86_400_000},
    ]
    return good, bad


@pytest.mark.parametrize("store", ["redis", "cluster"])
def test_events_become_features_bronze_rows_and_quarantine(streaming_spark, stream_settings, store, request):
    """On one Redis and on a Redis Cluster of three masters (the job then applies per slot)."""
    spark = streaming_spark
    if store == "cluster":
        cluster = request.getfixturevalue("redis_cluster")
        stream_settings = stream_settings.updated(redis_url=cluster.url, redis_cluster=True)
    redis_client = request.getfixturevalue("cluster_client" if store == "cluster" else "redis_client")
    t0 = int(time.time() * 1000) - 60_000
    good, bad = _shop_events(t0)
    redis_client.set(KEYS.batch_pointer, "v1")
    redis_client.hset(KEYS.item_categories("v1"), mapping={"b": "games", "c": "toys"})
    publish_events(redis_client, stream_settings.bus.stream, good[:3] + bad[:2] + good[3:] + bad[2:])
    redis_client.xadd(stream_settings.bus.stream, {"not_event": "x"})  # not the wire format
    run_until_counted(spark, stream_settings, redis_client, good=6, bad=5)

    assert zset(redis_client, KEYS.recent_items("u1")) == {"b": t0 + 1000, "a": t0 + 2000, "c": t0 + 3000}
    assert text_hash(redis_client, KEYS.recent_meta("u1")) == {"a": "view", "b": "click", "c": "purchase"}
    assert text_hash(redis_client, KEYS.session_counters("u1")) == {
        "session_id": f"u1:{t0}",
        "last_ts": str(t0 + 3000),
        "type:view": "2",
        "type:click": "1",
        "type:purchase": "1",
        "cat:books": "1",
        "cat:games": "1",
        "cat:toys": "1",  # books from the event, games/toys from the catalog
    }
    assert text_hash(redis_client, KEYS.session_counters("u2")) == {
        "session_id": f"u2:{t0 + 500}",
        "last_ts": str(t0 + 1500),
        "type:view": "1",
        "type:skip": "1",
        "cat:games": "1",
    }
    for window in ("15m", "1h"):  # view 1, click 2, purchase 8; the skip adds nothing
        assert zset(redis_client, KEYS.trending(window)) == {"a": 2.0, "b": 3.0, "c": 8.0}
    assert zset(redis_client, KEYS.covisit("a")) == {"b": 1.0, "c": 1.0}
    assert zset(redis_client, KEYS.covisit("b")) == {"a": 1.0, "c": 1.0}
    assert zset(redis_client, KEYS.covisit("c")) == {"a": 1.0, "b": 1.0}
    assert 0 < redis_client.ttl(KEYS.recent_items("u1")) <= stream_settings.speed.ttl_s
    assert 0 < redis_client.ttl(KEYS.session_counters("u2")) <= stream_settings.speed.ttl_s
    status = text_hash(redis_client, KEYS.speed_status)
    assert {k: v for k, v in status.items() if k.startswith("quarantined:")} == {
        "quarantined:malformed": "2",
        "quarantined:missing_user_id": "1",
        "quarantined:unknown_event_type": "1",
        "quarantined:future_timestamp": "1",
    }
    assert int(status["last_batch_id"]) == 3  # 11 entries at most 3 per micro-batch: admission control
    assert 0 <= int(status["lag_ms_p50"]) <= int(status["lag_ms_p99"])
    newest = redis_client.xrevrange(stream_settings.bus.stream, count=1)[0][0].decode()
    assert read_committed(redis_client, stream_settings.bus.stream) == {"speed": newest, "bronze": newest}
    assert trim_consumed(redis_client, stream_settings.bus.stream) == 10  # all but the newest committed one

    bronze = spark.read.format("delta").load(stream_settings.table_path(BRONZE_EVENTS.name))
    assert sorted(
        (r.event_id, r.user_id, r.item_id, r.event_type, r.value, r.source) for r in bronze.collect()
    ) == [
        ("g1", "u1", "a", "view", None, "stream:lr:events"),
        ("g2", "u2", "b", "view", None, "stream:lr:events"),
        ("g3", "u1", "b", "click", None, "stream:lr:events"),
        ("g4", "u2", "a", "skip", None, "stream:lr:events"),
        ("g5", "u1", "a", "view", None, "stream:lr:events"),
        ("g6", "u1", "c", "purchase", 9.5, "stream:lr:events"),
    ]
    quarantine = spark.read.format("delta").load(stream_settings.table_path(QUARANTINE.name))
    assert sorted((r.raw or "", r.reason) for r in quarantine.collect()) == sorted(
        [("", "malformed"), ("this is not json", "malformed")]
        + [
            (orjson.dumps(b).decode(), reason)
            for b, reason in zip(bad[1:], ("missing_user_id", "unknown_event_type", "future_timestamp"))
        ]
    )


def _drop_last_commit(checkpoint: Path) -> int:
    """Forget that the last micro-batch was committed, as if the job died right before committing it."""
    commits = sorted(
        (p for p in (checkpoint / "commits").iterdir() if p.name.isdigit()), key=lambda p: int(p.name)
    )
    last = commits[-1]
    last.unlink()
    (checkpoint / "commits" / f".{last.name}.crc").unlink(missing_ok=True)
    return int(last.name)


def test_replaying_a_batch_id_changes_nothing(streaming_spark, stream_settings, redis_client):
    spark = streaming_spark
    from spark_jobs.streaming.speed_job import BRONZE_QUERY, SPEED_QUERY, checkpoint_dir

    t0 = int(time.time() * 1000) - 60_000
    good, bad = _shop_events(t0)
    publish_events(redis_client, stream_settings.bus.stream, good + bad)
    run_until_counted(spark, stream_settings, redis_client, good=6, bad=4)
    before = snapshot(redis_client)
    replayed = {
        name: _drop_last_commit(checkpoint_dir(stream_settings, name)) for name in (SPEED_QUERY, BRONZE_QUERY)
    }

    queries = run_queries(spark, stream_settings, redis_client)
    try:
        for name, batch_id in replayed.items():
            commit = checkpoint_dir(stream_settings, name) / "commits" / str(batch_id)
            wait_for(commit.exists, f"the {name} query to redo batch {batch_id}")
    finally:
        stop_all(queries)
    status = text_hash(redis_client, KEYS.speed_status)
    assert status["last_batch_id"] == str(replayed[SPEED_QUERY])
    assert int(status["last_batch_skipped_shards"]) >= 1  # the replay found its shards already applied
    after = snapshot(redis_client)
    committed = KEYS.stream_committed(stream_settings.bus.stream)
    assert {k: v for k, v in after.items() if k != committed} == {
        k: v for k, v in before.items() if k != committed
    }
    assert table_count(spark, stream_settings, BRONZE_EVENTS) == 6
    assert table_count(spark, stream_settings, QUARANTINE) == 4


def test_the_job_survives_redis_restarting_under_it(streaming_spark, stream_settings, tmp_path):
    spark = streaming_spark
    from lambdarec.redis_server import EmbeddedRedis

    server = EmbeddedRedis(directory=tmp_path / "own-redis").start()
    settings = stream_settings.updated(redis_url=server.url)
    client = redis.Redis.from_url(server.url, socket_timeout=2)
    t0 = int(time.time() * 1000) - 60_000
    publish_events(
        client,
        settings.bus.stream,
        [{"event_id": "r1", "user_id": "u1", "item_id": "a", "event_type": "view", "ts": t0}],
    )
    progress_interval = spark.conf.get("spark.sql.streaming.noDataProgressEventInterval")
    spark.conf.set("spark.sql.streaming.noDataProgressEventInterval", "50ms")  # idle triggers report progress
    queries = run_queries(spark, settings, client, bronze=False)
    spark.conf.set("spark.sql.streaming.noDataProgressEventInterval", progress_interval)
    try:
        wait_for(lambda: status_counts(client) == (1, 0), "the first event")
        server.stop()
        down_since = time.time()

        def tried_while_down() -> bool:  # a trigger ran (and found Redis gone) after the stop
            progress = queries[0].lastProgress
            return (
                progress is not None
                and datetime.fromisoformat(progress["timestamp"].replace("Z", "+00:00")).timestamp()
                > down_since
            )

        wait_for(tried_while_down, "a trigger while Redis is down")
        assert queries[0].isActive
        server.start()  # same port, empty (no persistence): the job must catch up on new events
        publish_events(
            client,
            settings.bus.stream,
            [{"event_id": "r2", "user_id": "u1", "item_id": "b", "event_type": "click", "ts": t0 + 1000}],
        )
        wait_for(
            lambda: client.zscore(KEYS.recent_items("u1"), "b") == t0 + 1000,
            "the event published after the restart",
        )
        assert queries[0].isActive
        assert text_hash(client, KEYS.session_counters("u1"))["type:click"] == "1"
    finally:
        stop_all(queries)
        server.stop()


def test_bronze_batches_merge_each_event_id_once_into_its_date_partition(spark, table_settings):
    """The bronze query's write without the stream: a re-sent event (same batch or a later one), a
    replayed batch and a rejected line seen again add nothing; the first copy in a batch wins."""

    from spark_jobs.streaming.bronze_rows import bronze_event_rows, first_copies, quarantine_rows
    from spark_jobs.streaming.speed_features import validate_entries
    from spark_jobs.streaming.speed_job import write_bronze_batch

    day = int(datetime(2026, 3, 1, tzinfo=UTC).timestamp() * 1000)

    def batch(*entries: tuple[str, str]) -> dict:
        bus = [(entry_id, day + 86_400_000 * 3, raw) for entry_id, raw in entries]
        good, rejected = validate_entries(
            bus, future_tolerance=timedelta(minutes=10), event_types=EventTypes()
        )
        return {
            BRONZE_EVENTS: bronze_event_rows(first_copies(good), "test"),
            QUARANTINE: quarantine_rows(rejected, {e[0]: e[1] for e in bus}, "test"),
        }

    def event(event_id: str, item: str, days: int = 0) -> str:
        return orjson.dumps(
            {
                "event_id": event_id,
                "user_id": "u1",
                "item_id": item,
                "event_type": "view",
                "ts": day + days * 86_400_000,
            }
        ).decode()

    first = batch(
        ("1-0", event("e1", "a")),
        ("1-1", event("e2", "b", days=1)),
        ("1-2", event("e1", "z")),
        ("1-3", "not json"),
    )
    assert write_bronze_batch(spark, table_settings, first) == {BRONZE_EVENTS.name: 2, QUARANTINE.name: 1}
    assert write_bronze_batch(spark, table_settings, first) == {
        BRONZE_EVENTS.name: 0,
        QUARANTINE.name: 0,
    }  # replayed
    second = batch(("2-0", event("e2", "b", days=1)), ("2-1", event("e3", "c", days=2)), ("2-2", "not json"))
    assert write_bronze_batch(spark, table_settings, second) == {
        BRONZE_EVENTS.name: 1,
        QUARANTINE.name: 1,
    }  # another entry
    bronze = spark.read.format("delta").load(table_settings.table_path(BRONZE_EVENTS.name))
    assert sorted((r.event_id, r.item_id, str(r.event_date)) for r in bronze.collect()) == [
        ("e1", "a", "2026-03-01"),
        ("e2", "b", "2026-03-02"),
        ("e3", "c", "2026-03-03"),
    ]


def test_a_bronze_batch_looks_up_only_the_files_its_event_times_overlap(spark, table_settings, tmp_path):
    """Five batches of one day, an hour apart, make five files. With the files of 00:00-03:00 taken
    away, a batch re-sending the 04:00 event with a new one at 04:30 still merges (it reads only the
    04:00 file: Delta's min/max of ts) and adds only the new event; one that spans 02:00 cannot (the
    lookup must read that file). Put back, the table holds each event once."""
    from py4j.protocol import Py4JJavaError

    from spark_jobs.streaming.bronze_rows import bronze_event_rows
    from spark_jobs.streaming.speed_features import validate_entries
    from spark_jobs.streaming.speed_job import write_bronze_batch

    day = int(datetime(2026, 3, 1, tzinfo=UTC).timestamp() * 1000)
    hour = 3_600_000
    table = Path(table_settings.table_path(BRONZE_EVENTS.name))

    def batch(*events: tuple[str, int]) -> dict:
        bus = [
            (
                f"{n}-0",
                day + 86_400_000,
                orjson.dumps(
                    {"event_id": i, "user_id": "u1", "item_id": "a", "event_type": "view", "ts": day + t}
                ).decode(),
            )
            for n, (i, t) in enumerate(events)
        ]
        good, _ = validate_entries(bus, future_tolerance=timedelta(minutes=10), event_types=EventTypes())
        return {BRONZE_EVENTS: bronze_event_rows(good, "test")}

    def files_before(limit: datetime) -> list[str]:
        """Data files (paths in the table) whose smallest ts is before `limit`, from the Delta log."""
        out = []
        for commit in sorted((table / "_delta_log").glob("*.json")):
            for line in commit.read_text().splitlines():
                add = orjson.loads(line).get("add")
                if add and datetime.fromisoformat(orjson.loads(add["stats"])["minValues"]["ts"]) < limit:
                    out.append(add["path"])
        return out

    for h in range(5):
        assert write_bronze_batch(spark, table_settings, batch((f"e{h}", h * hour))) == {
            BRONZE_EVENTS.name: 1
        }
    earlier = files_before(datetime(2026, 3, 1, 4, tzinfo=UTC))
    assert len(earlier) == 4
    aside = tmp_path / "aside"
    for name in earlier:
        (aside / name).parent.mkdir(parents=True, exist_ok=True)
        (table / name).rename(aside / name)
    assert write_bronze_batch(
        spark, table_settings, batch(("e4", 4 * hour), ("e4b", 4 * hour + hour // 2))
    ) == {BRONZE_EVENTS.name: 1}
    with pytest.raises(Py4JJavaError):
        write_bronze_batch(spark, table_settings, batch(("e2", 2 * hour), ("e4c", 4 * hour)))
    for name in earlier:
        (aside / name).rename(table / name)
    assert write_bronze_batch(spark, table_settings, batch(("e2", 2 * hour), ("e4c", 4 * hour))) == {
        BRONZE_EVENTS.name: 1
    }
    bronze = spark.read.format("delta").load(str(table))
    assert sorted(r.event_id for r in bronze.collect()) == ["e0", "e1", "e2", "e3", "e4", "e4b", "e4c"]


def test_an_oversize_entry_is_quarantined_and_batches_stay_within_the_byte_budget(
    streaming_spark, stream_settings, redis_client
):
    spark, stream = streaming_spark, stream_settings.bus.stream
    settings = stream_settings.updated(
        stream_max_event_bytes=2_000, stream_max_bytes_per_batch=300, stream_max_rows_per_batch=100
    )
    t0 = int(time.time() * 1000) - 60_000
    good, _ = _shop_events(t0)
    huge = {
        "event_id": "huge",
        "user_id": "u9",
        "item_id": "a",
        "event_type": "view",
        "ts": t0,
        "context": {"note": "x" * 50_000},
    }
    publish_events(redis_client, stream, [huge] + good)
    run_until_counted(spark, settings, redis_client, good=6, bad=1)

    status = text_hash(redis_client, KEYS.speed_status)
    assert status["quarantined:oversize"] == "1" and not redis_client.exists(KEYS.recent_items("u9"))
    # 300 bytes a batch: [huge (its 256-byte prefix)], [116 + 85 + 86 bytes], [85 + 85 + 101 bytes]
    assert status["last_batch_id"] == "2"
    quarantine = spark.read.format("delta").load(settings.table_path(QUARANTINE.name)).collect()
    assert [(r.reason, r.raw, r.detail) for r in quarantine] == [
        (
            "oversize",
            orjson.dumps(huge).decode()[:256],
            f"bus entry of {len(orjson.dumps(huge))} bytes, above the limit of 2000",
        ),
    ]


# -- each event id once, whatever the bus and the checkpoints do -----------------------------------
def run_until_committed(spark, settings: Settings, client) -> None:
    """Run both queries until each recorded the bus's newest entry as committed (what trimming and the
    watchdog read), then stop."""
    newest = client.xrevrange(settings.bus.stream, count=1)[0][0].decode()
    job = RunningJob(spark, settings, client)
    try:
        job.wait_for(
            lambda: read_committed(client, settings.bus.stream) == {"speed": newest, "bronze": newest},
            "both queries to commit the newest entry",
        )
    finally:
        job.stop()


def test_an_event_sent_twice_counts_once_in_bronze_and_in_features(
    streaming_spark, stream_settings, redis_client
):
    spark, stream = streaming_spark, stream_settings.bus.stream
    events = shop_events(11, int(time.time() * 1000) - 60_000)
    publish_events(redis_client, stream, events)
    publish_events(
        redis_client, stream, [events[-1]] + events
    )  # a client retrying all of it; one copy in the same batch
    run_until_committed(spark, stream_settings, redis_client)

    assert sorted(bronze_event_ids(spark, stream_settings)) == sorted(e["event_id"] for e in events)
    assert speed_feature_mismatches(redis_client, KEYS, events) == []
    status = text_hash(redis_client, KEYS.speed_status)
    assert (status["processed"], status["duplicates"]) == ("23", "12")
    user = events[0]["user_id"]
    assert zset(redis_client, KEYS.recent_event_ids(user)).keys() == {
        e["event_id"] for e in events if e["user_id"] == user
    }
    assert 0 < redis_client.ttl(KEYS.recent_event_ids(user)) <= stream_settings.speed.dedupe_ttl_s


def test_fresh_checkpoints_neither_lose_nor_recount_events(streaming_spark, stream_settings, redis_client):
    import shutil

    from spark_jobs.streaming.speed_job import BRONZE_QUERY, SPEED_QUERY, checkpoint_dir

    spark, stream = streaming_spark, stream_settings.bus.stream
    settings = stream_settings.updated(stream_max_rows_per_batch=8)
    events = shop_events(30, int(time.time() * 1000) - 60_000)
    publish_events(redis_client, stream, events[:20])
    run_until_committed(spark, settings, redis_client)

    shutil.rmtree(checkpoint_dir(settings, BRONZE_QUERY))  # bronze starts over: batch ids from 0 again
    publish_events(redis_client, stream, events[20:25])
    run_until_committed(spark, settings, redis_client)
    assert sorted(bronze_event_ids(spark, settings)) == sorted(e["event_id"] for e in events[:25])

    shutil.rmtree(checkpoint_dir(settings, SPEED_QUERY))  # speed starts over; Redis holds the old one's work
    publish_events(redis_client, stream, events[25:])
    run_until_committed(spark, settings, redis_client)
    assert sorted(bronze_event_ids(spark, settings)) == sorted(e["event_id"] for e in events)
    assert speed_feature_mismatches(redis_client, KEYS, events) == []


def test_a_stalled_bronze_keeps_its_backlog_on_the_bus_sheds_load_then_catches_up_exactly(
    streaming_spark, stream_settings, redis_client
):
    from feature_store.event_bus import BusBacklogFull
    from spark_jobs.streaming.speed_job import BRONZE_QUERY, start_query

    spark, stream = streaming_spark, stream_settings.bus.stream
    settings = stream_settings.updated(
        event_stream_maxlen=2, event_stream_max_backlog=12, stream_max_rows_per_batch=8
    )
    blocker = Path(settings.table_path(BRONZE_EVENTS.name)).parent
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("a file where bronze's folder should be: its path is unwritable")
    bronze = start_query(spark, settings, settings.redis.url, redis_client, BRONZE_QUERY)
    speed = RunningJob(spark, settings, redis_client, bronze=False)
    events = shop_events(16, int(time.time() * 1000) - 60_000)

    def publish(batch: list[dict]) -> bool:
        try:
            publish_events(
                redis_client,
                stream,
                batch,
                maxlen=settings.bus.stream_maxlen,
                max_backlog=settings.bus.stream_max_backlog,
            )
        except BusBacklogFull:
            return False
        return True

    try:
        assert [publish(events[n : n + 4]) for n in (0, 4, 8)] == [True, True, True]
        newest = redis_client.xrevrange(stream, count=1)[0][0].decode()
        speed.wait_for(
            lambda: read_committed(redis_client, stream).get("speed") == newest,
            "the speed query to commit everything",
        )
        wait_for(lambda: not bronze.isActive, "the bronze query to fail on its unwritable path")
        assert read_committed(redis_client, stream)["bronze"] == "0-0"  # registered, never committed
        assert (
            trim_consumed(redis_client, stream, settings.bus.stream_maxlen) == 0
            and redis_client.xlen(stream) == 12
        )
        assert publish(events[12:]) is False  # 12 + 4 entries would be above the cap: refused whole
        assert redis_client.xlen(stream) == 12
    finally:
        speed.stop()
        stop_all([bronze])

    blocker.unlink()  # the disk is back
    run_until_committed(spark, settings, redis_client)
    assert sorted(bronze_event_ids(spark, settings)) == sorted(e["event_id"] for e in events[:12])


# -- recovery after SIGKILL (the job as its own process) -------------------------------------------
def bronze_event_ids(spark, settings: Settings) -> list[str]:
    return [
        r.event_id
        for r in spark.read.format("delta")
        .load(settings.table_path(BRONZE_EVENTS.name))
        .select("event_id")
        .collect()
    ]


def _job_env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "LAMBDAREC_DATA_DIR": str(settings.data_dir),
        "LAMBDAREC_TABLES_URI": settings.tables_root,
        "LAMBDAREC_JARS_DIR": str(settings.jars_dir),
        "LAMBDAREC_REDIS_URL": settings.redis.url,
        "LAMBDAREC_SPARK_MASTER": "local[2]",
        "LAMBDAREC_SPARK_SHUFFLE_PARTITIONS": "2",
        "LAMBDAREC_SPARK_DRIVER_MEMORY": "1g",
        "LAMBDAREC_STREAM_TRIGGER_MS": "100",
        "LAMBDAREC_STREAM_BRONZE_TRIGGER_MS": "300",
        "LAMBDAREC_STREAM_MAX_ROWS_PER_BATCH": "40",
        "PYTHONPATH": str(project_root()),
    }


@pytest.mark.long
def test_sigkill_mid_run_then_restart_loses_and_doubles_nothing(
    spark, stream_settings, redis_client, tmp_path
):
    events = shop_events(400, int(time.time() * 1000) - 120_000)
    bad = [f"garbage {n}" for n in range(20)]
    payloads = events[:]
    for n, line in enumerate(bad):
        payloads.insert(n * 20 + 7, line)
    publish_events(redis_client, stream_settings.bus.stream, payloads)
    env = _job_env(stream_settings)
    cli = [str(Path(sys.executable).parent / "lambdarec")]
    log = open(tmp_path / "job.log", "ab")
    # First two kills aimed where a random one rarely lands (spark_jobs.streaming.failpoints): halfway
    # through the first micro-batch's Redis apply (some users' shards written, the batch's counters
    # not), then one second into a bronze micro-batch's Delta MERGEs.
    job = start_speed_job({**env, FAILPOINT: REDIS_APPLY}, log)
    assert job.wait(timeout=DEADLINE_S) == -signal.SIGKILL
    written = {key.decode().split(":")[2] for key in redis_client.keys(f"{KEYS.prefix}:s:{{u:*")}
    first_batch_users = {e["user_id"] for e in events[:38]}  # 40 entries, two of them garbage
    assert 0 < len(written) < len(first_batch_users) and status_counts(redis_client)[0] == -1
    job = start_speed_job({**env, FAILPOINT: f"{BRONZE_WRITE}:1.0"}, log)
    assert job.wait(timeout=DEADLINE_S) == -signal.SIGKILL
    job = start_speed_job(env, log)
    ours = f"{socket.gethostname()}:{job.pid}".encode()
    try:
        # the killed runs' counts and heartbeat (its TTL outlives them) are still there: wait for this
        # run's own heartbeat too, or the kill below may land before the job has started
        wait_for(
            lambda: (
                (status_counts(redis_client)[0] >= 80 and redis_client.get(KEYS.speed_heartbeat) == ours)
                or job.poll() is not None
            ),
            "the job to be mid-run",
        )
        beat = redis_client.get(KEYS.speed_heartbeat)
        assert beat == ours
        assert 0 < redis_client.pttl(KEYS.speed_heartbeat) <= stream_settings.stream.heartbeat_ttl_s * 1000
        os.killpg(job.pid, signal.SIGKILL)  # the job, its JVM and Python workers, no clean-up at all
        job.wait()
        processed_at_kill = status_counts(redis_client)[0]
        assert processed_at_kill < len(events), "the kill landed after the job had finished"
        # its heartbeat outlives it for up to the TTL, but names a process of this host that is gone
        assert redis_client.get(KEYS.speed_heartbeat) == beat

        started = subprocess.run(
            [*cli, "stream", "start", "--background"], env=env, capture_output=True, text=True, timeout=300
        )
        assert started.returncode == 0, started.stdout + started.stderr
        wait_for(
            lambda: status_counts(redis_client) == (len(events), len(bad)), "the restarted job to catch up"
        )
        wait_for(
            lambda: table_count(spark, stream_settings, BRONZE_EVENTS) == len(events), "bronze to catch up"
        )
        wait_for(
            lambda: table_count(spark, stream_settings, QUARANTINE) == len(bad), "quarantine to catch up"
        )
        stopped = subprocess.run(
            [*cli, "stream", "stop"], env=env, capture_output=True, text=True, timeout=300
        )
        assert stopped.returncode == 0 and "stopped" in stopped.stdout, stopped.stdout + stopped.stderr
        assert text_hash(redis_client, KEYS.speed_status)["state"] == "stopped"
        assert redis_client.get(KEYS.speed_heartbeat) is None  # a clean stop ends it
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
        subprocess.run([*cli, "stream", "stop"], env=env, capture_output=True, timeout=300)
        log.close()
        for path in (
            tmp_path / "job.log",
            stream_settings.run_dir / "stream.log",
        ):  # shown when the test fails
            print(
                f"--- {path}",
                *path.read_text(errors="replace").splitlines()[-40:] if path.exists() else [],
                sep="\n",
            )
        print(
            "status",
            text_hash(redis_client, KEYS.speed_status),
            "bronze",
            table_count(spark, stream_settings, BRONZE_EVENTS),
        )

    assert speed_feature_mismatches(redis_client, KEYS, events) == []
    assert sorted(bronze_event_ids(spark, stream_settings)) == sorted(
        e["event_id"] for e in events
    )  # each exactly once


@pytest.mark.long
def test_a_job_asked_through_redis_stops_cleanly_wherever_it_runs(stream_settings, redis_client, tmp_path):
    env = _job_env(stream_settings)
    cli = [str(Path(sys.executable).parent / "lambdarec")]
    log = open(tmp_path / "job.log", "ab")
    job = start_speed_job(env, log)
    identity = f"{socket.gethostname()}:{job.pid}"
    try:
        wait_for(
            lambda: (
                text_hash(redis_client, KEYS.speed_status).get("state") == "running" or job.poll() is not None
            ),
            "the job to run",
        )
        assert redis_client.get(KEYS.speed_heartbeat) == identity.encode()
        # the speed query's micro-batch phases reach the status hash (spark_jobs.streaming.progress)
        publish_events(redis_client, stream_settings.bus.stream, shop_events(20, int(time.time() * 1000)))
        wait_for(
            lambda: "triggerExecution" in phases_in_status(text_hash(redis_client, KEYS.speed_status)),
            "the speed query's phases",
        )
        phases = phases_in_status(text_hash(redis_client, KEYS.speed_status))
        assert {"addBatch", "latestOffset", "triggerExecution"} <= phases.keys()
        assert 0 <= phases["addBatch"] <= phases["triggerExecution"]
        redis_client.set(KEYS.speed_stop_request, "other-host:1")  # meant for another job: not this one's
        time.sleep(3)
        assert job.poll() is None and redis_client.get(KEYS.speed_stop_request) == b"other-host:1"
        stopped = subprocess.run(
            [*cli, "stream", "stop", "--remote", "--timeout-s", "120"],
            env=env,
            capture_output=True,
            text=True,
            timeout=200,
        )
        assert (stopped.returncode, stopped.stdout.strip()) == (
            0,
            f"stopped the streaming job ({identity})",
        ), stopped.stderr
        assert job.wait(timeout=120) == 0
        assert text_hash(redis_client, KEYS.speed_status)["state"] == "stopped"
        assert redis_client.get(KEYS.speed_heartbeat) is None
        assert redis_client.get(KEYS.speed_stop_request) is None
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
        log.close()
        print(*(tmp_path / "job.log").read_text(errors="replace").splitlines()[-30:], sep="\n")


def test_events_publish_command_checks_lines_unless_raw(redis_server, redis_client, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from lambdarec.cli import build_app

    lines = [
        orjson.dumps(
            {"event_id": "e1", "user_id": "u1", "item_id": "a", "event_type": "view", "ts": 1_700_000_000_000}
        ).decode(),
        "not json",
        orjson.dumps(
            {"event_id": "e2", "user_id": "u1", "item_id": "a", "event_type": "teleport", "ts": 1}
        ).decode(),
        "",
        orjson.dumps(
            {
                "event_id": "e3",
                "user_id": "u2",
                "item_id": "b",
                "event_type": "rating",
                "value": 4.5,
                "ts": "2024-01-01T00:00:00Z",
            }
        ).decode(),
    ]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")
    monkeypatch.setenv("LAMBDAREC_REDIS_URL", redis_server.url)
    monkeypatch.setenv("LAMBDAREC_DATA_DIR", str(tmp_path))
    runner = CliRunner()

    checked = runner.invoke(build_app(), ["events", "publish", str(path), "--chunk-size", "2"])
    assert checked.exit_code == 0, checked.output
    assert "published 2 events to lr:events" in checked.output
    assert (
        "skipped 2 lines that break the event contract: malformed 1, unknown_event_type 1" in checked.output
    )
    assert [
        orjson.loads(f[EVENT_FIELD.encode()])["event_id"] for _, f in redis_client.xrange("lr:events")
    ] == ["e1", "e3"]
    assert (
        orjson.loads(redis_client.xrange("lr:events")[1][1][EVENT_FIELD.encode()])["ts"] == 1_704_067_200_000
    )  # wire form: epoch ms

    raw = runner.invoke(build_app(), ["events", "publish", str(path), "--raw"])
    assert raw.exit_code == 0 and "published 4 events" in raw.output
    assert [f[EVENT_FIELD.encode()].decode() for _, f in redis_client.xrange("lr:events")][2:] == [
        line for line in lines if line
    ]

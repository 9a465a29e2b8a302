"""The speed layer's streaming job: the event bus -> short-term features in Redis, and -> Delta bronze.

Who calls it: `lambdarec stream start` (lambdarec/commands/stream.py) and
`python -m spark_jobs.streaming.speed_job`; tests start the queries on their own Spark session.

Two Structured Streaming queries read the same bus, each with its own checkpoint under
`Settings.checkpoints_dir`:

- `speed` (trigger `stream_trigger_ms`): validates every event with the event contract (bad ones are
  counted by reason), plans the Redis operations (`speed_features`) and applies them idempotently per
  batch id (`redis_apply`), then writes freshness and counters to the `<p>:s:status` hash.
- `bronze` (trigger `stream_bronze_trigger_ms`): the same validation, merges good events into
  `bronze/events` (insert-only on event_id, pruned to the batch's event dates) and rejects (with their
  reason) into `bronze/quarantine` (on row_key): each event id once, however often it was sent.

Why two queries: a Delta commit costs 0.5-1 s of the 2 cores; on the speed query's path it would put
every feature a second behind. The bronze query commits every few seconds instead (fewer, larger files)
and both stay exactly-once per event id (see `write_bronze_batch`, `redis_apply`).

The bus is a Redis Stream by default (`redis_stream_source`); `LAMBDAREC_EVENT_BUS=kafka` reads a
Kafka topic with Spark's Kafka source instead (`make setup` puts its JARs in `Settings.jars_dir`).

Why one module: the two queries, their writers and the restart loop share the query names, the status
hash and the bus; the pure planning lives in speed_features, redis_apply and bronze_rows, the
liveness rules in feature_store.stream_liveness.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from feature_store.event_bus import newest_entry_id, record_committed, register_consumer, trim_consumed
from feature_store.events import EventTypes
from feature_store.redis_cluster import open_redis
from feature_store.redis_keys import RedisKeys
from feature_store.settings import Settings
from feature_store.stream_liveness import end_heartbeat, job_identity, renew_heartbeat, stop_requested
from spark_jobs.streaming import failpoints
from spark_jobs.streaming.progress import phase_fields, progress_phases, writer_phases
from spark_jobs.streaming.redis_apply import (
    apply_batch,
    apply_batch_by_slot,
    catalog_categories,
    clear_applied_markers,
    write_status,
)
from spark_jobs.streaming.speed_features import (
    counter_ops,
    freshness_fields,
    items_without_category,
    reject_oversize,
    shard_ops,
    slot_ops,
    speed_params,
    trending_ops,
    validate_entries,
    with_catalog_categories,
)

SPEED_QUERY = "speed"
BRONZE_QUERY = "bronze"
LAG_WINDOW_BATCHES = 20  # freshness percentiles cover the last this many micro-batches

log = logging.getLogger(__name__)


def bus_source_label(settings: Settings) -> str:
    """What bronze's `source` column says about where a streamed event came from."""
    if settings.bus.kind == "kafka":
        return f"kafka:{settings.kafka.topic}"
    return f"stream:{settings.bus.stream}"


def max_rows_per_batch(settings: Settings, consumer: str) -> int:
    """Admission cap of a query: the bronze query triggers less often, so it may take proportionally
    more rows per batch (else it could never keep up with what the speed query admits)."""
    if consumer == BRONZE_QUERY:
        return settings.stream.max_rows_per_batch * max(
            1, settings.stream.bronze_trigger_ms // max(1, settings.stream.trigger_ms)
        )
    return settings.stream.max_rows_per_batch


# Where a query with a fresh checkpoint starts reading the Redis Stream. Speed: after what the old
# checkpoint committed, since Redis already holds its effects (the per-user event ids catch the one batch
# that may have been applied but not committed). Bronze: the stream's start, since MERGE on event_id
# makes re-reading harmless and a stalled bronze may have written less than it read.
FRESH_CHECKPOINT_START = {SPEED_QUERY: "committed", BRONZE_QUERY: "earliest"}


def read_bus(spark, settings: Settings, redis_url: str, consumer: str):
    """The bus as a streaming DataFrame of `entry_id`, `bus_time_ms`, `raw` (the event JSON)."""
    if settings.bus.kind == "kafka":
        return read_kafka_bus(spark, settings, max_rows_per_batch(settings, consumer))
    from spark_jobs.streaming.redis_stream_source import SOURCE_NAME, register_redis_stream_source

    register_redis_stream_source(spark)
    return (
        spark.readStream.format(SOURCE_NAME)
        .option("url", redis_url)
        .option("cluster", str(settings.redis.cluster).lower())
        .option("stream", settings.bus.stream)
        .option("consumer", consumer)
        .option("starting", FRESH_CHECKPOINT_START[consumer])
        .option("max_rows_per_batch", max_rows_per_batch(settings, consumer))
        .option("max_bytes_per_batch", settings.stream.max_bytes_per_batch)
        .option("max_event_bytes", settings.stream.max_event_bytes)
        .load()
    )


def read_kafka_bus(spark, settings: Settings, max_rows: int):
    """A Kafka topic whose message values are the same event JSON as the Redis Stream's `event` field.

    Exactly once as on the Redis Stream: Spark's Kafka source plans each micro-batch's offset range
    in the checkpoint before running it, so a restarted query replays the same range under the same
    batch id, which the writers make idempotent. `entry_id` is `<partition>-<offset>` (the publisher's
    bus id); `bus_time_ms` is the record timestamp (the broker's append time on the local broker)."""
    from pyspark.sql import functions as F

    from spark_jobs.jars import kafka_source_coordinates, missing_packages
    from spark_jobs.streaming.redis_stream_source import OVERSIZE_PREFIX_BYTES

    if not settings.kafka.bootstrap_servers:
        raise ValueError("LAMBDAREC_EVENT_BUS=kafka needs LAMBDAREC_KAFKA_BOOTSTRAP_SERVERS (host:port,...)")
    if missing_packages(
        [p.name for p in settings.jars_dir.glob("*.jar")],
        {"spark-sql-kafka-0-10_": kafka_source_coordinates()},
    ):
        raise ValueError(
            f"Spark's Kafka source is not in {settings.jars_dir}: run `make setup` (python -m spark_jobs.jars) once"
        )
    frame = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", settings.kafka.bootstrap_servers)
        .option("subscribe", settings.kafka.topic)
        .option("startingOffsets", "earliest")
        .option("maxOffsetsPerTrigger", max_rows)
        .load()
    )
    size = F.coalesce(F.octet_length(F.col("value")), F.lit(0)).cast("long")
    return frame.select(
        F.concat_ws("-", F.col("partition").cast("string"), F.col("offset").cast("string")).alias("entry_id"),
        F.unix_millis(F.col("timestamp")).alias("bus_time_ms"),
        F.when(size > settings.stream.max_event_bytes, F.substring(F.col("value"), 1, OVERSIZE_PREFIX_BYTES))
        .otherwise(F.col("value"))
        .cast("string")
        .alias("raw"),
        size.alias("size_bytes"),
    )


def record_applied(client, settings: Settings, query: str, entries: list) -> None:
    """Once a micro-batch's effects are stored, record its newest Redis Stream entry as the query's
    committed offset: Spark tells the source only when the next micro-batch runs, so on an idle bus the
    last batch would stay "unread" for trimming and the watchdog (which would call the job stuck)."""
    newest = newest_entry_id(entry[0] for entry in entries)
    if settings.bus.kind == "redis" and newest is not None:
        record_committed(client, settings.bus.stream, query, newest)


def collect_entries(df) -> list[tuple[str, int, str | None, int]]:
    """A micro-batch of the bus as `(entry_id, bus_time_ms, raw, size_bytes)` in the driver (its size
    bounded by the source's admission control: rows and bytes)."""
    return [(r.entry_id, r.bus_time_ms, r.raw, r.size_bytes) for r in df.collect()]


def check_entries(entries, settings: Settings, event_types: EventTypes) -> tuple[list, list]:
    """(good events, rejected entries) of a micro-batch, the same for both queries: oversize entries
    are rejected undecoded, the rest by the event contract's own validation."""
    kept, oversize = reject_oversize(entries, settings.stream.max_event_bytes)
    good, rejected = validate_entries(
        kept,
        future_tolerance=timedelta(minutes=settings.batch.future_tolerance_minutes),
        event_types=event_types,
    )
    return good, oversize + rejected


@dataclass(frozen=True)
class SpeedBatchReport:
    batch_id: int
    events: int
    quarantined: int
    applied_shards: int
    skipped_shards: int
    visible_ms: int


class SpeedWriter:
    """`foreachBatch` of the speed query: one micro-batch of bus entries -> Redis, idempotently."""

    def __init__(self, client, settings: Settings, event_types: EventTypes | None = None) -> None:
        self.client = client
        self.settings = settings
        self.keys = RedisKeys(settings.redis.key_prefix)
        self.event_types = event_types or EventTypes()
        self.params = speed_params(settings, self.event_types)
        self.bus_lags: deque[list[int]] = deque(maxlen=LAG_WINDOW_BATCHES)
        self.event_lags: deque[list[int]] = deque(maxlen=LAG_WINDOW_BATCHES)
        self.read_ms: deque[int] = deque(maxlen=LAG_WINDOW_BATCHES)
        self.apply_ms: deque[int] = deque(maxlen=LAG_WINDOW_BATCHES)

    def __call__(self, df, batch_id: int) -> None:
        started = time.monotonic()
        use_pool(df.sparkSession, SPEED_QUERY)
        entries = collect_entries(df)
        read = time.monotonic()
        report = self.process(entries, batch_id)
        record_applied(self.client, self.settings, SPEED_QUERY, entries)
        done = time.monotonic()
        if entries:
            self.read_ms.append(int((read - started) * 1000))
            self.apply_ms.append(int((done - read) * 1000))
        self.publish_status(report, entries, batch_ms=int((done - started) * 1000))

    def process(self, entries: list[tuple[str, int, str | None, int]], batch_id: int) -> SpeedBatchReport:
        good, rejected = check_entries(entries, self.settings, self.event_types)
        events = [speed for speed, _ in good]
        events = with_catalog_categories(
            events, catalog_categories(self.client, self.keys, items_without_category(events))
        )
        batch_ops = trending_ops(self.keys, self.params, events) + counter_ops(
            self.keys, len(events), rejected
        )
        if self.settings.redis.cluster:
            result = apply_batch_by_slot(
                self.client,
                self.keys,
                self.params,
                SPEED_QUERY,
                batch_id,
                slot_ops(self.keys, self.params, events),
                batch_ops,
            )
        else:
            shards = shard_ops(self.keys, self.params, events)
            result = apply_batch(
                self.client, self.keys, self.params, SPEED_QUERY, batch_id, shards, batch_ops
            )
        if events:
            self.bus_lags.append([max(0, result.visible_ms - e.bus_time_ms) for e in events])
            self.event_lags.append([max(0, result.visible_ms - e.ts_ms) for e in events])
        return SpeedBatchReport(
            batch_id, len(events), len(rejected), result.applied, result.skipped, result.visible_ms
        )

    def publish_status(self, report: SpeedBatchReport, entries: list, batch_ms: int) -> None:
        fields = {
            "last_batch_id": report.batch_id,
            "last_batch_events": report.events,
            "last_batch_quarantined": report.quarantined,
            "last_batch_skipped_shards": report.skipped_shards,
            "last_batch_entries": len(entries),
            "last_batch_ms": batch_ms,
            "last_visible_at_ms": report.visible_ms,
            "updated_at": int(time.time() * 1000),
            **freshness_fields(
                [lag for batch in self.bus_lags for lag in batch],
                [lag for batch in self.event_lags for lag in batch],
            ),
            **phase_fields(writer_phases(self.read_ms, self.apply_ms)),
        }
        if entries:
            fields["last_entry_id"] = entries[-1][0]
        write_status(self.client, self.keys, fields)


class BronzeWriter:
    """`foreachBatch` of the bronze query: good events -> bronze/events, rejects -> bronze/quarantine,
    each event id and each rejected entry once (MERGE insert-only), then trims what every query has
    committed off the bus.

    Validation is the event contract's own (`validate_entries`, as in the speed query) on the
    collected batch, not the Spark twin in spark_jobs.ingest: that one's plan is large enough that
    planning it every micro-batch took seconds (and overflowed the stream thread's stack), where the
    batch ingest plans it once per file."""

    def __init__(self, spark, client, settings: Settings, event_types: EventTypes | None = None) -> None:
        self.spark = spark
        self.client = client
        self.settings = settings
        self.keys = RedisKeys(settings.redis.key_prefix)
        self.event_types = event_types or EventTypes()
        self.source = bus_source_label(settings)
        self.table_paths: dict = {}  # tables created (if missing) once per run, not every batch

    def __call__(self, df, batch_id: int) -> None:
        from feature_store.tables import BRONZE_EVENTS, QUARANTINE
        from spark_jobs.streaming.bronze_rows import bronze_event_rows, first_copies, quarantine_rows

        started = time.monotonic()
        use_pool(self.spark, BRONZE_QUERY)
        entries = collect_entries(df)
        good, rejected = check_entries(entries, self.settings, self.event_types)
        bus_times = {entry[0]: entry[1] for entry in entries}
        rows = {
            BRONZE_EVENTS: bronze_event_rows(first_copies(good), self.source),
            QUARANTINE: quarantine_rows(rejected, bus_times, self.source),
        }
        failpoints.reach(failpoints.BRONZE_WRITE)
        inserted = write_bronze_batch(self.spark, self.settings, rows, self.table_paths)
        record_applied(self.client, self.settings, BRONZE_QUERY, entries)
        if self.settings.bus.kind == "redis":
            trim_consumed_safely(self.client, self.settings.bus.stream, self.settings.bus.stream_maxlen)
        write_status(
            self.client,
            self.keys,
            {
                "bronze_last_batch_id": batch_id,
                "bronze_last_batch_rows": len(good),
                "bronze_last_batch_inserted": inserted.get(BRONZE_EVENTS.name, 0),
                "bronze_last_batch_ms": int((time.monotonic() - started) * 1000),
            },
        )


# The key each streamed table is merged on: one row per event id, one per bus entry of a rejected line.
MERGE_KEYS = {"bronze/events": "event_id", "bronze/quarantine": "row_key"}
# A column every copy of a key carries unchanged (an event id names one event at one time): the lookup
# reads only the files whose range of it overlaps the batch's.
MERGE_RANGES = {"bronze/events": "ts"}


@functools.cache
def table_schema(ddl: str):
    """The StructType of a table's DDL, parsed once per run (not every micro-batch)."""
    from pyspark.sql.types import StructType

    return StructType.fromDDL(ddl)


def write_bronze_batch(
    spark, settings: Settings, rows_by_table: dict, table_paths: dict | None = None
) -> dict:
    """MERGE each table's rows of the batch insert-only on its key (events: event_id, quarantine:
    row_key), the lookup pruned to the partitions the batch touches: an event's date partition holds
    every earlier copy of it (streamed or batch-ingested), so a re-sent event, a replayed batch id or a
    fresh checkpoint re-reading the bus adds nothing, and a batch reads one day's keys, not the table.
    Events: only the day's files whose event times overlap the batch's (MERGE_RANGES), so the
    lookup's cost stays that of the batch's time span, not of the day so far.
    `table_paths` caches the tables already ensured to exist. Returns rows inserted per table name."""
    from spark_jobs.delta_io import ensure_table, merge_insert
    from spark_jobs.streaming.bronze_rows import arrow_batch

    paths = table_paths if table_paths is not None else {}
    inserted: dict[str, int] = {}
    for table, rows in rows_by_table.items():
        if not rows:
            continue
        if table not in paths:
            paths[table] = ensure_table(spark, settings, table)
        schema = table_schema(table.ddl)
        frame = spark.createDataFrame(arrow_batch(rows, schema))
        within = {column: [row[schema.names.index(column)] for row in rows] for column in table.partition_by}
        between = {}
        if (column := MERGE_RANGES.get(table.name)) is not None:
            values = [row[schema.names.index(column)] for row in rows]
            between[column] = (min(values), max(values))
        inserted[table.name] = merge_insert(
            spark,
            settings,
            table,
            frame,
            MERGE_KEYS[table.name],
            within=within,
            between=between,
            path=paths[table],
        )
    return inserted


def trim_consumed_safely(client, stream: str, maxlen: int) -> None:
    import redis

    try:
        trim_consumed(client, stream, maxlen)
    except redis.RedisError as exc:  # trimming can wait for the next batch
        log.warning("could not trim the bus: %s", exc)


def checkpoint_dir(settings: Settings, query: str) -> Path:
    return settings.checkpoints_dir / query


def is_fresh_checkpoint(path: Path) -> bool:
    """No offsets planned yet: a brand-new query whose batch ids start again at 0."""
    offsets = path / "offsets"
    return not offsets.exists() or not any(offsets.iterdir())


def start_query(spark, settings: Settings, redis_url: str, client, name: str):
    """Start one of the job's queries (`speed` or `bronze`) from its checkpoint."""
    if name == SPEED_QUERY:
        speed_checkpoint = checkpoint_dir(settings, SPEED_QUERY)
        if is_fresh_checkpoint(speed_checkpoint):
            # Batch ids restart at 0 with a new checkpoint: markers of an old one would skip them all.
            clear_applied_markers(client, RedisKeys(settings.redis.key_prefix), SPEED_QUERY)
        writer, trigger_ms = SpeedWriter(client, settings), settings.stream.trigger_ms
    elif name == BRONZE_QUERY:
        writer, trigger_ms = BronzeWriter(spark, client, settings), settings.stream.bronze_trigger_ms
    else:
        raise ValueError(
            f"unknown streaming query {name!r}; the job runs {SPEED_QUERY!r} and {BRONZE_QUERY!r}"
        )
    if settings.bus.kind == "redis":
        register_consumer(client, settings.bus.stream, name)
    use_pool(spark, name)
    return (
        read_bus(spark, settings, redis_url, name)
        .writeStream.queryName(f"lambdarec_{name}")
        .foreachBatch(writer)
        .option("checkpointLocation", str(checkpoint_dir(settings, name)))
        .trigger(processingTime=f"{trigger_ms} milliseconds")
        .start()
    )


def start_queries(spark, settings: Settings, redis_url: str, client, *, bronze: bool = True) -> list:
    """Start the speed query (and the bronze query); returns the running StreamingQuery objects."""
    names = (SPEED_QUERY, BRONZE_QUERY) if bronze else (SPEED_QUERY,)
    return [start_query(spark, settings, redis_url, client, name) for name in names]


def restart_delay_s(failures: int) -> float:
    """Backoff before restarting a failed query: 1, 2, 4 ... capped at 60 s."""
    return float(min(60, 2 ** max(0, failures - 1)))


def stop_gracefully(query, timeout_s: float = 30.0) -> None:
    """Let a running micro-batch finish, then stop (a stop mid-batch is safe too, only slower to redo)."""
    deadline = time.monotonic() + timeout_s
    while query.isActive and query.status.get("isTriggerActive") and time.monotonic() < deadline:
        time.sleep(0.05)
    query.stop()


# Fair-scheduler pools of the job's two queries. With FIFO scheduling a bronze Delta commit (its write
# and snapshot jobs fill every core for up to seconds) queued the speed query's tiny read task behind
# it, and features went seconds stale every time bronze committed; the speed pool's minShare gives it
# the next free core first.
SCHEDULER_POOLS = {SPEED_QUERY: {"weight": 8, "minShare": 1}, BRONZE_QUERY: {"weight": 1, "minShare": 0}}


def scheduler_pools_xml(pools: dict[str, dict[str, int]] = SCHEDULER_POOLS) -> str:
    """The fair scheduler allocation file for `pools` (name -> weight, minShare)."""
    body = "".join(
        f'  <pool name="{name}"><schedulingMode>FAIR</schedulingMode><weight>{p["weight"]}</weight>'
        f"<minShare>{p['minShare']}</minShare></pool>\n"
        for name, p in pools.items()
    )
    return f'<?xml version="1.0"?>\n<allocations>\n{body}</allocations>\n'


def scheduler_pools_file(settings: Settings) -> Path:
    return settings.data_dir / "spark-conf" / "streaming-pools.xml"


# Spark writes the offset log, the commit log and state store files through Hadoop's FileContext by
# default. On a local disk without Hadoop's native library FileContext forks a `chmod` and several
# `readlink` processes per file: 80-90 ms of each micro-batch's `walCommit` and `commitOffsets`, as
# long as the batch's own work. The FileSystem-based manager writes the same temp file and renames it
# (atomic on a POSIX disk) with one `chmod`: 20 ms each. The checkpoints always live on the local
# `Settings.checkpoints_dir`, and one job writes them (the heartbeat keeps a second one out).
FILE_SYSTEM_CHECKPOINTS = (
    "org.apache.spark.sql.execution.streaming.checkpointing.FileSystemBasedCheckpointFileManager"
)


def streaming_spark_conf(settings: Settings) -> dict[str, str]:
    """Spark conf of the job's own session. Delta rebuilds a table snapshot in
    `snapshotPartitions` tasks (50 by default) at every commit; with a commit every few seconds on a
    few cores that dominated the bronze query's batches, so it follows the configured parallelism.
    No auto compaction: it lowers the job's CPU once the day's partition holds many small files, but
    its rewrites come as bursts that put bronze up to 19-23 s behind and raised the recommendations'
    p99 beside the job 1.6-1.8x in a 10-minute soak, with Delta's default sizes and with compacted
    files kept (benchmarks/full/2026-12-07-s20)."""
    return {
        "spark.databricks.delta.snapshotPartitions": str(max(1, settings.spark.shuffle_partitions)),
        "spark.sql.streaming.checkpointFileManagerClass": FILE_SYSTEM_CHECKPOINTS,
    }


def scheduler_conf(settings: Settings) -> dict[str, str]:
    """Fair scheduling with the job's pools (`SCHEDULER_POOLS`); fixed when the SparkContext starts."""
    return {
        "spark.scheduler.mode": "FAIR",
        "spark.scheduler.allocation.file": str(scheduler_pools_file(settings)),
    }


def write_scheduler_pools(settings: Settings) -> Path:
    path = scheduler_pools_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(scheduler_pools_xml())
    return path


def use_pool(spark, name: str) -> None:
    """Jobs this thread submits from now on run in the query's pool (a query's stream thread inherits
    it at start; foreachBatch runs its jobs on the callback's own thread, so each writer sets it too)."""
    spark.sparkContext.setLocalProperty("spark.scheduler.pool", name)


def run(settings: Settings, redis_url: str, stop: threading.Event | None = None) -> int:
    """Run both queries on the Redis at `redis_url` until `stop` is set; 0 on a clean stop."""
    from spark_jobs.session import build_spark

    stop = stop or threading.Event()
    client = open_redis(
        redis_url,
        settings.redis.cluster,
        socket_timeout=5,
        socket_connect_timeout=2,
        health_check_interval=10,
    )
    keys = RedisKeys(settings.redis.key_prefix)
    write_scheduler_pools(settings)
    spark = build_spark(settings, {**streaming_spark_conf(settings), **scheduler_conf(settings)})
    quiet_trigger_warnings(spark)
    try:
        return _run_queries(spark, settings, redis_url, client, keys, stop)
    finally:
        spark.stop()


def run_until_signalled(settings: Settings, redis_url: str) -> int:
    """The job as a process: logs to stderr, SIGTERM/SIGINT stop it cleanly."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return run(settings, redis_url, stop)


# How often the speed query's phase medians are refreshed in the status hash (reading Spark's recent
# progress reports costs the driver a few ms; the phases change slowly).
PHASES_EVERY_S = 5.0


def _run_queries(spark, settings: Settings, url: str, client, keys: RedisKeys, stop: threading.Event) -> int:
    """Keep both queries running until `stop`: a query that fails (a Python worker that did not start
    in time on a loaded machine, a lost Delta commit race, ...) is restarted from its checkpoint with
    backoff, which exactly-once makes safe; the job itself does not die."""
    from spark_jobs.streaming.redis_stream_source import STOPPING, retry_forever

    identity = job_identity()
    beat = functools.partial(renew_heartbeat, client, keys, identity, settings.stream.heartbeat_ttl_s)
    beat()  # before the queries start: a second `stream start` (on any host) sees this job from now on
    names = (SPEED_QUERY, BRONZE_QUERY)
    queries = {
        n: retry_forever(lambda n=n: start_query(spark, settings, url, client, n), f"starting the {n} query")
        for n in names
    }
    failures: dict[str, int] = {n: 0 for n in names}
    restart_at: dict[str, float] = {}
    heartbeat(
        client,
        keys,
        {
            "state": "running",
            "pid": os.getpid(),
            "started_at": int(time.time() * 1000),
            "bus": bus_source_label(settings),
            "trigger_ms": settings.stream.trigger_ms,
            "bronze_trigger_ms": settings.stream.bronze_trigger_ms,
            "max_rows_per_batch": settings.stream.max_rows_per_batch,
        },
    )
    retry_forever(
        lambda: client.hdel(keys.speed_status, "error", "last_error", "stopped_at"),
        "clearing the last run's status",
    )
    log.info("streaming from %s (trigger %d ms)", bus_source_label(settings), settings.stream.trigger_ms)
    phases_due = 0.0
    while not stop.is_set():
        for name in names:
            query = queries[name]
            if query is not None and not query.isActive:
                failures[name] += 1
                restart_at[name] = time.monotonic() + restart_delay_s(failures[name])
                log.error(
                    "streaming query %s stopped (%s); restarting from its checkpoint", name, query.exception()
                )
                heartbeat(
                    client,
                    keys,
                    {
                        "last_error": f"{name}: {str(query.exception())[:500]}",
                        f"{name}_restarts": failures[name],
                    },
                )
                queries[name] = None
            if queries[name] is None and time.monotonic() >= restart_at[name]:
                try:
                    queries[name] = start_query(spark, settings, url, client, name)
                except Exception as exc:  # e.g. Redis down while checking markers: try again later
                    log.error("could not restart the %s query: %s", name, exc)
                    restart_at[name] = time.monotonic() + restart_delay_s(failures[name])
        state = "running" if all(q is not None for q in queries.values()) else "restarting"
        fields = {"state": state, "updated_at": int(time.time() * 1000)}
        if queries[SPEED_QUERY] is not None and time.monotonic() >= phases_due:
            phases_due = time.monotonic() + PHASES_EVERY_S
            fields.update(phase_fields(progress_phases(queries[SPEED_QUERY].recentProgress)))
        heartbeat(client, keys, fields)
        beat()
        if stop_requested(client, keys, identity):
            log.info("asked through Redis to stop (%s)", keys.speed_stop_request)
            stop.set()
        stop.wait(1.0)
    STOPPING.set()  # a batch stuck retrying an unavailable Redis gives up instead of blocking the stop
    for query in queries.values():
        if query is not None:
            stop_gracefully(query)
    heartbeat(client, keys, {"state": "stopped", "stopped_at": int(time.time() * 1000)})
    end_heartbeat(client, keys, identity)
    return 0


def quiet_trigger_warnings(spark) -> None:
    """A micro-batch longer than a sub-second trigger is normal under load; the status hash tracks
    freshness, so Spark's per-batch "falling behind" warning is only noise in the job's log."""
    jvm = spark.sparkContext._jvm
    level = jvm.org.apache.logging.log4j.Level.ERROR
    jvm.org.apache.logging.log4j.core.config.Configurator.setLevel(
        "org.apache.spark.sql.execution.streaming.runtime.ProcessingTimeExecutor", level
    )


def heartbeat(client, keys: RedisKeys, fields: dict) -> None:
    """Best effort: Redis may be restarting; the next heartbeat tells the truth again."""
    import redis

    try:
        client.hset(keys.speed_status, mapping={k: str(v) for k, v in fields.items()})
    except redis.RedisError as exc:
        log.warning("could not write the streaming status: %s", exc)


def main() -> None:
    """`python -m spark_jobs.streaming.speed_job`: needs LAMBDAREC_REDIS_URL (`lambdarec stream start`
    resolves the embedded redis-server itself)."""
    from feature_store.settings import load_settings

    settings = load_settings()
    if not settings.redis.url:
        raise SystemExit(
            "set LAMBDAREC_REDIS_URL to the online store, or start the job with `lambdarec stream start`"
        )
    raise SystemExit(run_until_signalled(settings, settings.redis.url))


if __name__ == "__main__":
    main()

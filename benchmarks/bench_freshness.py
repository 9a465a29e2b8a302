"""Speed-layer freshness: event written to the bus -> its feature visible in Redis, under sustained load.

Runs the real streaming job (`python -m spark_jobs.streaming.speed_job`, both queries) as its own
process against a private redis-server, publishes events at fixed rates (200, 1,000, 5,000 events/s,
then higher to find where the lag stops being bounded), and meanwhile sends probe events one at a
time: a probe's lag is the time from just before its publish (XADD, or a Kafka send acknowledged by
the broker) to the first poll that sees it in the user's recent items. The job's own view (status
hash: bus-clock lag of the last batches) is recorded too.

`--bus redis` (default, result `freshness`) publishes to a Redis Stream; `--bus kafka` (result
`freshness_kafka`) to the local Kafka broker (`lambdarec.kafka_broker`, started and stopped here)
with the API's idempotent, acks=all publisher.

Baseline measured in the same run: the speed layer's Redis work alone (validate + plan + the idempotent
Lua apply of one batch, no Spark), so the ratio says what the micro-batch machinery adds. Also measured:
one micro-batch into bronze as the bronze query writes it (MERGE insert-only on event_id, pruned to the
batch's event dates) vs the batch ingest's MERGE over the whole table, on a table that already holds
rows of many days.

A rate is "bounded" when the job caught up within 10 s after publishing stopped and the probes' p99
in the last third of the run is at most 1.5x (+ 0.5 s) the first third's.

`python -m benchmarks.bench_freshness [--quick] [--bus kafka]` (quick: 15 s per rate instead of 60 s).

Why one module: one experiment (set-up, load generator, probes, result file) read as one script.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
import time
from datetime import UTC
from pathlib import Path

from benchmarks.common import REPO, main, percentiles, process_tree_cpu_s, write_result
from lambdarec.testing import start_speed_job
from spark_jobs.streaming.progress import phases_in_status

NAME = "freshness"
REQUIRED_RATES = (200, 1_000, 5_000)
EXTRA_RATES = (10_000, 20_000)  # searched upwards for the highest bounded rate
PROBE_EVERY_S = 0.05  # 20 probes/s, whatever the lag
POLL_S = 0.002
USERS, ITEMS = 20_000, 5_000
KINDS = ("view", "view", "view", "view", "click", "click", "add_to_cart", "purchase", "play", "skip")


def _events(start: int, count: int, now_ms: int) -> list[dict]:
    return [
        {
            "event_id": f"b{n}",
            "user_id": f"u{(n * 7919) % USERS}",
            "item_id": f"i{(n * 104729) % ITEMS}",
            "event_type": KINDS[n % len(KINDS)],
            "ts": now_ms,
            "context": {"category": f"c{n % 20}"},
        }
        for n in range(start, start + count)
    ]


class Prober(threading.Thread):
    """Sends a probe event every PROBE_EVERY_S and polls (one pipeline for all probes in flight) until
    the speed layer shows each in its user's recent items; several probes may be in flight."""

    def __init__(self, url: str, publisher, recent_key) -> None:
        super().__init__(daemon=True)
        import redis

        self.client = redis.Redis.from_url(url)
        self.publisher, self.recent_key = publisher, recent_key
        self.samples: list[tuple[float, float]] = []  # (sent at, lag s)
        self.pending: dict[str, float] = {}  # probe user -> sent at
        self.stop = threading.Event()
        self.count = 0

    def run(self) -> None:
        next_probe = 0.0
        while not self.stop.is_set():
            now = time.time()
            if now >= next_probe:
                self.count += 1
                user = f"probe-{time.time_ns()}-{self.count}"
                self.publisher.publish(
                    [
                        {
                            "event_id": user,
                            "user_id": user,
                            "item_id": "p",
                            "event_type": "view",
                            "ts": int(now * 1000),
                        }
                    ]
                )
                self.pending[user] = now
                next_probe = now + PROBE_EVERY_S
            self.poll()
            self.stop.wait(POLL_S)

    def poll(self) -> None:
        """One pipelined look at every probe in flight; the ones now visible become samples."""
        if not self.pending:
            return
        users = list(self.pending)
        pipe = self.client.pipeline(transaction=False)
        for user in users:
            pipe.zscore(self.recent_key(user), "p")
        scores = pipe.execute()
        seen_at = time.time()
        for user, score in zip(users, scores):
            if score is not None:
                sent = self.pending.pop(user)
                self.samples.append((sent, seen_at - sent))

    def drain(self, timeout_s: float) -> None:
        """After publishing stopped: keep polling until every probe was seen (or the deadline)."""
        deadline = time.time() + timeout_s
        while self.pending and time.time() < deadline:
            self.poll()
            time.sleep(POLL_S)


def _status(client, keys) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in client.hgetall(keys.speed_status).items()}


def _wait(condition, timeout_s: float, interval_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval_s)
    return False


def measure_rate(
    client, keys, url: str, open_bus, rate: int, duration_s: float, first_id: int, job_pid: int
) -> tuple[dict, int]:
    """`open_bus()` -> a new publisher (feature_store.event_bus) of the bus under test: one for the
    load, one for the probes (their own connections, as the Redis clients are). `job_pid`: the
    streaming job, whose CPU (JVM and Python workers included) the row reports in cores."""
    processed_before = int(_status(client, keys).get("processed", 0))
    job_cpu_before = process_tree_cpu_s(job_pid)
    publisher = open_bus()
    prober = Prober(url, open_bus(), keys.recent_items)
    prober.start()
    sent, start, start_wall = 0, time.monotonic(), time.time()
    while (elapsed := time.monotonic() - start) < duration_s:
        due = int(rate * elapsed) - sent
        if due > 0:
            due = min(due, 2_000)
            publisher.publish(_events(first_id + sent, due, int(time.time() * 1000)))
            sent += due
        time.sleep(0.005)
    load_s = time.monotonic() - start
    achieved = sent / load_s
    job_cores = (process_tree_cpu_s(job_pid) - job_cpu_before) / load_s
    prober.stop.set()
    prober.join()
    publisher.close()
    prober.publisher.close()
    expected = processed_before + sent + prober.count
    stopped_at = time.monotonic()
    caught_up = _wait(lambda: int(_status(client, keys).get("processed", 0)) >= expected, 60.0)
    catch_up_s = time.monotonic() - stopped_at if caught_up else None
    prober.drain(5.0)  # probes sent before the stop count with their full lag
    unseen = len(prober.pending)
    status = _status(client, keys)
    lags = [lag for _, lag in prober.samples]
    third = duration_s / 3
    thirds = [
        [lag for at, lag in prober.samples if i * third <= at - start_wall < (i + 1) * third]
        for i in range(3)
    ]
    first, last = percentiles(thirds[0] or lags, (99,))["p99"], percentiles(thirds[2] or lags, (99,))["p99"]
    bounded = bool(caught_up and catch_up_s is not None and catch_up_s <= 10.0 and last <= 1.5 * first + 0.5)
    ms = {k: round(v * 1000, 1) for k, v in percentiles(lags, (50, 95, 99)).items()}
    row = {
        "rate": rate,
        "achieved_rate": round(achieved, 1),
        "duration_s": duration_s,
        "probes": len(lags),
        "probes_never_seen": unseen,
        "lag_ms": ms,
        "lag_ms_max": round(max(lags) * 1000, 1) if lags else None,
        "p99_first_third_ms": round(first * 1000, 1),
        "p99_last_third_ms": round(last * 1000, 1),
        "catch_up_s": None if catch_up_s is None else round(catch_up_s, 2),
        "bounded": bounded,
        "job_cpu_cores": round(job_cores, 2),
        "job_status_lag_ms": {k: status.get(k) for k in ("lag_ms_p50", "lag_ms_p99", "lag_ms_max")},
        "job_last_batch_ms": status.get("last_batch_ms"),
        "job_last_batch_entries": status.get("last_batch_entries"),
        # the speed query's micro-batch phases (median ms, spark_jobs.streaming.progress)
        "job_phases_ms": phases_in_status(status),
    }
    return row, sent


def apply_baseline(client, settings, batch_size: int = 500, repeats: int = 20) -> dict:
    """The speed layer's Redis work alone for one batch: validate, plan, Lua apply (no Spark)."""
    from datetime import timedelta

    import orjson

    from feature_store.events import EventTypes
    from feature_store.redis_keys import RedisKeys
    from spark_jobs.streaming.redis_apply import apply_batch
    from spark_jobs.streaming.speed_features import (
        counter_ops,
        shard_ops,
        speed_params,
        trending_ops,
        validate_entries,
    )

    keys = RedisKeys("bench-baseline")
    params = speed_params(settings)
    times = []
    for r in range(repeats):
        now = int(time.time() * 1000)
        entries = [
            (f"{now}-{i}", now, orjson.dumps(e).decode())
            for i, e in enumerate(_events(r * batch_size, batch_size, now))
        ]
        started = time.perf_counter()
        good, bad = validate_entries(
            entries, future_tolerance=timedelta(minutes=10), event_types=EventTypes()
        )
        events = [s for s, _ in good]
        apply_batch(
            client,
            keys,
            params,
            "baseline",
            r,
            shard_ops(keys, params, events),
            trending_ops(keys, params, events) + counter_ops(keys, len(events), bad),
        )
        times.append(time.perf_counter() - started)
    return {"batch_size": batch_size, **{k: round(v * 1000, 2) for k, v in percentiles(times).items()}}


def realtime_trigger_comparison(
    work: Path, bootstrap: str, seconds: float, rate: int = 50, start_timeout_s: float = 300.0
) -> dict:
    """Spark 4's real-time trigger where the Kafka path allows it: a stateless stage (parse and check
    the event JSON with built-in functions, no Python UDF, Kafka sink: real-time mode takes neither
    foreachBatch nor Python UDFs, so the speed query itself cannot run in it). The same query runs with
    the speed query's micro-batch trigger and with `trigger(realTime=...)`; lag = the output record's
    broker append time minus the send time carried in the event's `ts`."""
    import orjson
    from confluent_kafka import Consumer
    from pyspark.sql import functions as F

    from feature_store.event_bus import KafkaPublisher
    from feature_store.settings import Settings
    from lambdarec.kafka_broker import ensure_topic
    from spark_jobs.session import build_spark

    settings = Settings(
        data_dir=work / "realtime",
        spark_master="local[2]",
        spark_shuffle_partitions=2,
        kafka_bootstrap_servers=bootstrap,
    )
    spark = build_spark(settings)
    results: dict = {"rate": rate, "seconds": seconds}
    try:
        for mode, trigger in (
            ("micro_batch_250ms", {"processingTime": "250 milliseconds"}),
            ("real_time", {"realTime": "10 seconds"}),
        ):
            source, sink = f"rt-in-{mode}", f"rt-out-{mode}"
            for topic in (source, sink):
                ensure_topic(bootstrap, topic, 1)
            try:
                frame = (
                    spark.readStream.format("kafka")
                    .option("kafka.bootstrap.servers", bootstrap)
                    .option("subscribe", source)
                    .load()
                )
                checked = frame.where(
                    F.get_json_object(F.col("value").cast("string"), "$.event_id").isNotNull()
                ).select("key", "value")
                query = (
                    # update = append for a stateless query; real-time mode refuses append
                    checked.writeStream.outputMode("update")
                    .format("kafka")
                    .option("kafka.bootstrap.servers", bootstrap)
                    .option("topic", sink)
                    .option("checkpointLocation", str(work / "realtime" / mode))
                    .trigger(**trigger)
                    .start()
                )
            except Exception as exc:  # the reason real-time mode refuses a plan is the finding
                results[mode] = {"error": f"{type(exc).__name__}: {str(exc)[:400]}"}
                continue
            publisher = KafkaPublisher.connect(bootstrap, source)
            consumer = Consumer(
                {"bootstrap.servers": bootstrap, "group.id": f"rt-{mode}", "auto.offset.reset": "earliest"}
            )
            consumer.subscribe([sink])
            lags: list[float] = []
            try:
                # The window opens at the first output record (the query's start is not its latency),
                # and gives up after `start_timeout_s` without one.
                started, first_out, sent = time.monotonic(), None, 0
                while query.isActive and (
                    (first_out is None and time.monotonic() - started < start_timeout_s)
                    or (first_out is not None and time.monotonic() - first_out < seconds)
                ):
                    publisher.publish(
                        [
                            {
                                "event_id": f"rt{sent}",
                                "user_id": "u",
                                "item_id": "i",
                                "event_type": "view",
                                "ts": int(time.time() * 1000),
                            }
                        ]
                    )
                    sent += 1
                    deadline = time.monotonic() + 1 / rate
                    while time.monotonic() < deadline:
                        msg = consumer.poll(max(0.0, deadline - time.monotonic()))
                        if msg is not None and msg.error() is None:
                            first_out = first_out or time.monotonic()
                            lags.append(msg.timestamp()[1] - orjson.loads(msg.value())["ts"])
                error = None if query.isActive else str(query.exception())[:400]
            finally:
                consumer.close()
                publisher.close()
                query.stop()
            steady = lags[len(lags) // 3 :]  # past the first batches' warm-up
            results[mode] = {
                "sent": sent,
                "received": len(lags),
                "lag_ms_steady": {k: round(v, 1) for k, v in percentiles(steady, (50, 95, 99)).items()},
                "error": error,
            }
    finally:
        spark.stop()
    return results


def bronze_write_comparison(work: Path, quick: bool, batch_rows: int = 1_000, repeats: int = 3) -> dict:
    """One micro-batch into bronze: the bronze query's MERGE pruned to the batch's event dates vs the
    batch ingest's MERGE insert-only on event_id over the whole table, on a table that already holds
    `existing` rows (one per second from 2026-01-01, so a few days of partitions)."""
    import statistics
    from datetime import datetime, timedelta

    from feature_store.settings import Settings
    from feature_store.tables import BRONZE_EVENTS
    from spark_jobs.ingest import write_bronze
    from spark_jobs.session import build_spark
    from spark_jobs.streaming.speed_job import streaming_spark_conf, write_bronze_batch

    existing = 20_000 if quick else 200_000
    settings = Settings(data_dir=work / "bronze-compare", spark_master="local[2]", spark_shuffle_partitions=2)
    spark = build_spark(settings, streaming_spark_conf(settings))
    start = datetime(2026, 1, 1, tzinfo=UTC)

    def rows(first: int, count: int) -> list[tuple]:
        return [
            (
                f"e{n}",
                f"u{n % 5000}",
                f"i{n % 3000}",
                "view",
                start + timedelta(seconds=n),
                None,
                {"category": "c"},
                "bench",
                start,
                (start + timedelta(seconds=n)).date(),
            )
            for n in range(first, first + count)
        ]

    try:
        write_bronze_batch(spark, settings, {BRONZE_EVENTS: rows(0, existing)})
        timings: dict[str, list[float]] = {"pruned": [], "merge": []}
        next_row = existing
        for _ in range(repeats):
            for how in ("pruned", "merge"):
                batch = rows(next_row, batch_rows)
                next_row += batch_rows
                began = time.perf_counter()
                if how == "pruned":
                    write_bronze_batch(spark, settings, {BRONZE_EVENTS: batch})
                else:
                    write_bronze(spark, settings, spark.createDataFrame(batch, BRONZE_EVENTS.ddl))
                timings[how].append(time.perf_counter() - began)
    finally:
        spark.stop()
    pruned_s, merge_s = statistics.median(timings["pruned"]), statistics.median(timings["merge"])
    return {
        "existing_rows": existing,
        "batch_rows": batch_rows,
        "merge_pruned_s": round(pruned_s, 3),
        "merge_insert_s": round(merge_s, 3),
        "merge_vs_pruned": round(merge_s / pruned_s, 2),
    }


BUSES = ("redis", "kafka")


def stop_job(job: subprocess.Popen) -> None:
    if job.poll() is not None:
        return
    job.terminate()
    try:
        job.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(job.pid, 9)
        job.wait()


def run_realtime_only(quick: bool, out_dir: Path) -> dict:
    """Only the real-time trigger comparison, on a broker of its own (`--bus kafka --realtime-only`)."""
    from feature_store.settings import Settings
    from lambdarec.kafka_broker import start_broker, stop_broker

    work = Path(tempfile.mkdtemp(prefix="bench-realtime-"))
    settings = Settings(data_dir=work / "data", event_bus="kafka")
    load_before = os.getloadavg()
    try:
        result = realtime_trigger_comparison(work, start_broker(settings), 15.0 if quick else 60.0)
    finally:
        stop_broker(settings)
    result.update(
        load_average_before=[round(x, 2) for x in load_before],
        load_average_after=[round(x, 2) for x in os.getloadavg()],
    )
    return write_result(out_dir, f"{NAME}_realtime_trigger", result)


def run(quick: bool, out_dir: Path, bus: str = "redis", realtime_only: bool = False) -> dict:
    if realtime_only:
        return run_realtime_only(quick, out_dir)
    import redis

    from feature_store.event_bus import open_publisher
    from feature_store.redis_keys import RedisKeys
    from feature_store.settings import Settings, StreamSettings
    from lambdarec.kafka_broker import start_broker, stop_broker
    from lambdarec.redis_server import EmbeddedRedis

    duration = 15.0 if quick else 60.0
    trigger_ms = int(os.environ.get("LAMBDAREC_STREAM_TRIGGER_MS", StreamSettings().trigger_ms))
    work = Path(tempfile.mkdtemp(prefix="bench-freshness-"))
    server = EmbeddedRedis(directory=work / "redis").start()
    client = redis.Redis.from_url(server.url)
    settings = Settings(
        data_dir=work / "data", redis_url=server.url, stream_trigger_ms=trigger_ms, event_bus=bus
    )
    if bus == "kafka":
        settings = settings.updated(kafka_bootstrap_servers=start_broker(settings))
    keys = RedisKeys(settings.redis.key_prefix)

    def open_bus():
        return open_publisher(settings, redis_client=redis.Redis.from_url(server.url), trim=False)

    env = {
        **os.environ,
        "LAMBDAREC_DATA_DIR": str(settings.data_dir),
        "LAMBDAREC_REDIS_URL": server.url,
        "LAMBDAREC_STREAM_TRIGGER_MS": str(trigger_ms),
        "LAMBDAREC_EVENT_BUS": bus,
        "LAMBDAREC_KAFKA_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers or "",
        "PYTHONPATH": str(REPO),
    }
    log_path = work / "job.log"
    load_before = os.getloadavg()
    with open(log_path, "ab") as log:
        job = start_speed_job(env, log)
    rows: list[dict] = []
    try:
        if not _wait(lambda: _status(client, keys).get("state") == "running", 300.0, 0.2):
            raise RuntimeError(f"the streaming job did not start; see {log_path}")
        # Warm-up: the first micro-batches start Python workers and compile the plan.
        warm_up = open_bus()
        warm_up.publish(_events(0, 100, int(time.time() * 1000)))
        warm_up.close()
        if not _wait(lambda: int(_status(client, keys).get("processed", 0)) >= 100, 600.0):
            raise RuntimeError(f"the streaming job processed nothing in 10 minutes; see {log_path}")
        # ... and the bronze query's first commit creates the Delta tables (seconds of both cores).
        if not _wait(lambda: int(_status(client, keys).get("bronze_last_batch_rows", 0)) > 0, 600.0):
            raise RuntimeError(f"the bronze query wrote nothing in 10 minutes; see {log_path}")
        next_id = 100
        for rate in (*REQUIRED_RATES, *EXTRA_RATES):
            row, sent = measure_rate(client, keys, server.url, open_bus, rate, duration, next_id, job.pid)
            next_id += sent
            rows.append(row)
            print(f"{rate}/s: {row['lag_ms']} bounded={row['bounded']}", flush=True)
            if rate not in REQUIRED_RATES and not row["bounded"]:
                break
        baseline = apply_baseline(client, settings)
        stop_job(job)  # before the real-time comparison, so its Spark has the cores
        realtime = (
            realtime_trigger_comparison(work, settings.kafka.bootstrap_servers, duration)
            if bus == "kafka"
            else None
        )
    finally:
        stop_job(job)
        server.stop()
        if bus == "kafka":
            stop_broker(settings)
    bronze = bronze_write_comparison(work, quick) if bus == "redis" else None  # the same whatever the bus
    bounded = [r["rate"] for r in rows if r["bounded"]]
    at_1000 = next(r for r in rows if r["rate"] == 1_000)
    result = {
        "quick": quick,
        "bus": bus,
        "settings": {
            "event_bus": bus,
            "kafka_topic_partitions": settings.kafka.topic_partitions if bus == "kafka" else None,
            "kafka_linger_ms": settings.kafka.linger_ms if bus == "kafka" else None,
            "stream_trigger_ms": trigger_ms,
            "stream_bronze_trigger_ms": settings.stream.bronze_trigger_ms,
            "stream_max_rows_per_batch": settings.stream.max_rows_per_batch,
            "spark_master": settings.spark.master,
            "events_per_shard": 500,
            "duration_s_per_rate": duration,
            "probe_every_s": PROBE_EVERY_S,
        },
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "rates": rows,
        "highest_bounded_rate": max(bounded) if bounded else None,
        "goal_p99_under_1s_at_1000": at_1000["lag_ms"]["p99"] < 1000,
        "baseline_apply_ms": baseline,
        "bronze_write_per_batch": bronze,
        "realtime_trigger": realtime,
        "p50_lag_vs_apply_ratio_at_1000": round(at_1000["lag_ms"]["p50"] / max(baseline["p50"], 1e-9), 1),
        "tables": [
            {
                "title": f"Freshness on the {'Kafka' if bus == 'kafka' else 'Redis Stream'} bus: publish -> feature visible (trigger {trigger_ms} ms)",
                "columns": [
                    "events/s",
                    "achieved",
                    "probes",
                    "p50 ms",
                    "p95 ms",
                    "p99 ms",
                    "max ms",
                    "catch-up s",
                    "bounded",
                    "job CPU cores",
                ],
                "rows": [
                    [
                        r["rate"],
                        r["achieved_rate"],
                        r["probes"],
                        r["lag_ms"]["p50"],
                        r["lag_ms"]["p95"],
                        r["lag_ms"]["p99"],
                        r["lag_ms_max"],
                        r["catch_up_s"],
                        r["bounded"],
                        r["job_cpu_cores"],
                    ]
                    for r in rows
                ],
            }
        ],
        "plots": [
            {
                "title": f"Speed-layer freshness by load ({bus} bus)",
                "x_label": "events/s",
                "y_label": "lag ms",
                "x": [r["rate"] for r in rows],
                "lines": {p: [r["lag_ms"][p] for r in rows] for p in ("p50", "p95", "p99")},
                "log_y": True,
            }
        ],
    }
    return write_result(out_dir, NAME if bus == "redis" else f"{NAME}_{bus}", result)


if __name__ == "__main__":
    main(
        run,
        {
            "--bus": {"choices": BUSES, "default": "redis", "help": "the event bus to measure"},
            "--realtime-only": {
                "action": "store_true",
                "help": "only the real-time trigger comparison (Kafka)",
            },
        },
    )

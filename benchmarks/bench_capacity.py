"""Capacity per unit (issue 16's paper scale): what one user, one item and one event cost here.

For each size (quick: 20k synthetic events of 1,000 users; full: 50k of 2,500 and 200k of 10,000, so the
growth between two sizes is measured too) on one local Spark session (`local[2]`) and a private
redis-server:
- **the nightly**: lambdarec.datagen's events ingested (`spark_jobs.ingest.ingest`), then every step of
  `spark_jobs.batch_pipeline.run_batch` (the code of `lambdarec batch run`), publishing to the private
  Redis; each step's seconds, also as seconds per million events per core;
- **the published batch in Redis**: `MEMORY USAGE` (all samples) of every key, summed by scope and kind
  (`RedisKeys.kind_of`: per user, per item, global), so a user's and an item's bytes are the sums of
  their kinds' mean key sizes; `used_memory` before and after, for the allocator's overhead beyond the
  keys; the publish step's seconds per million keys written;
- **the speed layer's keys**: `EVENTS_PER_USER` events (one session each, the last hour) of every
  generated user on the first catalogue items through the streaming job's own Redis write (`SpeedWriter.process`: validation, the
  dedupe/session/recent/co-visitation/trending Lua apply) in micro-batches of `SPEED_BATCH` entries;
  the speed keys' bytes by kind (per active user, per item for co-visitation) and the events applied
  per second of wall time (one Python process and redis-server on the same 2 cores).

- **the bus**: `BUS_EVENTS` events published by one process in batches of 1,000 (the API's most per
  POST), each batch acknowledged before the next, into a Redis Stream and into a one-partition Kafka
  topic of the local broker (`lambdarec.kafka_broker`, idempotent producer, acks=all): the write rate
  of one partition from one producer.

Per-request serving CPU comes from profile_serving; docs/capacity.md scales all of them to 1M-100M users.

`python -m benchmarks.bench_capacity [--quick]` or `python -m benchmarks.run --only capacity`.

Why one module: one experiment (set-up, the three measurements, the marginals, the result file) read as
one script; its pure parts are unit-tested (tests/unit/test_bench_capacity.py).
"""

from __future__ import annotations

import os
import random
import tempfile
import time
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import orjson

from benchmarks.common import machine_info, main, write_result

NAME = "capacity"
START = date(2026, 9, 1)
DAYS = 18  # the nightly trains on [T - 2h, T - h) with h = 7 days
SIZES = {
    True: (dict(events=20_000, users=1_000, items=600),),
    False: (dict(events=50_000, users=2_500, items=1_000), dict(events=200_000, users=10_000, items=3_000)),
}
EVENTS_PER_USER = 20  # one session of the speed layer's key sizes
SPEED_BATCH = 5_000  # entries per micro-batch, as the streaming job's admission control would hand over
MEMORY_CHUNK = 2_000  # MEMORY USAGE calls per pipelined round trip
SPEED_EVENT_TYPES = ("view", "view", "view", "click", "add_to_cart", "purchase")
BUS_EVENTS = {True: 50_000, False: 200_000}
BUS_BATCH = 1_000


def key_sizes(client, keys, match: str) -> dict[tuple[str, str], dict[str, int]]:
    """{(scope, kind): {"keys": n, "bytes": total}} of the keys matching `match` (SCAN pattern), by
    `RedisKeys.kind_of`; keys it does not size are counted under ("other", "other")."""
    sizes: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: {"keys": 0, "bytes": 0})
    batch: list[str] = []

    def flush() -> None:
        pipe = client.pipeline(transaction=False)
        for key in batch:
            pipe.memory_usage(key, samples=0)
        for key, used in zip(batch, pipe.execute()):
            kind = keys.kind_of(key) or ("other", "other")
            sizes[kind]["keys"] += 1
            sizes[kind]["bytes"] += int(used or 0)
        batch.clear()

    for raw in client.scan_iter(match=match, count=1_000):
        batch.append(raw.decode() if isinstance(raw, bytes) else raw)
        if len(batch) >= MEMORY_CHUNK:
            flush()
    if batch:
        flush()
    return dict(sizes)


def per_entity(sizes: dict[tuple[str, str], dict[str, int]], scope: str) -> dict:
    """Mean bytes per key of each kind of `scope`, and their sum: what one entity with every kind costs."""
    kinds = {
        kind: {"keys": v["keys"], "bytes": v["bytes"], "mean_bytes": round(v["bytes"] / v["keys"], 1)}
        for (s, kind), v in sorted(sizes.items())
        if s == scope and v["keys"]
    }
    return {"kinds": kinds, "bytes_per_entity": round(sum(k["mean_bytes"] for k in kinds.values()), 1)}


def speed_entries(users: list[str], items: list[str], per_user: int, now_ms: int, seed: int) -> list[tuple]:
    """Bus entries `(entry_id, bus_time_ms, raw, size_bytes)` of one session per user in the last hour,
    items drawn with a popularity skew (the first items most), as the bus hands them to the job."""
    rng = random.Random(seed)
    weights = [1.0 / (rank + 10) for rank in range(len(items))]
    entries = []
    n = 0
    for user in users:
        start = now_ms - rng.randrange(3_000_000, 3_500_000)
        for step, item in enumerate(rng.choices(items, weights, k=per_user)):
            ts = start + step * 30_000
            raw = orjson.dumps(
                {
                    "event_id": f"cap-{n}",
                    "user_id": user,
                    "item_id": item,
                    "event_type": rng.choice(SPEED_EVENT_TYPES),
                    "ts": ts,
                }
            ).decode()
            entries.append((f"{ts}-{n}", ts, raw, len(raw)))
            n += 1
    entries.sort(key=lambda e: e[1])
    return entries


def one_size(spark, base_settings, size: dict, work: Path) -> dict:
    import redis

    from feature_store.redis_keys import RedisKeys
    from lambdarec.datagen import GeneratorConfig, generate, item_id_of, user_id_of
    from lambdarec.redis_server import EmbeddedRedis
    from lambdarec.replay.runner import ensure_registered_model
    from spark_jobs.batch_pipeline import run_batch
    from spark_jobs.ingest import ingest
    from spark_jobs.streaming.speed_job import SpeedWriter

    work.mkdir(parents=True)
    server = EmbeddedRedis(directory=work / "redis", binary=base_settings.redis.server_bin).start()
    try:
        settings = base_settings.updated(
            data_dir=work,
            tables_uri=str(work / "delta"),
            redis_url=server.url,
            mlflow_tracking_uri=f"sqlite:///{work / 'mlflow.db'}",
            mlflow_registry_uri=None,
            mlflow_artifact_root=str(work / "mlartifacts"),
        )
        client = redis.Redis.from_url(server.url, socket_timeout=60)
        keys = RedisKeys(settings.redis.key_prefix)
        run_date = START + timedelta(days=DAYS)
        generate(GeneratorConfig(**size, days=DAYS, start=START, seed=5), work / "gen")
        started = time.monotonic()
        ingested = ingest(
            spark, settings, work / "gen", "jsonl", datetime.combine(run_date, datetime.min.time(), UTC)
        )
        ingest_s = time.monotonic() - started
        ensure_registered_model(settings)
        memory_before = int(client.info("memory")["used_memory"])
        reports = run_batch(spark, settings, run_date, redis_url=lambda: server.url)
        memory_batch = int(client.info("memory")["used_memory"])
        batch_sizes = key_sizes(client, keys, f"{keys.prefix}:b:*")
        users = [user_id_of(n) for n in range(size["users"])]
        items = [item_id_of(n) for n in range(size["items"])]

        writer = SpeedWriter(client, settings)
        entries = speed_entries(users, items, EVENTS_PER_USER, int(time.time() * 1000), seed=9)
        applied_started = time.monotonic()
        for batch_id, offset in enumerate(range(0, len(entries), SPEED_BATCH)):
            writer.process(entries[offset : offset + SPEED_BATCH], batch_id)
        apply_s = time.monotonic() - applied_started
        memory_speed = int(client.info("memory")["used_memory"])
        speed_sizes = key_sizes(client, keys, f"{keys.prefix}:s:*")
        client.close()
    finally:
        server.stop()

    publish = reports["publish"]
    written = sum(v for k, v in publish["counts"].items() if k != "categories")
    events = ingested.ingested
    step_seconds = {"ingest": round(ingest_s, 1), **{name: r["seconds"] for name, r in reports.items()}}
    batch_key_bytes = sum(v["bytes"] for v in batch_sizes.values())
    return {
        "size": size,
        "events_ingested": events,
        "users_with_recs": batch_sizes.get(("batch_user", "recs"), {}).get("keys", 0),
        "items_with_features": batch_sizes.get(("batch_item", "feat"), {}).get("keys", 0),
        "step_seconds": step_seconds,
        "nightly_s": round(sum(step_seconds.values()), 1),
        "seconds_per_million_events_per_core": {
            name: round(s / events * 1e6 * 2, 1) for name, s in step_seconds.items()
        },
        "publish": {
            "keys_written": written,
            "counts": publish["counts"],
            "seconds": publish["seconds"],
            "seconds_per_million_keys": round(publish["seconds"] / written * 1e6, 1) if written else None,
        },
        "redis_batch": {
            "used_memory_before": memory_before,
            "used_memory_after": memory_batch,
            "key_bytes": batch_key_bytes,
            "user": per_entity(batch_sizes, "batch_user"),
            "item": per_entity(batch_sizes, "batch_item"),
            "global": per_entity(batch_sizes, "batch_global"),
        },
        "redis_speed": {
            "events": len(entries),
            "active_users": len(users),
            "events_per_user": EVENTS_PER_USER,
            "apply_s": round(apply_s, 1),
            "events_per_s": round(len(entries) / apply_s) if apply_s else None,
            "used_memory_after": memory_speed,
            "user": per_entity(speed_sizes, "speed_user"),
            "item": per_entity(speed_sizes, "speed_item"),
            "global": per_entity(speed_sizes, "speed_global"),
        },
    }


def bus_events(count: int, users: int = 10_000) -> list[dict]:
    """`count` view events of `users` users, as a product backend posts them."""
    now_ms = int(time.time() * 1000)
    return [
        {
            "event_id": f"bus-{n}",
            "user_id": f"user-{n % users:07d}",
            "item_id": f"item-{n % 997:07d}",
            "event_type": "view",
            "ts": now_ms + n,
        }
        for n in range(count)
    ]


def publish_rate(publisher, events: list[dict], batch: int = BUS_BATCH) -> dict:
    """Events per second through `publisher.publish` in batches of `batch` (the API's most per POST),
    each acknowledged before the next, as a backend's synchronous client sends them."""
    started = time.monotonic()
    published = 0
    for offset in range(0, len(events), batch):
        published += len(publisher.publish(events[offset : offset + batch]))
    seconds = time.monotonic() - started
    return {"events": published, "seconds": round(seconds, 2), "events_per_s": round(published / seconds)}


def bus_throughput(base_settings, count: int, work: Path) -> dict:
    """One publishing process into one Redis Stream and into one Kafka partition (idempotent producer,
    acks=all, the project's own publishers): the bus's per-partition write rate."""
    import redis

    from feature_store.event_bus import KafkaPublisher, RedisStreamPublisher
    from lambdarec.kafka_broker import start_broker, stop_broker
    from lambdarec.redis_server import EmbeddedRedis

    events = bus_events(count)
    out = {"events": count, "batch": BUS_BATCH}
    server = EmbeddedRedis(directory=work / "bus-redis", binary=base_settings.redis.server_bin).start()
    try:
        client = redis.Redis.from_url(server.url, socket_timeout=60)
        out["redis_stream"] = publish_rate(RedisStreamPublisher(client, "bench:events"), events)
        client.close()
    finally:
        server.stop()
    settings = base_settings.updated(data_dir=work / "bus-kafka", kafka_topic_partitions=1)
    bootstrap = start_broker(settings)
    try:
        publisher = KafkaPublisher.connect(bootstrap, settings.kafka.topic)
        try:
            out["kafka_one_partition"] = publish_rate(publisher, events)
        finally:
            publisher.close()
    finally:
        stop_broker(settings)
    return out


def run(quick: bool, out_dir: Path) -> dict:
    from feature_store.settings import Settings
    from lambdarec.composition import spark_session

    with tempfile.TemporaryDirectory(prefix="lambdarec-bench-capacity-") as tmp:
        work = Path(tmp)
        settings = Settings(data_dir=work / "data", spark_master="local[2]", spark_shuffle_partitions=2)
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        spark = spark_session(settings)
        try:
            sizes = [
                one_size(spark, settings, size, work / f"size-{n}") for n, size in enumerate(SIZES[quick])
            ]
        finally:
            spark.stop()
        bus = bus_throughput(settings, BUS_EVENTS[quick], work)
    return write_result(out_dir, NAME, report(sizes, quick, bus))


def report(sizes: list[dict], quick: bool, bus: dict | None = None) -> dict:
    rows_memory, rows_time = [], []
    for one in sizes:
        label = f"{one['events_ingested']:,} events, {one['users_with_recs']:,} users"
        batch, speed = one["redis_batch"], one["redis_speed"]
        rows_memory.append(
            [
                label,
                batch["user"]["bytes_per_entity"],
                batch["item"]["bytes_per_entity"],
                speed["user"]["bytes_per_entity"],
                speed["item"]["bytes_per_entity"],
                round(
                    (batch["used_memory_after"] - batch["used_memory_before"]) / max(batch["key_bytes"], 1), 3
                ),
            ]
        )
        rows_time.append(
            [
                label,
                one["nightly_s"],
                one["publish"]["keys_written"],
                one["publish"]["seconds_per_million_keys"],
                speed["events_per_s"],
            ]
        )
    tables = [
        {
            "title": "Redis bytes (MEMORY USAGE) per entity with every key kind",
            "columns": [
                "data",
                "batch user",
                "batch item",
                f"speed user ({EVENTS_PER_USER} events)",
                "speed item (co-visitation)",
                "used_memory growth / key bytes",
            ],
            "rows": rows_memory,
        },
        {
            "title": "Times (2 cores, local[2])",
            "columns": [
                "data",
                "nightly s",
                "keys published",
                "publish s per million keys",
                "speed events/s",
            ],
            "rows": rows_time,
        },
    ]
    growth = marginal_costs(sizes[0], sizes[-1]) if len(sizes) > 1 else None
    if growth:
        tables.append(
            {
                "title": "What the larger size added over the smaller: seconds per million more events per core, "
                "and publish seconds per million more keys",
                "columns": ["step", "s per million events per core"],
                "rows": [[step, v] for step, v in growth["seconds_per_million_events_per_core"].items()]
                + [["publish, s per million keys", growth["publish_seconds_per_million_keys"]]],
            }
        )
    if bus:
        tables.append(
            {
                "title": f"Bus write rate, one process, batches of {bus['batch']:,} acknowledged one at a time",
                "columns": ["bus", "events", "seconds", "events/s"],
                "rows": [
                    [name, bus[name]["events"], bus[name]["seconds"], bus[name]["events_per_s"]]
                    for name in ("redis_stream", "kafka_one_partition")
                ],
            }
        )
    return {
        "title": "Capacity per unit: Redis bytes per user and item, nightly and publish seconds, speed writes",
        "quick": quick,
        "machine": machine_info(),
        "sizes": sizes,
        "marginal": growth,
        "bus": bus,
        "tables": tables,
    }


def marginal_costs(small: dict, large: dict, cores: int = 2) -> dict:
    """The larger run's extra seconds per extra event (per million, times the cores) for each step and
    in all, and the publish step's extra seconds per extra key: the fixed costs (JVM, Spark jobs, MLflow)
    cancel out, which the per-unit figures of one size include."""
    events = large["events_ingested"] - small["events_ingested"]
    users = large["users_with_recs"] - small["users_with_recs"]
    keys = large["publish"]["keys_written"] - small["publish"]["keys_written"]
    per_step = {
        step: round((large["step_seconds"][step] - small["step_seconds"][step]) / events * 1e6 * cores, 1)
        for step in large["step_seconds"]
    }
    per_step["nightly"] = round((large["nightly_s"] - small["nightly_s"]) / events * 1e6 * cores, 1)
    publish = (large["publish"]["seconds"] - small["publish"]["seconds"]) / keys * 1e6 if keys else None
    return {
        "events": events,
        "users": users,
        # the runs grow users and events together: the same extra seconds per extra served user
        "nightly_core_seconds_per_thousand_users": round(
            (large["nightly_s"] - small["nightly_s"]) * cores / users * 1000, 1
        )
        if users
        else None,
        "keys": keys,
        "seconds_per_million_events_per_core": per_step,
        "publish_seconds_per_million_keys": round(publish, 1) if publish is not None else None,
    }


if __name__ == "__main__":
    main(run)

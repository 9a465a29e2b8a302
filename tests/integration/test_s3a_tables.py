"""Delta tables on S3-compatible storage, for real: moto's S3 server started by the project's helper
(`lambdarec.s3_server`, what `lambdarec s3 start` runs), Hadoop's S3A connector from `make setup`, and
the shared Spark session. Ingest writes bronze on s3a://, the nightly's features step reads and writes
Delta there, and the streaming job's bronze sink lands each bus event once.

The shared session's JVM started with the connector on its class path (tests/conftest.py); the
S3A configuration `spark_jobs.s3a.s3a_hadoop_conf` gives every new session from the settings is set on
it as session conf for each test (Spark copies session conf into the Hadoop configuration every Delta
read and write gets), and removed again.

Why one module: the three writers of the lake share the endpoint, the per-test prefix and the session
set-up, and read as one account of what changes when the tables move to object storage (nothing).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path

import orjson
import pytest
from pyspark.testing import assertDataFrameEqual

from feature_store.event_bus import publish_events, read_committed
from feature_store.settings import Settings
from feature_store.tables import BRONZE_EVENTS, INTERACTIONS, QUARANTINE, USER_FEATURES
from lambdarec.s3_server import local_s3_environment, s3_client, start_local_s3, stop_local_s3
from lambdarec.testing import shop_events
from spark_jobs.s3a import s3a_hadoop_conf

# Minutes on 2 cores (S3A over a local endpoint, Delta on both sides of a comparison): `make test-e2e`.
pytestmark = [pytest.mark.integration, pytest.mark.scale_out, pytest.mark.long]
BUCKET = "lambdarec-test"
NOW = datetime(2026, 11, 3, 12, 0, tzinfo=UTC)
DEADLINE_S = 300  # generous: the machine may be shared; the wait returns as soon as its condition holds


@pytest.fixture(scope="module")
def local_s3(tmp_path_factory: pytest.TempPathFactory):
    """The local S3 endpoint for this module, started and stopped like `lambdarec s3 start|stop`."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("s3"))
    endpoint = start_local_s3(settings, BUCKET)
    yield endpoint
    assert stop_local_s3(settings)


@pytest.fixture
def s3_settings(table_settings: Settings, local_s3: str, request: pytest.FixtureRequest) -> Settings:
    """The test's settings with the tables under a fresh prefix of the bucket, as `lambdarec s3 start`
    prints them."""
    env = local_s3_environment(local_s3, f"s3a://{BUCKET}/{request.node.name}")
    return table_settings.updated(**{name.removeprefix("LAMBDAREC_").lower(): v for name, v in env.items()})


@contextmanager
def s3a_session_conf(spark, settings: Settings):
    """The shared session with S3A configured from `settings` for the block."""
    conf = s3a_hadoop_conf(settings.s3)
    for key, value in conf.items():
        spark.conf.set(key, value)
    try:
        yield spark
    finally:
        for key in conf:
            spark.conf.unset(key)


@pytest.fixture
def s3a_spark(spark, s3_settings: Settings):
    with s3a_session_conf(spark, s3_settings) as session:
        yield session


def objects(endpoint: str, prefix: str) -> list[str]:
    listing = s3_client(endpoint).list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return sorted(o["Key"].removeprefix(prefix) for o in listing.get("Contents", []))


def event(n: int, user: str, item: str, kind: str, ts: str, **extra) -> dict:
    return {"event_id": f"e{n}", "user_id": user, "item_id": item, "event_type": kind, "ts": ts, **extra}


EVENTS = [
    event(1, "u1", "i1", "view", "2026-11-01T10:00:00Z"),
    event(2, "u1", "i2", "purchase", "2026-11-01T10:05:00Z", value=19.5),
    event(3, "u2", "i1", "click", "2026-11-02T08:00:00Z"),
    event(2, "u1", "i2", "purchase", "2026-11-01T10:05:00Z", value=19.5),  # re-sent: one fact
    event(4, "u2", "i3", "teleport", "2026-11-02T08:01:00Z"),  # unknown type: quarantined
]


def write_events(folder, events) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "events.jsonl").write_bytes(b"\n".join(orjson.dumps(e) for e in events) + b"\n")


def bronze_rows(spark, settings: Settings) -> list[tuple]:
    bronze = spark.read.format("delta").load(settings.table_path(BRONZE_EVENTS.name))
    rows = bronze.select("event_id", "user_id", "item_id", "event_type", "event_date").collect()
    return sorted(tuple(r) for r in rows)


def test_ingest_writes_bronze_and_quarantine_on_s3(s3a_spark, s3_settings, local_s3, tmp_path):
    from spark_jobs.ingest import ingest

    write_events(tmp_path / "in", EVENTS)
    first = ingest(s3a_spark, s3_settings, tmp_path / "in", "jsonl", NOW)
    again = ingest(s3a_spark, s3_settings, tmp_path / "in", "jsonl", NOW)

    assert (first.rows_read, first.ingested, first.already_present) == (5, 3, 0)
    assert first.quarantined == {"duplicate_event_id": 1, "unknown_event_type": 1}
    assert (again.ingested, again.already_present, again.quarantine_added) == (0, 3, 0)
    prefix = "test_ingest_writes_bronze_and_quarantine_on_s3/bronze/events"
    assert first.tables["bronze/events"] == f"s3a://{BUCKET}/{prefix}"
    assert bronze_rows(s3a_spark, s3_settings) == [
        ("e1", "u1", "i1", "view", date(2026, 11, 1)),
        ("e2", "u1", "i2", "purchase", date(2026, 11, 1)),
        ("e3", "u2", "i1", "click", date(2026, 11, 2)),
    ]
    quarantine = s3a_spark.read.format("delta").load(s3_settings.table_path(QUARANTINE.name))
    assert sorted(r.reason for r in quarantine.collect()) == ["duplicate_event_id", "unknown_event_type"]
    # The table really is in the bucket: its first two commits (the MERGE of each ingest) are objects there.
    commits = [key for key in objects(local_s3, f"{prefix}/_delta_log/") if key.endswith(".json")]
    assert commits == ["00000000000000000000.json", "00000000000000000001.json"]


def test_the_features_step_on_s3_writes_what_it_writes_on_local_disk(
    s3a_spark, s3_settings, table_settings, tmp_path
):
    from spark_jobs.features import run_features
    from spark_jobs.ingest import ingest

    write_events(tmp_path / "in", EVENTS)
    reports = {}
    for name, settings in (("s3", s3_settings), ("local", table_settings)):
        ingest(s3a_spark, settings, tmp_path / "in", "jsonl", NOW)
        reports[name] = run_features(s3a_spark, settings, date(2026, 11, 2), date(2026, 11, 4))

    assert replace(reports["s3"], tables={}) == replace(reports["local"], tables={})  # counts, windows
    for table in (INTERACTIONS, USER_FEATURES):
        on_s3 = s3a_spark.read.format("delta").load(s3_settings.table_path(table.name))
        local = s3a_spark.read.format("delta").load(table_settings.table_path(table.name))
        assertDataFrameEqual(on_s3, local)
    silver = s3a_spark.read.format("delta").load(s3_settings.table_path(INTERACTIONS.name))
    assert sorted((r.event_id, r.user_id, r.event_type) for r in silver.collect()) == [
        ("e1", "u1", "view"),
        ("e2", "u1", "purchase"),
        ("e3", "u2", "click"),
    ]
    features = s3a_spark.read.format("delta").load(s3_settings.table_path(USER_FEATURES.name))
    assert sorted((r.user_id, r.as_of) for r in features.collect()) == [
        ("u1", date(2026, 11, 2)),
        ("u1", date(2026, 11, 3)),
        ("u2", date(2026, 11, 3)),
    ]


def test_the_streaming_bronze_sink_lands_each_bus_event_once_on_s3(
    s3a_spark, s3_settings, redis_server, redis_client
):
    from spark_jobs.streaming.speed_job import BRONZE_QUERY, start_query, stop_gracefully

    settings = s3_settings.updated(
        redis_url=redis_server.url, stream_bronze_trigger_ms=200, stream_max_rows_per_batch=4
    )
    stream = settings.bus.stream
    events = shop_events(9, int(time.time() * 1000) - 60_000)
    publish_events(redis_client, stream, events)
    publish_events(redis_client, stream, events[3:6])  # a client retrying part of it
    newest = redis_client.xrevrange(stream, count=1)[0][0].decode()

    query = start_query(s3a_spark, settings, settings.redis.url, redis_client, BRONZE_QUERY)
    try:
        deadline = time.monotonic() + DEADLINE_S
        while read_committed(redis_client, stream).get(BRONZE_QUERY) != newest:
            assert query.isActive, query.exception()
            assert time.monotonic() < deadline, (
                "timed out waiting for the bronze query to commit the newest entry"
            )
            time.sleep(0.1)
    finally:
        stop_gracefully(query)

    bronze = s3a_spark.read.format("delta").load(settings.table_path(BRONZE_EVENTS.name))
    ids = [r.event_id for r in bronze.select("event_id").collect()]
    assert sorted(ids) == sorted(e["event_id"] for e in events) and len(ids) == 9


def test_lambdarec_s3_start_puts_a_new_process_tables_on_the_local_endpoint(spark, tmp_path):
    """The user's path, in processes of their own: `lambdarec s3 start` prints the settings, `lambdarec
    ingest` under them builds its session from scratch (class path and S3A conf from the settings alone)
    and writes bronze into the bucket; the shared session reads it back from there."""
    cli = [str(Path(sys.executable).parent / "lambdarec")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAMBDAREC_")}
    env["LAMBDAREC_DATA_DIR"] = str(tmp_path / "data")
    started = subprocess.run([*cli, "s3", "start"], env=env, capture_output=True, text=True, timeout=300)
    assert started.returncode == 0, started.stdout + started.stderr
    exports = dict(line.removeprefix("export ").split("=", 1) for line in started.stdout.splitlines())
    try:
        assert exports["LAMBDAREC_TABLES_URI"] == "s3a://lambdarec/delta"
        assert exports["LAMBDAREC_S3_ENDPOINT"].startswith("http://127.0.0.1:")
        write_events(tmp_path / "in", EVENTS)
        ingested = subprocess.run(
            [*cli, "ingest", "--source", str(tmp_path / "in")],
            env={**env, **exports},
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert ingested.returncode == 0, ingested.stdout + ingested.stderr
        settings = Settings(**{name.removeprefix("LAMBDAREC_").lower(): v for name, v in exports.items()})
        with s3a_session_conf(spark, settings):
            assert bronze_rows(spark, settings) == [
                ("e1", "u1", "i1", "view", date(2026, 11, 1)),
                ("e2", "u1", "i2", "purchase", date(2026, 11, 1)),
                ("e3", "u2", "i1", "click", date(2026, 11, 2)),
            ]
    finally:
        stopped = subprocess.run([*cli, "s3", "stop"], env=env, capture_output=True, text=True, timeout=120)
    assert stopped.stdout.strip() == "stopped s3", stopped.stdout + stopped.stderr

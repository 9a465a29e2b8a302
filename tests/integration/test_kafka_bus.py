"""Kafka as the event bus, against a real single-node broker started by infra/local/start-kafka.sh:
the publisher's wire format, `POST /v1/events` and `lambdarec events publish` producing to Kafka
(and not to the Redis Stream), and the streaming job reading Kafka exactly once (features, bronze,
quarantine; features equal ground truth after a SIGKILL). Every wait is a condition with a deadline."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from feature_store.event_bus import KafkaPublisher, encode_payload, open_publisher
from feature_store.events import Event
from feature_store.settings import Settings
from feature_store.tables import BRONZE_EVENTS, QUARANTINE
from lambdarec.kafka_broker import ensure_topic
from lambdarec.testing import shop_events, speed_feature_mismatches
from serving.app import create_app
from tests.integration.test_streaming import (
    KEYS,
    _job_env,
    _shop_events,
    status_counts,
    stop_all,
    table_count,
    text_hash,
    wait_for,
    zset,
)

pytestmark = [pytest.mark.integration, pytest.mark.scale_out]
_topics = itertools.count()


@pytest.fixture
def topic(kafka_broker: Settings) -> str:
    """A fresh topic (one partition) for one test."""
    name = f"events-{os.getpid()}-{next(_topics)}"
    ensure_topic(kafka_broker.kafka.bootstrap_servers, name, partitions=1)
    return name


def consume(
    bootstrap: str, topic: str, count: int, timeout_s: float = 60.0
) -> list[tuple[str, bytes | None, bytes]]:
    """The first `count` messages of the topic: (partition-offset, key, value)."""
    from confluent_kafka import Consumer

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-{topic}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    messages, deadline = [], time.monotonic() + timeout_s
    try:
        while len(messages) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                messages.append((f"{msg.partition()}-{msg.offset()}", msg.key(), msg.value()))
    finally:
        consumer.close()
    return messages


def event(event_id: str, user: str = "u1", **changes) -> dict:
    return {
        "event_id": event_id,
        "user_id": user,
        "item_id": "i1",
        "event_type": "view",
        "ts": 1_700_000_000_000,
        **changes,
    }


# -- publishing --------------------------------------------------------------------------------------
def test_publisher_sends_the_stream_wire_format_keyed_by_user(kafka_broker, topic):
    publisher = KafkaPublisher.connect(kafka_broker.kafka.bootstrap_servers, topic)
    typed = Event.model_validate(event("e1", context={"page": "home"}))
    try:
        ids = publisher.publish([typed, event("e2", user="u2"), "not json"])
        ids += asyncio.run(publisher.publish_async([event("e3")]))
    finally:
        publisher.close()

    assert ids == ["0-0", "0-1", "0-2", "0-3"]
    assert consume(kafka_broker.kafka.bootstrap_servers, topic, 4) == [
        ("0-0", b"u1", encode_payload(typed)),
        ("0-1", b"u2", orjson.dumps(event("e2", user="u2"))),
        ("0-2", None, b"not json"),
        ("0-3", b"u1", orjson.dumps(event("e3"))),
    ]


def test_publishing_to_an_unreachable_broker_fails_clearly():
    from confluent_kafka import Producer

    from feature_store.event_bus import EventBusUnavailable, kafka_producer_config
    from lambdarec.redis_server import free_port

    config = {**kafka_producer_config(f"127.0.0.1:{free_port()}", linger_ms=1), "message.timeout.ms": 500}
    publisher = KafkaPublisher(Producer(config), "nowhere")
    with pytest.raises(EventBusUnavailable, match="Kafka did not take an event for 'nowhere'"):
        publisher.publish([event("e1")])


async def test_api_publishes_events_to_kafka_not_the_redis_stream(
    serving_settings, redis_client, running, kafka_broker, topic
):
    settings = serving_settings.updated(
        event_bus="kafka", kafka_bootstrap_servers=kafka_broker.kafka.bootstrap_servers, kafka_topic=topic
    )
    async with running(create_app(settings)) as api:
        single = await api.post("/v1/events", json=event("e1"))
        batch = await api.post(
            "/v1/events", json=[event("e2", user="u2", event_type="purchase", value=9.5), event("e3")]
        )

    assert (single.status_code, single.json()) == (202, {"accepted": 1, "entry_ids": ["0-0"]})
    assert (batch.status_code, batch.json()) == (202, {"accepted": 2, "entry_ids": ["0-1", "0-2"]})
    assert [
        (eid, key, orjson.loads(value))
        for eid, key, value in consume(kafka_broker.kafka.bootstrap_servers, topic, 3)
    ] == [
        ("0-0", b"u1", Event.model_validate(event("e1")).to_json_dict()),
        (
            "0-1",
            b"u2",
            Event.model_validate(event("e2", user="u2", event_type="purchase", value=9.5)).to_json_dict(),
        ),
        ("0-2", b"u1", Event.model_validate(event("e3")).to_json_dict()),
    ]
    assert redis_client.exists(settings.bus.stream) == 0


def test_events_publish_command_produces_to_kafka(kafka_broker, topic, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from lambdarec.cli import build_app

    path = tmp_path / "events.jsonl"
    path.write_text(
        "\n".join(
            [orjson.dumps(event("e1")).decode(), "not json", orjson.dumps(event("e2", user="u2")).decode()]
        )
        + "\n"
    )
    for name, value in {
        "LAMBDAREC_EVENT_BUS": "kafka",
        "LAMBDAREC_KAFKA_TOPIC": topic,
        "LAMBDAREC_DATA_DIR": str(kafka_broker.data_dir),
        "LAMBDAREC_REDIS_URL": "redis://127.0.0.1:1/0",
    }.items():  # a Redis that does not exist: Kafka only
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(
        build_app(), ["events", "publish", str(path)]
    )  # bootstrap: the running local broker

    assert result.exit_code == 0, result.output
    assert f"published 2 events to kafka:{topic}" in result.output
    assert "skipped 1 lines that break the event contract: malformed 1" in result.output
    assert [
        (eid, key, orjson.loads(value)["event_id"])
        for eid, key, value in consume(kafka_broker.kafka.bootstrap_servers, topic, 2)
    ] == [
        ("0-0", b"u1", "e1"),
        ("0-1", b"u2", "e2"),
    ]


# -- the streaming job on Kafka ------------------------------------------------------------------------
@pytest.fixture
def kafka_stream_settings(
    table_settings: Settings, redis_server, kafka_broker: Settings, topic: str
) -> Settings:
    return table_settings.updated(
        redis_url=redis_server.url,
        event_bus="kafka",
        kafka_bootstrap_servers=kafka_broker.kafka.bootstrap_servers,
        kafka_topic=topic,
        stream_trigger_ms=100,
        stream_bronze_trigger_ms=200,
        stream_max_rows_per_batch=4,
    )


def test_kafka_events_become_features_bronze_rows_and_quarantine_once(
    spark, kafka_stream_settings, redis_client
):
    from spark_jobs.streaming.speed_job import start_queries

    settings = kafka_stream_settings
    t0 = int(time.time() * 1000) - 60_000
    good, bad = _shop_events(t0)
    publisher = open_publisher(settings)
    try:
        publisher.publish(good[:3] + bad[:2] + good[3:] + bad[2:])
    finally:
        publisher.close()
    queries = start_queries(spark, settings, settings.redis.url, redis_client)
    try:
        wait_for(lambda: status_counts(redis_client) == (6, 4), "the speed query to count every message")
        wait_for(lambda: table_count(spark, settings, BRONZE_EVENTS) == 6, "bronze rows")
        wait_for(lambda: table_count(spark, settings, QUARANTINE) == 4, "quarantine rows")
    finally:
        stop_all(queries)

    assert zset(redis_client, KEYS.recent_items("u1")) == {"b": t0 + 1000, "a": t0 + 2000, "c": t0 + 3000}
    assert {
        k: v for k, v in text_hash(redis_client, KEYS.session_counters("u2")).items() if k.startswith("type:")
    } == {"type:view": "1", "type:skip": "1"}
    assert zset(redis_client, KEYS.trending("1h")) == {"a": 2.0, "b": 3.0, "c": 8.0}
    assert (
        int(text_hash(redis_client, KEYS.speed_status)["last_batch_id"]) == 2
    )  # 10 messages, at most 4 per batch
    bronze = spark.read.format("delta").load(settings.table_path(BRONZE_EVENTS.name))
    assert sorted((r.event_id, r.source) for r in bronze.collect()) == [
        (f"g{n}", f"kafka:{settings.kafka.topic}") for n in range(1, 7)
    ]
    quarantine = spark.read.format("delta").load(settings.table_path(QUARANTINE.name))
    assert sorted(r.reason for r in quarantine.collect()) == [
        "future_timestamp",
        "malformed",
        "missing_user_id",
        "unknown_event_type",
    ]


@pytest.mark.long
def test_sigkill_mid_run_on_kafka_then_restart_loses_and_doubles_nothing(
    spark, kafka_stream_settings, redis_client, tmp_path
):
    settings = kafka_stream_settings
    events = shop_events(200, int(time.time() * 1000) - 120_000, seed=5, users=10)
    bad = [f"garbage {n}" for n in range(8)]
    payloads = events[:]
    for n, line in enumerate(bad):
        payloads.insert(n * 25 + 7, line)
    publisher = open_publisher(settings)
    try:
        publisher.publish(payloads)
    finally:
        publisher.close()
    env = {
        **_job_env(settings),
        "LAMBDAREC_EVENT_BUS": "kafka",
        "LAMBDAREC_KAFKA_TOPIC": settings.kafka.topic,
        "LAMBDAREC_KAFKA_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "LAMBDAREC_STREAM_MAX_ROWS_PER_BATCH": "25",
        "LAMBDAREC_STREAM_BRONZE_TRIGGER_MS": "1000",
    }  # bronze admits 10 x 25 rows: few Delta commits keep the test short
    cli = [str(Path(sys.executable).parent / "lambdarec")]
    log = open(tmp_path / "job.log", "ab")
    job = subprocess.Popen(
        [sys.executable, "-m", "spark_jobs.streaming.speed_job"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for(
            lambda: status_counts(redis_client)[0] >= 50 or job.poll() is not None, "the job to be mid-run"
        )
        os.killpg(job.pid, signal.SIGKILL)  # the job, its JVM and Python workers, no clean-up at all
        job.wait()
        assert status_counts(redis_client)[0] < len(events), "the kill landed after the job had finished"

        started = subprocess.run(
            [*cli, "stream", "start", "--background", "--timeout-s", "290"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert started.returncode == 0, started.stdout + started.stderr
        wait_for(
            lambda: status_counts(redis_client) == (len(events), len(bad)), "the restarted job to catch up"
        )
        wait_for(lambda: table_count(spark, settings, BRONZE_EVENTS) == len(events), "bronze to catch up")
        wait_for(lambda: table_count(spark, settings, QUARANTINE) == len(bad), "quarantine to catch up")
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
        subprocess.run([*cli, "stream", "stop"], env=env, capture_output=True, timeout=300)
        log.close()
        for path in (tmp_path / "job.log", settings.run_dir / "stream.log"):  # shown when the test fails
            print(
                f"--- {path}",
                *path.read_text(errors="replace").splitlines()[-40:] if path.exists() else [],
                sep="\n",
            )

    assert speed_feature_mismatches(redis_client, KEYS, events) == []
    bronze_ids = [
        r.event_id
        for r in spark.read.format("delta")
        .load(settings.table_path(BRONZE_EVENTS.name))
        .select("event_id")
        .collect()
    ]
    assert sorted(bronze_ids) == sorted(e["event_id"] for e in events)  # each exactly once

"""Pure parts of the Kafka bus: which publisher the settings pick, message keys and ids, the local
broker's configuration and Maven project, and which Spark packages the JAR cache still lacks."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from feature_store.event_bus import (
    KafkaPublisher,
    RedisStreamPublisher,
    kafka_entry_id,
    kafka_message_key,
    kafka_producer_config,
    open_publisher,
)
from feature_store.events import Event
from feature_store.settings import Settings
from lambdarec.kafka_broker import broker_pom, cluster_id, server_properties
from spark_jobs.jars import missing_packages


def test_the_settings_pick_the_bus():
    redis = RedisStreamPublisher(client=object(), stream="lr:events")
    picked = open_publisher(Settings(event_stream="s", event_stream_maxlen=7), redis_client=redis.client)
    assert (type(picked), picked.stream, picked.maxlen, picked.destination) == (
        RedisStreamPublisher,
        "s",
        7,
        "s",
    )
    assert open_publisher(Settings(), redis_client=object(), trim=False).maxlen is None
    kafka = open_publisher(Settings(event_bus="kafka", kafka_topic="t"), kafka_bootstrap="127.0.0.1:1")
    assert (type(kafka), kafka.topic, kafka.destination) == (KafkaPublisher, "t", "kafka:t")
    with pytest.raises(ValueError, match="LAMBDAREC_KAFKA_BOOTSTRAP_SERVERS"):
        open_publisher(Settings(event_bus="kafka"))
    with pytest.raises(ValueError, match="needs a Redis client"):
        open_publisher(Settings())


def test_producer_is_idempotent_and_waits_for_all_replicas():
    assert kafka_producer_config("h:9092", 2.0) == {
        "bootstrap.servers": "h:9092",
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 2.0,
        "message.timeout.ms": 30_000,
    }


def test_messages_are_keyed_by_user_and_identified_by_partition_and_offset():
    typed = Event.model_validate(
        {"event_id": "e", "user_id": "u7", "item_id": "i", "event_type": "view", "ts": 1}
    )
    assert [kafka_message_key(e) for e in (typed, {"user_id": "u8"}, {"user_id": 3}, "raw line", b"raw")] == [
        b"u7",
        b"u8",
        None,
        None,
        None,
    ]
    assert kafka_entry_id(2, 41) == "2-41"


def test_broker_config_is_one_kraft_node_on_loopback():
    props = dict(
        line.split("=", 1)
        for line in server_properties(
            host="127.0.0.1", port=9, controller_port=10, log_dir=Path("/d"), partitions=3
        ).splitlines()
    )
    assert {
        k: props[k]
        for k in (
            "process.roles",
            "controller.quorum.voters",
            "listeners",
            "advertised.listeners",
            "log.dirs",
            "num.partitions",
            "log.message.timestamp.type",
            "offsets.topic.replication.factor",
        )
    } == {
        "process.roles": "broker,controller",
        "controller.quorum.voters": "1@127.0.0.1:10",
        "listeners": "PLAINTEXT://127.0.0.1:9,CONTROLLER://127.0.0.1:10",
        "advertised.listeners": "PLAINTEXT://127.0.0.1:9",
        "log.dirs": "/d",
        "num.partitions": "3",
        "log.message.timestamp.type": "LogAppendTime",
        "offsets.topic.replication.factor": "1",
    }
    assert len(base64.urlsafe_b64decode(cluster_id() + "==")) == 16


def test_a_cluster_id_never_starts_with_a_dash_that_the_storage_tool_reads_as_an_option():
    # 0xF8 encodes to a leading "-" in URL-safe base64; Kafka's own Uuid.randomUuid draws again.
    draws = iter([b"\xf8" + bytes(15), bytes(16)])
    assert cluster_id(lambda: next(draws)) == "AAAAAAAAAAAAAAAAAAAAAA"


def test_broker_pom_names_kafka_and_the_slf4j_binding():
    pom = broker_pom("4.1.1")
    assert (
        "<groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>4.1.1</version>"
        in pom
    )
    assert "<artifactId>log4j-slf4j-impl</artifactId>" in pom


def test_only_packages_without_their_main_jar_are_resolved():
    packages = {
        "delta-spark_": "io.delta:delta-spark_4.2_2.13:4.4.0",
        "spark-sql-kafka-0-10_": "org.apache.spark:spark-sql-kafka-0-10_2.13:4.2.0",
    }
    cached = ["io.delta_delta-spark_4.2_2.13-4.4.0.jar", "io.delta_delta-storage-4.4.0.jar"]
    assert missing_packages(cached, packages) == ["org.apache.spark:spark-sql-kafka-0-10_2.13:4.2.0"]
    assert missing_packages([*cached, "org.apache.spark_spark-sql-kafka-0-10_2.13-4.2.0.jar"], packages) == []
    assert missing_packages([], packages) == list(packages.values())

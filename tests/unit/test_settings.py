"""Settings by component: the flat LAMBDAREC_* names operators set land in the nested fields the code
reads, one name per field; explicit names are checked; `settings_environment` round-trips."""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError
from pydantic_settings.exceptions import SettingsError

from feature_store.settings import Component, Settings, flat_fields, load_settings
from lambdarec.testing import settings_environment


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.upper().startswith("LAMBDAREC_")]:
        monkeypatch.delenv(key)


# (variable, value, where it lands, the value read there): one row or more per component
ENVIRONMENT = [
    ("LAMBDAREC_PROFILE", "production", "profile", "production"),
    ("LAMBDAREC_SPARK_MASTER", "spark://head:7077", "spark.master", "spark://head:7077"),
    (
        "LAMBDAREC_SPARK_CONF",
        '{"spark.executor.memory": "4g"}',
        "spark.conf",
        {"spark.executor.memory": "4g"},
    ),
    ("LAMBDAREC_S3_ENDPOINT", "http://minio:9000", "s3.endpoint", "http://minio:9000"),
    ("LAMBDAREC_S3_PATH_STYLE_ACCESS", "true", "s3.path_style_access", True),
    ("LAMBDAREC_S3_SECRET_ACCESS_KEY", "k3y", "s3.secret_access_key", "k3y"),
    ("LAMBDAREC_REDIS_URL", "redis://store:6380/2", "redis.url", "redis://store:6380/2"),
    ("LAMBDAREC_REDIS_CLUSTER", "true", "redis.cluster", True),
    ("LAMBDAREC_EVENT_BUS", "kafka", "bus.kind", "kafka"),
    ("LAMBDAREC_EVENT_STREAM_MAXLEN", "1500", "bus.stream_maxlen", 1500),
    ("LAMBDAREC_KAFKA_TOPIC", "clicks", "kafka.topic", "clicks"),
    ("LAMBDAREC_MLFLOW_TRACKING_URI", "http://mlflow:5000", "mlflow.tracking_uri", "http://mlflow:5000"),
    ("LAMBDAREC_LABEL_HORIZON_DAYS", "14", "batch.label_horizon_days", 14),
    ("LAMBDAREC_BATCH_TOP_N", "40", "batch.top_n", 40),
    ("LAMBDAREC_ALS_RANKS", "[8,16]", "candidates.als_ranks", (8, 16)),
    ("LAMBDAREC_CANDIDATES_PER_SOURCE", "25", "candidates.per_source", 25),
    ("LAMBDAREC_CANDIDATE_SOURCES", '["ease", "covisit"]', "candidates.sources", ("covisit", "ease")),
    ("LAMBDAREC_TRAIN_NUM_WORKERS", "3", "ranker.num_workers", 3),
    ("LAMBDAREC_RANKER_MODEL_NAME", "shop-ranker", "ranker.model_name", "shop-ranker"),
    ("LAMBDAREC_PROMOTION_MIN_GAIN", "0.01", "promotion.min_gain", 0.01),
    ("LAMBDAREC_PUBLISH_KEEP_VERSIONS", "5", "publish.keep_versions", 5),
    ("LAMBDAREC_STREAM_TRIGGER_MS", "500", "stream.trigger_ms", 500),
    (
        "LAMBDAREC_STREAM_RESTART_COMMAND",
        '["systemctl", "restart", "lr-stream"]',
        "stream.restart_command",
        ["systemctl", "restart", "lr-stream"],
    ),  # fmt: skip
    ("LAMBDAREC_RECENT_ITEMS_MAX", "20", "speed.recent_items_max", 20),
    ("LAMBDAREC_SPEED_TTL_S", "3600", "speed.ttl_s", 3600),
    ("LAMBDAREC_SERVING_REDIS_BUDGET_S", "0.25", "serving.redis_budget_s", 0.25),
    ("LAMBDAREC_SERVING_EVENTS_BUDGET_S", "2", "serving.events_budget_s", 2.0),
    ("LAMBDAREC_API_PORT", "9000", "serving.port", 9000),
    ("LAMBDAREC_MAX_K", "50", "serving.max_k", 50),
    ("LAMBDAREC_API_KEYS_SHA256", '["ab12"]', "auth.keys_sha256", ["ab12"]),
    ("LAMBDAREC_AIRFLOW_PORT", "8081", "airflow.port", 8081),
]


def read(settings: Settings, where: str):
    value = settings
    for part in where.split("."):
        value = getattr(value, part)
    return value


@pytest.mark.parametrize(
    ("variable", "text", "where", "expected"), ENVIRONMENT, ids=[r[0] for r in ENVIRONMENT]
)
def test_a_flat_variable_lands_in_its_component(monkeypatch, variable, text, where, expected):
    default = read(Settings(), where)
    monkeypatch.setenv(variable, text)
    assert read(Settings(), where) == expected != default


def test_every_component_is_reached_from_the_environment():
    components = {
        name for name, info in Settings.model_fields.items() if issubclass_component(info.annotation)
    }
    assert components == {row[2].split(".")[0] for row in ENVIRONMENT if "." in row[2]}


def issubclass_component(annotation) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, Component)


def test_flat_names_are_one_to_one_with_fields():
    leaves = [
        (component, field)
        for component, info in Settings.model_fields.items()
        if issubclass_component(info.annotation)
        for field in info.annotation.model_fields
    ] + [
        (None, name)
        for name, info in Settings.model_fields.items()
        if not issubclass_component(info.annotation)
    ]
    places = [(where.component, where.field) for where in flat_fields().values()]
    assert sorted(places, key=str) == sorted(leaves, key=str)  # every field has a flat name, once
    assert len(set(flat_fields())) == len(leaves)  # no two fields share one
    assert flat_fields()["event_bus"][:2] == ("bus", "kind")
    assert flat_fields()["candidates_per_source"][:2] == ("candidates", "per_source")
    assert flat_fields()["data_dir"][:2] == (None, "data_dir")


def test_flat_keywords_set_nested_fields_and_win_over_the_environment(monkeypatch):
    monkeypatch.setenv("LAMBDAREC_SPARK_MASTER", "spark://head:7077")
    monkeypatch.setenv("LAMBDAREC_SPARK_APP_NAME", "from-env")
    settings = Settings(spark_master="local[2]", label_horizon_days=3)
    assert (settings.spark.master, settings.spark.app_name) == ("local[2]", "from-env")
    assert settings.batch.label_horizon_days == 3
    assert load_settings(event_bus="kafka").bus.kind == "kafka"


def test_updated_changes_by_flat_name_validates_and_leaves_the_original(tmp_path):
    original = Settings(data_dir=tmp_path)
    changed = original.updated(
        serving_use_ranker="false", serving_redis_budget_s="0", spark_master="local[1]"
    )
    assert (changed.serving.use_ranker, changed.serving.redis_budget_s, changed.spark.master) == (
        False,
        0.0,
        "local[1]",
    )
    assert (original.serving.use_ranker, original.spark.master) == (True, "local[*]")
    assert changed.data_dir == tmp_path and changed.updated() == changed


@pytest.mark.parametrize("name", ["spark_mastr", "redis_timeout_s", "serving_orjson"])
def test_an_unknown_explicit_name_is_an_error_naming_it(name):
    with pytest.raises(ValidationError, match=f"unknown setting '{name}'"):
        Settings(**{name: 1})
    with pytest.raises(ValueError, match=f"unknown setting '{name}'"):
        Settings().updated(**{name: 1})


def test_unknown_environment_variables_are_ignored(monkeypatch):
    monkeypatch.setenv("LAMBDAREC_NOT_A_SETTING", "1")
    monkeypatch.setenv("LAMBDAREC_SERVING_ORJSON", "false")
    assert Settings().spark.master == "local[*]"


def test_a_bad_json_value_names_its_variable(monkeypatch):
    monkeypatch.setenv("LAMBDAREC_SPARK_CONF", "{not json")
    with pytest.raises(SettingsError, match="LAMBDAREC_SPARK_CONF"):
        Settings()


def test_backlog_must_exceed_the_trim_length(monkeypatch):
    message = (
        r"LAMBDAREC_EVENT_STREAM_MAX_BACKLOG \(5\) must be above LAMBDAREC_EVENT_STREAM_MAXLEN \(10\): "
        "the bus keeps that many committed entries before trimming"
    )
    with pytest.raises(ValidationError, match=message):
        Settings(event_stream_maxlen=10, event_stream_max_backlog=5)
    with pytest.raises(ValidationError, match=message):
        Settings().updated(event_stream_maxlen=10, event_stream_max_backlog=5)
    monkeypatch.setenv("LAMBDAREC_EVENT_STREAM_MAXLEN", "10")
    monkeypatch.setenv("LAMBDAREC_EVENT_STREAM_MAX_BACKLOG", "5")
    with pytest.raises(ValidationError, match=message):
        Settings()


def test_settings_environment_round_trips(monkeypatch, tmp_path):
    settings = Settings(
        data_dir=tmp_path,
        jars_dir=tmp_path
        / "jars",  # explicit: a default under a symlinked .cache is not resolved, a set one is
        kafka_jars_dir=tmp_path / "kafka",
        tables_uri="s3a://bucket/lr",
        spark_master="spark://head:7077",
        spark_conf={"spark.executor.cores": "2"},
        s3_endpoint="http://minio:9000",
        s3_path_style_access=True,
        redis_url="redis://store:6380/1",
        event_bus="kafka",
        kafka_bootstrap_servers="broker:9092",
        mlflow_tracking_uri="http://mlflow:5000",
        holdout_days=14,
        als_ranks=(8, 16),
        train_num_workers=1,
        promotion_min_users=10,
        stream_restart_command=["true"],
        recent_items_max=7,
        serving_use_ranker=False,
        max_k=30,
        api_keys_sha256=["ab12"],
        airflow_port=8089,
    )
    env = settings_environment(settings)
    assert env["LAMBDAREC_ALS_RANKS"] == "[8, 16]" and env["LAMBDAREC_EVENT_BUS"] == "kafka"
    assert "LAMBDAREC_SPARK_APP_NAME" not in env  # defaults stay unset
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert load_settings() == settings


def test_flat_values_name_every_setting_once():
    values = Settings(batch_top_n=9).flat_values()
    assert values["batch_top_n"] == 9 and values["spark_master"] == "local[*]"
    assert set(values) == set(flat_fields())


@pytest.mark.parametrize("sources", [(), ("ease", "imdb")])
def test_candidate_sources_must_be_a_non_empty_subset_of_the_nightly_sources(sources):
    with pytest.raises(ValidationError, match="non-empty subset of als, covisit, popular, ease"):
        Settings(candidate_sources=sources)

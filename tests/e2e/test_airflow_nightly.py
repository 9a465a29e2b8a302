"""`airflow dags test lambdarec_nightly <date>` on a tiny synthetic data set: every step runs through
SparkSubmitOperator (the `spark_default` connection from settings, local[2]) and the run ends with a
champion ranker in MLflow and published recommendations in Redis.

Real Airflow (SQLite in a temp AIRFLOW_HOME), real spark-submit, real MLflow (SQLite), real
redis-server. The data: a generated world whose last day is the day before the pipeline date, ingested
into bronze with the run's shared Spark session.
"""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from feature_store.redis_keys import RedisKeys
from feature_store.settings import Settings
from lambdarec.airflow_local import airflow_env, prepare_airflow_home

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

PIPELINE_DATE = date(2026, 3, 15)


@pytest.fixture(scope="module")
def nightly_settings(settings: Settings, redis_server, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A fresh data directory, the run's redis-server, and a small, quick batch layer."""
    return settings.model_copy(
        update={
            "data_dir": tmp_path_factory.mktemp("nightly"),
            "tables_uri": None,
            "redis_url": redis_server.url,
            "spark_master": "local[2]",
            "ranker_trees": 30,
            "als_max_iters": (5,),
            "label_horizon_days": 3,
            "promotion_min_users": 50,  # 150 generated users: fewer holdout users than the production default (100) may decide
            "promotion_min_gain": -1.0,  # tiny data cannot show a significant gain: these tests check the loop; the gate's decision rule is unit-tested (test_promotion_gate.py)
            "airflow_parallelism": 2,
        }
    )


@pytest.fixture(scope="module")
def ingested(spark, nightly_settings: Settings) -> Settings:
    """Two weeks of synthetic events ending the day before the pipeline date, in bronze."""
    from lambdarec.datagen import GeneratorConfig, generate
    from spark_jobs.ingest import ingest

    days = 14
    config = GeneratorConfig(
        events=6000,
        users=150,
        items=80,
        categories=5,
        days=days,
        start=PIPELINE_DATE - timedelta(days=days),
        seed=11,
    )
    out = nightly_settings.data_dir / "generated"
    generate(config, out)
    report = ingest(spark, nightly_settings, out, "jsonl", datetime(2026, 3, 15, 6, tzinfo=UTC))
    assert report.ingested == 6000
    return nightly_settings


def _airflow(settings: Settings, *args: str, timeout_s: float = 1500) -> subprocess.CompletedProcess:
    env = airflow_env(settings, os.environ)
    airflow = str(Path(env["PYSPARK_PYTHON"]).parent / "airflow")
    return subprocess.run(
        [airflow, *args], env=env, capture_output=True, text=True, timeout=timeout_s, check=False
    )


def json_output(stdout: str) -> str:
    """The JSON document of an `airflow ... --output json` command: Airflow may print warnings (e.g. a
    missing graphviz) on stdout before it."""
    lines = [line for line in stdout.splitlines() if line.startswith(("[", "{"))]
    assert lines, f"no JSON in airflow's output:\n{stdout[-2000:]}"
    return lines[-1]


@pytest.fixture(scope="module")
def nightly_run(ingested: Settings) -> subprocess.CompletedProcess:
    prepare_airflow_home(ingested)
    migrated = _airflow(ingested, "db", "migrate", timeout_s=300)
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    done = _airflow(ingested, "dags", "test", "lambdarec_nightly", PIPELINE_DATE.isoformat(), timeout_s=2500)
    log = ingested.data_dir / "dags-test.log"
    log.write_text(done.stdout + "\n--- stderr ---\n" + done.stderr)
    assert done.returncode == 0, f"see {log}\n" + (done.stdout + done.stderr)[-4000:]
    return done


@pytest.mark.timeout(2700)  # the first test pays for the whole run (ten spark-submits)
def test_nightly_run_succeeds_with_every_step(nightly_run, ingested: Settings) -> None:
    listed = _airflow(ingested, "dags", "list-runs", "lambdarec_nightly", "--output", "json", timeout_s=120)
    assert listed.returncode == 0, listed.stderr[-2000:]
    runs = json.loads(json_output(listed.stdout))
    assert [(r["state"], r["logical_date"][:10]) for r in runs] == [("success", PIPELINE_DATE.isoformat())]


def test_nightly_run_leaves_a_champion_in_mlflow(nightly_run, ingested: Settings) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=ingested.tracking_uri, registry_uri=ingested.registry_uri)
    champion = client.get_model_version_by_alias(ingested.ranker_model_name, "champion")
    assert champion.name == ingested.ranker_model_name
    assert int(champion.version) >= 1


def test_nightly_run_publishes_recommendations_to_redis(
    nightly_run, ingested: Settings, redis_server
) -> None:
    import redis

    client = redis.Redis.from_url(redis_server.url)
    keys = RedisKeys(ingested.redis_key_prefix)
    version = client.get(keys.batch_pointer)
    assert version is not None
    version = version.decode()
    meta = {k.decode(): v.decode() for k, v in client.hgetall(keys.batch_meta(version)).items()}
    assert meta["as_of"] == PIPELINE_DATE.isoformat()
    recs = list(client.scan_iter(match=keys.user_recs(version, "*"), count=1000))
    assert len(recs) > 0


def test_promote_dag_logic_validates_on_the_current_holdout_and_forces_with_a_reason(
    nightly_run, ingested: Settings, spark
) -> None:
    """What lambdarec_promote's tasks do, on the registry the nightly left: the other ranker is judged
    on the run's holdout; forcing it moves `champion` and records the reason in MLflow."""
    from mlflow.tracking import MlflowClient

    from lambdarec.promotion import FORCED_REASON_TAG, PromotionRejected, promote_version, validate_version

    client = MlflowClient(tracking_uri=ingested.tracking_uri, registry_uri=ingested.registry_uri)
    name = ingested.ranker_model_name
    champion = str(client.get_model_version_by_alias(name, "champion").version)
    versions = sorted(str(v.version) for v in client.search_model_versions(f"name = '{name}'"))
    assert len(versions) == 2  # xgboost and lightgbm of the one run date
    other = next(v for v in versions if v != champion)
    check = validate_version(spark, ingested, other).as_dict()
    assert (check["version"], check["champion"], check["metric"]) == (
        other,
        champion,
        ingested.promotion_metric,
    )
    assert check["holdout_as_of"] == (PIPELINE_DATE - timedelta(days=3)).isoformat()
    assert 0.0 <= check["candidate_score"] <= 1.0 and 0.0 <= check["champion_score"] <= 1.0
    if not check["passed"]:
        with pytest.raises(PromotionRejected):
            promote_version(ingested, check)
        assert str(client.get_model_version_by_alias(name, "champion").version) == champion
    failed = {**check, "passed": False}
    message = promote_version(ingested, failed, force=True, reason="rollout test of the other ranker")
    assert message.startswith(f"{name} v{other} is champion (forced")
    assert str(client.get_model_version_by_alias(name, "champion").version) == other
    assert client.get_model_version(name, other).tags[FORCED_REASON_TAG] == "rollout test of the other ranker"

"""Pure parts of the local orchestration: the environment Airflow runs in, the watchdog's verdict,
and the port check of local services."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from feature_store.settings import Settings, project_root
from lambdarec.airflow_local import airflow_env, settings_env, spark_connection
from lambdarec.local_services import PortInUse, ServiceSpec, ensure_port_free, port_in_use
from lambdarec.watchdog import StreamHealth, assess_stream


@pytest.fixture
def local_settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        spark_master="local[2]",
        airflow_port=18080,
        redis_url="redis://127.0.0.1:6399/0",
    )


def test_spark_connection_carries_the_settings_master(local_settings: Settings) -> None:
    assert json.loads(spark_connection(local_settings)) == {
        "conn_type": "spark",
        "host": "local[2]",
        "extra": {"spark-binary": "spark-submit"},
    }
    cluster = local_settings.updated(spark_master="k8s://https://kubernetes.default.svc:443")
    assert json.loads(spark_connection(cluster))["host"] == "k8s://https://kubernetes.default.svc:443"


def test_settings_env_round_trips_through_settings(
    local_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = local_settings.updated(spark_conf={"spark.executor.cores": "2"})
    env = settings_env(original)
    assert env["LAMBDAREC_DATA_DIR"] == str(local_settings.data_dir)
    assert env["LAMBDAREC_SPARK_CONF"] == '{"spark.executor.cores": "2"}'
    assert "LAMBDAREC_TABLES_URI" not in env  # unset stays unset
    for key in [k for k in os.environ if k.startswith("LAMBDAREC_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert Settings().model_dump() == original.model_dump()


def test_airflow_env_points_airflow_at_the_repo_dags_and_the_data_dir(local_settings: Settings) -> None:
    base = {"PATH": "/usr/bin:/bin", "HOME": "/root", "LAMBDAREC_DATA_DIR": "/somewhere/else"}
    env = airflow_env(local_settings, base, python="/venv/bin/python")
    home = local_settings.data_dir / "airflow"
    assert env["AIRFLOW_HOME"] == str(home)
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(project_root() / "dags")
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == f"sqlite:///{home / 'airflow.db'}"
    assert env["AIRFLOW__CORE__PARALLELISM"] == "4"
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert env["AIRFLOW__API__PORT"] == "18080"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:18080/execution/"
    assert json.loads(env["AIRFLOW_CONN_SPARK_DEFAULT"])["host"] == "local[2]"
    # spark-submit and airflow come from the venv's bin, which goes first on PATH.
    assert env["PATH"] == "/venv/bin:/usr/bin:/bin"
    assert env["PYSPARK_PYTHON"] == env["PYSPARK_DRIVER_PYTHON"] == "/venv/bin/python"
    assert env["SPARK_CONF_DIR"] == str(local_settings.data_dir / "spark-conf")
    # The caller's settings win over stale LAMBDAREC_* variables of the base environment.
    assert env["LAMBDAREC_DATA_DIR"] == str(local_settings.data_dir)
    assert env["LAMBDAREC_REDIS_URL"] == "redis://127.0.0.1:6399/0"
    assert env["HOME"] == "/root"


NOW = 1_700_000_000_000


def test_watchdog_no_live_job_is_down_whatever_the_backlog() -> None:
    health = assess_stream(
        {"state": "stopped", "lag_ms_p99": "420", "processed": "17"}, False, None, NOW, 120
    )
    assert health == StreamHealth(
        "down", "no streaming job is alive (last reported state: stopped)", None, 420.0, 17
    )
    assert health.needs_restart


def test_watchdog_old_unread_event_means_stuck() -> None:
    health = assess_stream({"state": "running"}, True, NOW - 121_000, NOW, 120)
    assert health == StreamHealth(
        "stuck", "the oldest unread event has waited 121s (limit 120s)", 121.0, None, None
    )


def test_watchdog_idle_or_fresh_job_is_healthy() -> None:
    assert assess_stream({"state": "running", "processed": "5"}, True, None, NOW, 120) == StreamHealth(
        "healthy", "no unread events", None, None, 5
    )
    fresh = assess_stream({"state": "running"}, True, NOW - 119_500, NOW, 120)
    assert (fresh.state, fresh.backlog_age_s, fresh.needs_restart) == ("healthy", 119.5, False)


def test_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        assert port_in_use("127.0.0.1", port)
        spec = ServiceSpec("mlflow-ui", ["true"], port=port, port_setting="LAMBDAREC_MLFLOW_UI_PORT")
        with pytest.raises(
            PortInUse, match=f"mlflow-ui needs port {port} .* set LAMBDAREC_MLFLOW_UI_PORT to a free port"
        ):
            ensure_port_free(spec)
    assert not port_in_use("127.0.0.1", port)


def test_spark_defaults_carry_the_session_conf_for_spark_submit(
    local_settings: Settings, tmp_path: Path
) -> None:
    from lambdarec.airflow_local import spark_defaults
    from spark_jobs.session import spark_conf

    jars = tmp_path / "jars"
    jars.mkdir()
    (jars / "io.delta_delta-spark_4.2_2.13-4.4.0.jar").write_bytes(b"")
    (jars / "io.delta_delta-storage-4.4.0.jar").write_bytes(b"")
    settings = local_settings.updated(jars_dir=jars, spark_conf={"spark.executor.cores": "2"})
    lines = spark_defaults(settings).splitlines()
    expected = {k: v for k, v in spark_conf(settings).items() if k not in ("spark.master", "spark.app.name")}
    assert lines == [f"{k} {v}" for k, v in sorted(expected.items())]
    assert (
        f"spark.jars {jars / 'io.delta_delta-spark_4.2_2.13-4.4.0.jar'},{jars / 'io.delta_delta-storage-4.4.0.jar'}"
        in lines
    )
    assert "spark.sql.extensions io.delta.sql.DeltaSparkSessionExtension" in lines
    assert "spark.executor.cores 2" in lines
    assert not any(line.startswith(("spark.master ", "spark.app.name ")) for line in lines)


def test_a_port_whose_server_just_stopped_is_free_again() -> None:
    """A stopped server leaves its closed connections in TIME_WAIT for a minute; servers bind with
    SO_REUSEADDR and start again at once, so the pre-start check must not call that port taken."""
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        served, _ = listener.accept()
        served.close()  # the server closes first: its side of the connection waits in TIME_WAIT
        client.close()
    assert not port_in_use("127.0.0.1", port)


def test_spark_defaults_on_s3a_carry_the_connector_but_no_credentials(
    local_settings: Settings, tmp_path: Path
) -> None:
    from lambdarec.airflow_local import spark_defaults

    jars = tmp_path / "jars"
    (jars / "s3a").mkdir(parents=True)
    (jars / "io.delta_delta-spark_4.2_2.13-4.4.0.jar").write_bytes(b"")
    (jars / "s3a" / "org.apache.hadoop_hadoop-aws-3.5.0.jar").write_bytes(b"")
    settings = local_settings.updated(
        jars_dir=jars,
        tables_uri="s3a://lake/lr",
        s3_endpoint="http://minio:9000",
        s3_path_style_access=True,
        s3_access_key_id="AKIA-ID",
        s3_secret_access_key="s3-secret",
    )
    text = spark_defaults(settings)
    lines = text.splitlines()
    # spark-submit starts the driver JVM: the class path must come from this file.
    assert f"spark.driver.extraClassPath {jars / 's3a' / 'org.apache.hadoop_hadoop-aws-3.5.0.jar'}" in lines
    assert "spark.hadoop.fs.s3a.endpoint http://minio:9000" in lines
    assert "spark.hadoop.fs.s3a.path.style.access true" in lines
    assert "AKIA-ID" not in text and "s3-secret" not in text

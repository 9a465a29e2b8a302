"""Pure parts of the local Spark standalone cluster (lambdarec.spark_cluster) and the nightly DAG's
spark-submit against a `spark://` master."""

from __future__ import annotations

from pathlib import Path

import pytest

from feature_store.settings import Settings
from lambdarec.spark_cluster import alive_workers, cluster_from_settings, daemon_env, master_args, worker_args


def test_master_and_worker_command_lines_bind_loopback(tmp_path: Path) -> None:
    props = tmp_path / "daemons.conf"
    assert master_args("127.0.0.1", 7077, 8090, props) == [
        "org.apache.spark.deploy.master.Master",
        "--host",
        "127.0.0.1",
        "--port",
        "7077",
        "--webui-port",
        "8090",
        "--properties-file",
        str(props),
    ]
    assert worker_args("spark://127.0.0.1:7077", "127.0.0.1", 1, "2g", tmp_path / "work", 8091, props) == [
        "org.apache.spark.deploy.worker.Worker",
        "spark://127.0.0.1:7077",
        "--host",
        "127.0.0.1",
        "--cores",
        "1",
        "--memory",
        "2g",
        "--work-dir",
        str(tmp_path / "work"),
        "--webui-port",
        "8091",
        "--properties-file",
        str(props),
    ]


def test_daemon_env_gives_executors_this_python_and_checkout(tmp_path: Path) -> None:
    env = daemon_env(
        {"PATH": "/bin", "PYTHONPATH": "/extra"},
        tmp_path / "pyspark",
        "127.0.0.1",
        tmp_path / "logs",
        "/venv/bin/python",
        "/repo",
    )
    assert env == {
        "PATH": "/bin",
        "PYTHONPATH": "/repo:/extra",
        "SPARK_HOME": str(tmp_path / "pyspark"),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_LOG_DIR": str(tmp_path / "logs"),
        "SPARK_DAEMON_MEMORY": "512m",
        "PYSPARK_PYTHON": "/venv/bin/python",
    }
    assert daemon_env({}, tmp_path, "127.0.0.1", tmp_path, "/py", "/repo")["PYTHONPATH"] == "/repo"


def test_alive_workers_counts_only_alive_ones() -> None:
    status = {
        "workers": [{"state": "ALIVE"}, {"state": "DEAD"}, {"state": "ALIVE"}, {"state": "DECOMMISSIONED"}]
    }
    assert alive_workers(status) == 2
    assert alive_workers({"status": "ALIVE"}) == 0


def test_cluster_from_settings(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path, spark_cluster_port=0, spark_cluster_workers=3, spark_cluster_worker_memory="1g"
    )
    cluster = cluster_from_settings(settings)
    assert (
        cluster.directory,
        cluster.workers,
        cluster.worker_cores,
        cluster.worker_memory,
        cluster.port,
    ) == (tmp_path / "spark-cluster", 3, 1, "1g", None)
    assert cluster_from_settings(Settings(data_dir=tmp_path)).port == 7077


def test_nightly_spark_submit_goes_to_the_cluster_master(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The DAG's operators take the master from AIRFLOW_CONN_SPARK_DEFAULT, built from LAMBDAREC_SPARK_MASTER."""
    from airflow.providers.apache.spark.hooks.spark_submit import SparkSubmitHook

    from lambdarec.airflow_local import spark_connection

    settings = Settings(data_dir=tmp_path, spark_master="spark://127.0.0.1:7077")
    monkeypatch.setenv("AIRFLOW_CONN_SPARK_DEFAULT", spark_connection(settings))
    command = SparkSubmitHook(conn_id="spark_default", name="lambdarec-features")._build_spark_submit_command(
        "batch_pipeline.py"
    )
    assert command[:3] == ["spark-submit", "--master", "spark://127.0.0.1:7077"]

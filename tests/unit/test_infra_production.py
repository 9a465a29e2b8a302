"""The production deployment files parse, hold every service the code needs, and set only real settings.

No Docker engine or cluster runs here, so this is what keeps infra/production true: the compose file and
the Kubernetes manifests are parsed, their services and wiring checked, and every LAMBDAREC_* variable
they set is built into a real `Settings` (so a typo or a bad JSON value fails here, not in production).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import yaml

from feature_store.settings import Settings, project_root

PRODUCTION = project_root() / "infra" / "production"
SETTING_NAMES = {f"LAMBDAREC_{name.upper()}" for name in Settings.model_fields}


def _compose() -> dict:
    return yaml.safe_load((PRODUCTION / "docker-compose.yml").read_text())


def _manifests() -> list[dict]:
    docs = []
    for path in sorted((PRODUCTION / "k8s").glob("*.yaml")):
        if path.name == "airflow-values.yaml":
            continue
        docs.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return docs


def _find(docs: list[dict], kind: str, name: str) -> dict:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
    return matches[0]


def _settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings built from the LAMBDAREC_* variables exactly as a process would read them."""
    for key in [k for k in os.environ if k.startswith("LAMBDAREC_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith("LAMBDAREC_"):
            monkeypatch.setenv(key, value)
    return Settings()


def _interpolation_free(env: dict) -> dict[str, str]:
    """Compose values without `${...}` (those are the operator's secrets)."""
    return {k: str(v) for k, v in env.items() if "${" not in str(v)}


# -- docker compose ---------------------------------------------------------------------------------


def test_compose_has_every_service_the_system_needs() -> None:
    services = _compose()["services"]
    assert {
        "redis", "postgres", "minio", "mlflow", "spark-master", "spark-worker", "airflow-apiserver",
        "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer", "airflow-worker", "stream", "api",
        "api-gateway",
    } <= set(services)
    assert services["api"]["deploy"]["replicas"] >= 2
    assert services["spark-worker"]["deploy"]["replicas"] >= 2
    assert services["api-gateway"]["depends_on"] == ["api"]
    assert services["mlflow"]["command"][2].startswith("--backend-store-uri=postgresql")
    assert "--serve-artifacts" in services["mlflow"]["command"]


def test_compose_sets_only_real_settings_with_values_that_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    services = _compose()["services"]
    envs = {name: svc.get("environment") or {} for name, svc in services.items()}
    lambdarec_keys = {key for env in envs.values() for key in env if key.startswith("LAMBDAREC_")}
    assert lambdarec_keys and lambdarec_keys <= SETTING_NAMES, lambdarec_keys - SETTING_NAMES
    settings = _settings_from(_interpolation_free(envs["api"]), monkeypatch)
    assert settings.profile == "production"
    assert settings.redis_url == "redis://redis:6379/0"
    assert settings.mlflow_tracking_uri == "http://mlflow:5000"
    assert settings.tables_root == "s3a://lambdarec/delta"
    assert settings.spark_conf["spark.hadoop.fs.s3a.endpoint"] == "http://minio:9000"
    # The API, the streaming job and Airflow all read the same settings.
    for name in ("stream", "airflow-worker", "airflow-scheduler", "spark-worker"):
        assert _interpolation_free(envs[name]).items() >= _interpolation_free(envs["api"]).items(), name


def test_compose_airflow_uses_a_real_executor_and_the_settings_spark_master() -> None:
    services = _compose()["services"]
    worker_env = services["airflow-worker"]["environment"]
    assert worker_env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert worker_env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql")
    assert worker_env["AIRFLOW__CORE__DAGS_FOLDER"] == "/opt/lambdarec/dags"
    connection = json.loads(worker_env["AIRFLOW_CONN_SPARK_DEFAULT"])
    assert connection["conn_type"] == "spark"
    assert connection["host"] == worker_env["LAMBDAREC_SPARK_MASTER"] == "spark://spark-master:7077"
    assert services["airflow-worker"]["command"] == ["airflow", "celery", "worker"]


def test_compose_commands_are_real_lambdarec_commands() -> None:
    from typer.main import get_command

    from lambdarec.cli import build_app

    cli = get_command(build_app())
    services = _compose()["services"]
    for name in ("api", "stream"):
        command = services[name]["command"]
        assert command[0] == "lambdarec"
        group = cli
        for word in command[1:]:
            if word.startswith("-"):
                break
            assert word in group.commands, f"{name}: `lambdarec ... {word}` is not a command"  # type: ignore[attr-defined]
            group = group.commands[word]  # type: ignore[attr-defined]


def test_image_runs_the_dags_and_jobs_from_one_layout() -> None:
    dockerfile = (PRODUCTION / "Dockerfile").read_text()
    for folder in ("feature_store", "spark_jobs", "serving", "lambdarec", "dags"):
        assert f"COPY {folder} ./{folder}" in dockerfile
    assert "WORKDIR /opt/lambdarec" in dockerfile
    assert "python -m spark_jobs.jars" in dockerfile
    # spark-submit gets the Delta JARs from spark-defaults.conf (the driver JVM starts before Python).
    assert "SPARK_CONF_DIR=/opt/lambdarec/spark-conf" in dockerfile
    assert 'spark_defaults(load_settings())' in dockerfile
    nginx = (PRODUCTION / "nginx.conf").read_text()
    assert re.search(r"server api:8000;", nginx)


# -- kubernetes --------------------------------------------------------------------------------------


def test_manifests_are_well_formed_and_namespaced() -> None:
    docs = _manifests()
    assert docs
    for doc in docs:
        assert {"apiVersion", "kind", "metadata"} <= set(doc), doc
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "lambdarec", doc["metadata"]["name"]


def test_manifests_hold_every_service_the_system_needs() -> None:
    docs = _manifests()
    api = _find(docs, "Deployment", "lambdarec-api")
    assert api["spec"]["replicas"] >= 2
    assert _find(docs, "HorizontalPodAutoscaler", "lambdarec-api")["spec"]["minReplicas"] >= 2
    stream = _find(docs, "Deployment", "lambdarec-stream")
    assert stream["spec"]["replicas"] == 1 and stream["spec"]["strategy"]["type"] == "Recreate"
    _find(docs, "Deployment", "mlflow")
    _find(docs, "StatefulSet", "redis")
    _find(docs, "StatefulSet", "postgres")
    _find(docs, "ServiceAccount", "spark")
    # Every Service selects the pods of some workload.
    workload_labels = [
        d["spec"]["template"]["metadata"]["labels"] for d in docs if d["kind"] in ("Deployment", "StatefulSet")
    ]
    for service in (d for d in docs if d["kind"] == "Service"):
        selector = service["spec"]["selector"]
        assert any(selector.items() <= labels.items() for labels in workload_labels), service["metadata"]["name"]
    # Pods read the settings ConfigMap and Secret that exist.
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for workload in (d for d in docs if d["kind"] in ("Deployment", "StatefulSet")):
        for container in workload["spec"]["template"]["spec"]["containers"]:
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    assert ("ConfigMap", source["configMapRef"]["name"]) in names
                if "secretRef" in source:
                    assert ("Secret", source["secretRef"]["name"]) in names


def test_manifest_settings_are_real_and_target_spark_on_kubernetes(monkeypatch: pytest.MonkeyPatch) -> None:
    docs = _manifests()
    config = _find(docs, "ConfigMap", "lambdarec-settings")["data"]
    secret = _find(docs, "Secret", "lambdarec-secrets")["stringData"]
    keys = {k for k in (*config, *secret) if k.startswith("LAMBDAREC_")}
    assert keys <= SETTING_NAMES, keys - SETTING_NAMES
    settings = _settings_from(config, monkeypatch)
    assert settings.spark_master.startswith("k8s://")
    assert settings.spark_conf["spark.kubernetes.namespace"] == "lambdarec"
    assert settings.spark_conf["spark.kubernetes.authenticate.serviceAccountName"] == "spark"
    assert settings.tables_root.startswith("s3a://")
    # The watchdog's restart targets the streaming Deployment, which the spark role may patch.
    assert settings.stream_restart_command[:4] == ["kubectl", "rollout", "restart", "deployment/lambdarec-stream"]
    role = _find(docs, "Role", "spark-driver")
    assert any("lambdarec-stream" in rule.get("resourceNames", []) and "patch" in rule["verbs"] for rule in role["rules"])


def test_airflow_helm_values_use_kubernetes_executor_and_the_same_master() -> None:
    values = yaml.safe_load((PRODUCTION / "k8s" / "airflow-values.yaml").read_text())
    config = _find(_manifests(), "ConfigMap", "lambdarec-settings")["data"]
    assert values["executor"] == "KubernetesExecutor"
    assert values["config"]["core"]["dags_folder"] == "/opt/lambdarec/dags"
    env = {item["name"]: item["value"] for item in values["env"]}
    assert json.loads(env["AIRFLOW_CONN_SPARK_DEFAULT"])["host"] == config["LAMBDAREC_SPARK_MASTER"]
    assert "lambdarec-settings" in values["extraEnvFrom"] and "lambdarec-secrets" in values["extraEnvFrom"]
    assert values["workers"]["serviceAccount"]["name"] == "spark"

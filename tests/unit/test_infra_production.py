"""The production deployment files parse, hold every service the code needs, and set only real settings.

No Docker engine or cluster runs here, so this is what keeps infra/production true: the compose file and
the Kubernetes manifests are parsed, their services and wiring checked, and every LAMBDAREC_* variable
they set is built into a real `Settings` (so a typo or a bad JSON value fails here, not in production).

Why one module: the compose file and the manifests are one deployment, read by the same loaders
(`_compose`, `_manifests`) and checked by the same posture rules.
"""

from __future__ import annotations

import json
import os
import re

import pytest
import yaml

from feature_store.settings import Settings, flat_fields, project_root

PRODUCTION = project_root() / "infra" / "production"
SETTING_NAMES = {f"LAMBDAREC_{name.upper()}" for name in flat_fields()}


def _compose() -> dict:
    return yaml.safe_load((PRODUCTION / "docker-compose.yml").read_text())


def _manifests() -> list[dict]:
    docs = []
    for path in sorted((PRODUCTION / "k8s").glob("*.yaml")):
        if path.name == "airflow-values.yaml":
            continue
        docs.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return docs


def _secret_keys() -> set[str]:
    """Keys of the Secret `lambdarec-secrets`, which operators create from k8s/secrets.example.env."""
    lines = (PRODUCTION / "k8s" / "secrets.example.env").read_text().splitlines()
    return {line.split("=", 1)[0] for line in lines if line and not line.startswith("#")}


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
        "redis",
        "postgres",
        "minio",
        "mlflow",
        "spark-master",
        "spark-worker",
        "airflow-apiserver",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
        "airflow-worker",
        "stream",
        "api",
        "api-gateway",
    } <= set(services)
    assert services["api"]["deploy"]["replicas"] >= 2
    assert services["spark-worker"]["deploy"]["replicas"] >= 2
    assert services["api-gateway"]["depends_on"] == ["api"]
    mlflow = " ".join(services["mlflow"]["command"])
    assert (
        "--backend-store-uri=postgresql" in mlflow
        and "--serve-artifacts" in mlflow
        and "--app-name basic-auth" in mlflow
    )


def test_compose_sets_only_real_settings_with_values_that_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    services = _compose()["services"]
    envs = {name: svc.get("environment") or {} for name, svc in services.items()}
    lambdarec_keys = {key for env in envs.values() for key in env if key.startswith("LAMBDAREC_")}
    assert lambdarec_keys and lambdarec_keys <= SETTING_NAMES, lambdarec_keys - SETTING_NAMES
    settings = _settings_from(_interpolation_free(envs["api"]), monkeypatch)
    assert settings.profile == "production"
    # Each component is its own Redis ACL user; the batch user is the shared default.
    assert (
        envs["api"]["LAMBDAREC_REDIS_URL"]
        == "redis://api:${REDIS_API_PASSWORD:?set REDIS_API_PASSWORD}@redis:6379/0"
    )
    assert (
        envs["stream"]["LAMBDAREC_REDIS_URL"]
        == "redis://stream:${REDIS_STREAM_PASSWORD:?set REDIS_STREAM_PASSWORD}@redis:6379/0"
    )
    assert (
        envs["airflow-worker"]["LAMBDAREC_REDIS_URL"]
        == "redis://batch:${REDIS_BATCH_PASSWORD:?set REDIS_BATCH_PASSWORD}@redis:6379/0"
    )
    assert settings.mlflow.tracking_uri == "http://mlflow:5000"
    assert settings.tables_root == "s3a://lambdarec/delta"
    assert (settings.s3.endpoint, settings.s3.path_style_access) == ("http://minio:9000", True)
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


def test_compose_watchdog_restarts_the_stream_container_through_redis(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from typer.main import get_command

    from lambdarec.cli import build_app

    services = _compose()["services"]
    env = _interpolation_free(services["airflow-worker"]["environment"])
    settings = _settings_from(env, monkeypatch)
    assert settings.stream.restart_command == ["lambdarec", "stream", "stop", "--remote"]
    stop = get_command(build_app()).commands["stream"].commands["stop"]  # type: ignore[attr-defined]
    assert "--remote" in {opt for param in stop.params for opt in param.opts}
    assert services["stream"]["restart"] == "unless-stopped"  # what starts the stopped job again


def test_image_runs_the_dags_and_jobs_from_one_layout() -> None:
    dockerfile = (PRODUCTION / "Dockerfile").read_text()
    for folder in ("feature_store", "spark_jobs", "serving", "lambdarec", "dags"):
        assert f"COPY {folder} ./{folder}" in dockerfile
    assert "WORKDIR /opt/lambdarec" in dockerfile
    assert "python -m spark_jobs.jars" in dockerfile
    # spark-submit gets the Delta JARs from spark-defaults.conf (the driver JVM starts before Python).
    assert "SPARK_CONF_DIR=/opt/lambdarec/spark-conf" in dockerfile
    assert "spark_defaults(load_settings())" in dockerfile
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
        d["spec"]["template"]["metadata"]["labels"]
        for d in docs
        if d["kind"] in ("Deployment", "StatefulSet")
    ]
    for service in (d for d in docs if d["kind"] == "Service"):
        selector = service["spec"]["selector"]
        assert any(selector.items() <= labels.items() for labels in workload_labels), service["metadata"][
            "name"
        ]
    # Pods read the settings ConfigMap that exists and keys of the Secret made from secrets.example.env.
    names = {(d["kind"], d["metadata"]["name"]) for d in docs} | {("Secret", "lambdarec-secrets")}
    for workload in (d for d in docs if d["kind"] in ("Deployment", "StatefulSet")):
        for container in workload["spec"]["template"]["spec"]["containers"]:
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    assert ("ConfigMap", source["configMapRef"]["name"]) in names
                if "secretRef" in source:
                    assert ("Secret", source["secretRef"]["name"]) in names
            for variable in container.get("env", []):
                ref = variable.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == "lambdarec-secrets" and ref["key"] in _secret_keys(), (
                        workload["metadata"]["name"],
                        ref,
                    )


def test_manifest_settings_are_real_and_target_spark_on_kubernetes(monkeypatch: pytest.MonkeyPatch) -> None:
    docs = _manifests()
    config = _find(docs, "ConfigMap", "lambdarec-settings")["data"]
    keys = {k for k in (*config, *_secret_keys()) if k.startswith("LAMBDAREC_")}
    assert keys <= SETTING_NAMES, keys - SETTING_NAMES
    settings = _settings_from(config, monkeypatch)
    assert settings.spark.master.startswith("k8s://")
    assert settings.spark.conf["spark.kubernetes.namespace"] == "lambdarec"
    assert settings.spark.conf["spark.kubernetes.authenticate.serviceAccountName"] == "spark"
    assert settings.tables_root.startswith("s3a://")
    # The watchdog's restart targets the streaming Deployment, which the spark role may patch.
    assert settings.stream.restart_command[:4] == [
        "kubectl",
        "rollout",
        "restart",
        "deployment/lambdarec-stream",
    ]
    role = _find(docs, "Role", "spark-driver")
    assert any(
        "lambdarec-stream" in rule.get("resourceNames", []) and "patch" in rule["verbs"]
        for rule in role["rules"]
    )


def test_airflow_helm_values_use_kubernetes_executor_and_the_same_master() -> None:
    values = yaml.safe_load((PRODUCTION / "k8s" / "airflow-values.yaml").read_text())
    config = _find(_manifests(), "ConfigMap", "lambdarec-settings")["data"]
    assert values["executor"] == "KubernetesExecutor"
    assert values["config"]["core"]["dags_folder"] == "/opt/lambdarec/dags"
    env = {item["name"]: item["value"] for item in values["env"]}
    assert json.loads(env["AIRFLOW_CONN_SPARK_DEFAULT"])["host"] == config["LAMBDAREC_SPARK_MASTER"]
    assert "lambdarec-settings" in values["extraEnvFrom"] and "lambdarec-secrets" in values["extraEnvFrom"]
    assert values["workers"]["serviceAccount"]["name"] == "spark"


# -- security posture ----------------------------------------------------------------------------------
# Each check is a function of the parsed files returning what is wrong, tested on a bad example first
# (so it can fail) and then on infra/production (so it does not).

SENSITIVE = re.compile(r"PASSWORD|SECRET|_KEY$|KEY_ID$|TOKEN|_AUTH$|API_KEYS", re.IGNORECASE)
COMPOSE_DEFAULT = re.compile(r"\$\{(\w+):?-[^}]*\}")  # ${VAR-default} / ${VAR:-default}
URL_PASSWORD = re.compile(r"://[^:/@\s]*:([^@\s]+)@")


def _required(value: str) -> bool:
    """A compose value that is only required variables (`${VAR:?message}`) or the shell's `$${VAR}`."""
    rest = re.sub(r"\$\{\w+:\?[^}]*\}|\$\$\{\w+\}", "", value)
    return "$" not in rest and rest.strip() == ""


def compose_credential_problems(compose: dict) -> list[str]:
    problems = []
    for name, service in compose["services"].items():
        env = service.get("environment") or {}
        for key, value in env.items():
            value = str(value)
            for var in COMPOSE_DEFAULT.findall(value):
                if SENSITIVE.search(var) or var.endswith(("_USER", "_ACCESS_KEY")):
                    problems.append(f"{name}: {key} falls back to a default for {var}")
            if SENSITIVE.search(key) and not _required(value):
                problems.append(f"{name}: {key} is not a required variable")
            for password in URL_PASSWORD.findall(value):
                if not _required(password):
                    problems.append(f"{name}: {key} has a password in its URL")
        command = service.get("command") or []
        words = command if isinstance(command, list) else [command]
        for before, word in zip(["", *words], words):
            if (word.startswith(">") or before == "--requirepass") and not _required(word.lstrip(">")):
                problems.append(f"{name}: a password in its command")
            for var in COMPOSE_DEFAULT.findall(word):
                if SENSITIVE.search(var):
                    problems.append(f"{name}: its command falls back to a default for {var}")
    return problems


def _flag(args: list[str], flag: str) -> str | None:
    return args[args.index(flag) + 1] if flag in args[:-1] else None


def redis_problems(args: list[str], where: str) -> list[str]:
    """A redis-server command line must cap memory without eviction and require authentication."""
    problems = []
    if _flag(args, "--maxmemory") is None:
        problems.append(f"{where}: no maxmemory")
    if _flag(args, "--maxmemory-policy") != "noeviction":
        problems.append(f"{where}: maxmemory-policy is not noeviction")
    default_off = any(args[i : i + 3] == ["--user", "default", "off"] for i in range(len(args)))
    if not default_off and "--requirepass" not in args:
        problems.append(f"{where}: no authentication (neither `--user default off` nor --requirepass)")
    return problems


def bus_durability_problems(args: list[str], where: str) -> list[str]:
    """The Redis that holds the event bus must keep every acknowledged write through a crash: a 202
    is a promise."""
    problems = []
    if _flag(args, "--appendonly") != "yes":
        problems.append(f"{where}: no append-only file")
    if _flag(args, "--appendfsync") != "always":
        problems.append(
            f"{where}: appendfsync is not always (everysec may acknowledge writes a crash then loses)"
        )
    return problems


def exposure_problems(compose: dict, nginx: str) -> list[str]:
    """Only the gateway is published on every interface, and it forwards only /v1/."""
    problems = []
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            if name != "api-gateway" and not str(port).startswith("127.0.0.1:"):
                problems.append(f"{name}: port {port} published on every interface")
    if "mlflow" in compose["services"] and compose["services"]["mlflow"].get("ports"):
        problems.append("mlflow: published on the host")
    locations = dict(re.findall(r"location\s+([^{]+?)\s*\{([^}]*)\}", nginx))
    for path, body in locations.items():
        if "proxy_pass" in body and path.strip() != "/v1/":
            problems.append(f"nginx: {path} is proxied to the API")
    if not any(path.strip() == "/v1/" and "proxy_pass" in body for path, body in locations.items()):
        problems.append("nginx: /v1/ is not proxied")
    return problems


def k8s_problems(docs: list[dict]) -> list[str]:
    problems = []
    for doc in docs:
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] == "Secret" and (doc.get("stringData") or doc.get("data")):
            problems.append(f"{name}: credentials in a manifest (create the Secret from secrets.example.env)")
        if doc["kind"] == "Service" and doc["spec"].get("type") in ("LoadBalancer", "NodePort"):
            problems.append(f"{name}: exposed outside the cluster")
        if doc["kind"] == "Ingress":
            for rule in doc["spec"]["rules"]:
                for path in rule["http"]["paths"]:
                    if path["path"] != "/v1/":
                        problems.append(f"{name}: routes {path['path']}")
        if doc["kind"] in ("Deployment", "StatefulSet"):
            for container in doc["spec"]["template"]["spec"]["containers"]:
                for variable in container.get("env", []):
                    if SENSITIVE.search(variable["name"]) and "value" in variable:
                        problems.append(f"{name}: {variable['name']} has a literal value")
                for word in container.get("args", []) + container.get("command", []):
                    if word.startswith(">") and not re.fullmatch(r">\$\(\w+\)", word):
                        problems.append(f"{name}: a password in its arguments")
    return problems


BAD_COMPOSE = {
    "services": {
        "redis": {
            "image": "redis:7.4",
            "command": ["redis-server", "--requirepass", "hunter2"],
            "ports": ["6379:6379"],
        },
        "mlflow": {
            "environment": {"MLFLOW_TRACKING_PASSWORD": "${MLFLOW_PASSWORD:-mlflow}"},
            "ports": ["5000:5000"],
        },
        "api": {
            "environment": {
                "LAMBDAREC_REDIS_URL": "redis://api:s3cret@redis:6379/0",
                "AWS_SECRET_ACCESS_KEY": "abc",
            }
        },
    }
}
BAD_NGINX = "http { server { location / { proxy_pass http://api; } } }"


def test_the_posture_checks_catch_what_they_are_for():
    assert compose_credential_problems(BAD_COMPOSE) == [
        "redis: a password in its command",
        "mlflow: MLFLOW_TRACKING_PASSWORD falls back to a default for MLFLOW_PASSWORD",
        "mlflow: MLFLOW_TRACKING_PASSWORD is not a required variable",
        "api: LAMBDAREC_REDIS_URL has a password in its URL",
        "api: AWS_SECRET_ACCESS_KEY is not a required variable",
    ]
    assert bus_durability_problems(["redis-server", "--appendonly", "yes"], "redis") == [
        "redis: appendfsync is not always (everysec may acknowledge writes a crash then loses)"
    ]
    assert bus_durability_problems(["redis-server", "--appendfsync", "always"], "redis") == [
        "redis: no append-only file"
    ]
    assert redis_problems(["redis-server", "--appendonly", "yes"], "redis") == [
        "redis: no maxmemory",
        "redis: maxmemory-policy is not noeviction",
        "redis: no authentication (neither `--user default off` nor --requirepass)",
    ]
    assert exposure_problems(BAD_COMPOSE, BAD_NGINX) == [
        "redis: port 6379:6379 published on every interface",
        "mlflow: port 5000:5000 published on every interface",
        "mlflow: published on the host",
        "nginx: / is proxied to the API",
        "nginx: /v1/ is not proxied",
    ]
    bad_k8s = [
        {"kind": "Secret", "metadata": {"name": "s"}, "stringData": {"PASSWORD": "x"}},
        {"kind": "Service", "metadata": {"name": "mlflow"}, "spec": {"type": "LoadBalancer"}},
        {
            "kind": "Ingress",
            "metadata": {"name": "i"},
            "spec": {"rules": [{"http": {"paths": [{"path": "/"}]}}]},
        },
        {
            "kind": "Deployment",
            "metadata": {"name": "redis"},
            "spec": {
                "template": {
                    "spec": {
                        "containers": [
                            {
                                "env": [{"name": "REDIS_PASSWORD", "value": "x"}],
                                "args": ["--user", "api", "on", ">pw"],
                            }
                        ]
                    }
                }
            },
        },
    ]
    assert k8s_problems(bad_k8s) == [
        "Secret/s: credentials in a manifest (create the Secret from secrets.example.env)",
        "Service/mlflow: exposed outside the cluster",
        "Ingress/i: routes /",
        "Deployment/redis: REDIS_PASSWORD has a literal value",
        "Deployment/redis: a password in its arguments",
    ]


def test_production_compose_has_no_default_credential_and_exposes_only_the_api():
    compose = _compose()
    assert compose_credential_problems(compose) == []
    assert exposure_problems(compose, (PRODUCTION / "nginx.conf").read_text()) == []
    for name, service in compose["services"].items():
        if str(service.get("image", "")).startswith("redis"):
            assert redis_problems(service["command"], name) == []
    assert bus_durability_problems(compose["services"]["redis"]["command"], "redis") == []
    # Everything the file requires is listed for operators (env.example), and nothing else.
    text = "\n".join(
        line
        for line in (PRODUCTION / "docker-compose.yml").read_text().splitlines()
        if not line.lstrip().startswith("#")
    )
    required = set(re.findall(r"\$\{(\w+):\?", text))
    listed = {
        line.split("=", 1)[0]
        for line in (PRODUCTION / "env.example").read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert required == listed
    # The API refuses to start without keys; the stores need their users' passwords.
    api_env = compose["services"]["api"]["environment"]
    assert api_env["LAMBDAREC_PROFILE"] == "production" and _required(api_env["LAMBDAREC_API_KEYS_SHA256"])


def test_production_manifests_have_no_credential_and_lock_the_stores():
    docs = _manifests()
    assert k8s_problems(docs) == []
    redis_args = _find(docs, "StatefulSet", "redis")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert redis_problems(["redis-server", *redis_args], "k8s redis") == []
    assert bus_durability_problems(["redis-server", *redis_args], "k8s redis") == []
    mlflow = _find(docs, "Deployment", "mlflow")["spec"]["template"]["spec"]["containers"][0]
    assert "--app-name basic-auth" in " ".join(mlflow["args"])
    policies = {
        d["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
        for d in docs
        if d["kind"] == "NetworkPolicy"
    }
    assert policies == {"redis", "mlflow", "postgres", "lambdarec-api"}


def test_compose_file_matches_the_compose_specification():
    """What `docker compose config` checks, offline: the Compose Specification's JSON schema as vendored
    by check-jsonschema."""
    from importlib.resources import files

    import jsonschema

    schema = json.loads(
        files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json").read_text()
    )
    validator = jsonschema.validators.validator_for(schema)(schema)
    assert [error.message for error in validator.iter_errors(_compose())] == []
    assert list(
        validator.iter_errors({"services": {"api": {"ports": "8000"}}})
    )  # the schema does catch mistakes


def test_kubernetes_manifests_match_the_api_schemas():
    """Schema validation of every manifest against Kubernetes 1.37's API (kubernetes-validate bundles the
    schemas, so this runs offline), strict: unknown fields are errors."""
    import kubernetes_validate

    for doc in _manifests():
        kubernetes_validate.validate(doc, "1.37.0", strict=True)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "x"},
                "spec": {"ports": [{"port": "http"}]},
            },
            "1.37.0",
            strict=True,
        )

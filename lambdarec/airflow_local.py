"""The local Airflow and MLflow UI of the embedded setup, and a small client for Airflow's REST API.

Called by `lambdarec demo`, `lambdarec airflow ...`, `lambdarec mlflow-ui ...` and the tests:
- `airflow_env` is the one place that says how Airflow runs here: AIRFLOW_HOME under
  `<data_dir>/airflow`, SQLite, the repo's `dags/` folder, low parallelism, the `spark_default`
  connection built from `LAMBDAREC_SPARK_MASTER`, `spark-submit` and the project's Python on PATH, and
  every lambdarec setting passed on as `LAMBDAREC_*` so tasks see the same settings as the caller.
- `prepare_airflow_home` writes what those point at: the generated admin password and a
  `spark-defaults.conf` with the session conf of `spark_jobs.session` (Delta JARs, extensions, driver
  memory). spark-submit starts the driver JVM before the job's Python runs, so the JARs must be on its
  command line or in this file; a session builder's `spark.jars` would come too late.
- `start_airflow` / `stop_airflow` run `airflow standalone` (stopped with SIGINT: SIGTERM orphans its
  scheduler, API server and workers).
- `AirflowClient` gets a JWT from `POST /auth/token` and uses `/api/v2` to unpause, trigger and wait.
"""

from __future__ import annotations

import json
import secrets
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

from feature_store.settings import Settings, project_root
from lambdarec.local_services import (
    ServiceError,
    ServiceSpec,
    http_ok,
    start_service,
    stop_service,
    wait_until,
)

DAG_IDS: tuple[str, ...] = (
    "lambdarec_nightly",
    "lambdarec_backfill",
    "lambdarec_promote",
    "lambdarec_streaming_watchdog",
)
AIRFLOW_SERVICE = "airflow"
MLFLOW_UI_SERVICE = "mlflow-ui"


class AirflowError(ServiceError):
    """Airflow's REST API refused a request or a DAG run did not succeed."""


# -- environment (pure) ----------------------------------------------------------------------------


def dags_folder() -> Path:
    return project_root() / "dags"


def spark_connection(settings: Settings) -> str:
    """AIRFLOW_CONN_SPARK_DEFAULT: a Spark connection whose master is the settings' master."""
    return json.dumps(
        {"conn_type": "spark", "host": settings.spark.master, "extra": {"spark-binary": "spark-submit"}}
    )


def settings_env(settings: Settings) -> dict[str, str]:
    """Every setting as its LAMBDAREC_* variable (JSON for lists and maps), unset ones left out."""
    env: dict[str, str] = {}
    for name, value in settings.flat_values(mode="json").items():
        if value is None:
            continue
        text = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
        env[f"LAMBDAREC_{name.upper()}"] = text
    return env


def passwords_file(settings: Settings) -> Path:
    return settings.airflow_home / "simple_auth_manager_passwords.json.generated"


def spark_conf_dir(settings: Settings) -> Path:
    return settings.data_dir / "spark-conf"


def spark_defaults(settings: Settings) -> str:
    """spark-defaults.conf for spark-submit: the conf every lambdarec session runs with, except the
    master and app name (the connection and the operator give those) and the object store's credentials
    (the job's session sets them from the LAMBDAREC_* settings its task runs with: no secret in a file)."""
    from spark_jobs.s3a import SECRET_HADOOP_KEYS
    from spark_jobs.session import spark_conf

    left_out = {"spark.master", "spark.app.name", *(f"spark.hadoop.{key}" for key in SECRET_HADOOP_KEYS)}
    conf = {k: v for k, v in spark_conf(settings).items() if k not in left_out}
    return "".join(f"{key} {value}\n" for key, value in sorted(conf.items()))


def prepare_airflow_home(settings: Settings) -> str:
    """Write the admin password (once) and spark-defaults.conf; returns the password."""
    password = ensure_admin_password(settings)
    folder = spark_conf_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spark-defaults.conf").write_text(spark_defaults(settings))
    return password


def airflow_env(settings: Settings, base_env: Mapping[str, str], python: str | None = None) -> dict[str, str]:
    """The environment `airflow standalone`, `airflow dags test` and their tasks run in."""
    python = python or sys.executable
    venv_bin = str(Path(python).parent)  # not resolved: the venv's bin holds spark-submit and airflow
    home = settings.airflow_home
    env = {key: value for key, value in base_env.items() if not key.startswith("LAMBDAREC_")}
    env.update(settings_env(settings))
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder()),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": str(settings.airflow.parallelism),
            "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(settings.airflow.parallelism),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{settings.airflow.admin_user}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords_file(settings)),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{settings.airflow.port}/execution/",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(settings.airflow.port),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{settings.airflow.port}",
            # New DAG files show up within seconds instead of the default five minutes.
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
            "AIRFLOW_CONN_SPARK_DEFAULT": spark_connection(settings),
            "PATH": venv_bin + ":" + base_env.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            # spark-submit starts the driver with this interpreter (the one with lambdarec installed).
            "PYSPARK_PYTHON": python,
            "PYSPARK_DRIVER_PYTHON": python,
            "SPARK_LOCAL_IP": "127.0.0.1",
            "SPARK_CONF_DIR": str(spark_conf_dir(settings)),
            "NO_COLOR": "1",
        }
    )
    return env


def ensure_admin_password(settings: Settings) -> str:
    """The local Airflow admin password, generated once per data directory."""
    path = passwords_file(settings)
    if path.exists():
        passwords = json.loads(path.read_text() or "{}")
        if settings.airflow.admin_user in passwords:
            return passwords[settings.airflow.admin_user]
    else:
        passwords = {}
    passwords[settings.airflow.admin_user] = secrets.token_urlsafe(12)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(passwords) + "\n")
    path.chmod(0o600)
    return passwords[settings.airflow.admin_user]


def airflow_url(settings: Settings) -> str:
    return f"http://127.0.0.1:{settings.airflow.port}"


def mlflow_ui_url(settings: Settings) -> str:
    return f"http://127.0.0.1:{settings.mlflow.ui_port}"


# -- services --------------------------------------------------------------------------------------


def airflow_spec(settings: Settings, base_env: Mapping[str, str]) -> ServiceSpec:
    env = airflow_env(settings, base_env)
    return ServiceSpec(
        name=AIRFLOW_SERVICE,
        command=[str(Path(env["PYSPARK_PYTHON"]).parent / "airflow"), "standalone"],
        port=settings.airflow.port,
        env=env,
        stop_signal=signal.SIGINT,
        port_setting="LAMBDAREC_AIRFLOW_PORT",
    )


def start_airflow(settings: Settings, base_env: Mapping[str, str], timeout_s: float = 240.0) -> str:
    """Start `airflow standalone` (or reuse the running one); returns the admin password."""
    password = prepare_airflow_home(settings)
    spec = airflow_spec(settings, base_env)
    start_service(spec, settings.run_dir, lambda: airflow_healthy(settings), timeout_s)
    return password


def stop_airflow(settings: Settings) -> bool:
    return stop_service(AIRFLOW_SERVICE, settings.run_dir, signal.SIGINT, timeout_s=90.0)


def airflow_healthy(settings: Settings) -> bool:
    """The API server answers and the scheduler, triggerer and dag-processor heartbeat."""
    import httpx

    try:
        response = httpx.get(f"{airflow_url(settings)}/api/v2/monitor/health", timeout=2.0)
    except httpx.HTTPError:
        return False
    if not response.is_success:
        return False
    health = response.json()
    return all(
        health.get(component, {}).get("status") == "healthy"
        for component in ("metadatabase", "scheduler", "triggerer", "dag_processor")
    )


def mlflow_ui_spec(settings: Settings, base_env: Mapping[str, str]) -> ServiceSpec:
    mlflow = str(Path(sys.executable).parent / "mlflow")
    return ServiceSpec(
        name=MLFLOW_UI_SERVICE,
        command=[
            mlflow,
            "server",
            "--backend-store-uri",
            settings.tracking_uri,
            "--registry-store-uri",
            settings.registry_uri,
            "--default-artifact-root",
            settings.artifact_root,
            "--host",
            "127.0.0.1",
            "--port",
            str(settings.mlflow.ui_port),
            "--workers",
            "1",
        ],
        port=settings.mlflow.ui_port,
        env={**base_env, "NO_COLOR": "1"},
        port_setting="LAMBDAREC_MLFLOW_UI_PORT",
    )


def start_mlflow_ui(settings: Settings, base_env: Mapping[str, str], timeout_s: float = 90.0) -> str:
    """Start the MLflow UI on the settings' tracking store and artifact root; returns its URL."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    url = mlflow_ui_url(settings)
    start_service(
        mlflow_ui_spec(settings, base_env), settings.run_dir, lambda: http_ok(f"{url}/health"), timeout_s
    )
    return url


def stop_mlflow_ui(settings: Settings) -> bool:
    return stop_service(MLFLOW_UI_SERVICE, settings.run_dir)


# -- REST API v2 -----------------------------------------------------------------------------------


def manual_run_id(dag_id: str, logical_date: datetime, label: str = "manual") -> str:
    return f"{label}__{dag_id}__{logical_date.strftime('%Y-%m-%dT%H%M%S')}"


def midnight_utc(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


@dataclass
class AirflowClient:
    """Airflow 3's REST API (`/api/v2`) with a JWT from `/auth/token`."""

    base_url: str
    username: str
    password: str
    timeout_s: float = 30.0
    attempts: int = 3  # a busy API server (the scheduler and Spark share 2 cores) may time out once
    _token: str | None = None

    def _client(self):
        import httpx

        return httpx.Client(base_url=self.base_url, timeout=self.timeout_s)

    def token(self) -> str:
        if self._token is None:
            with self._client() as http:
                response = http.post(
                    "/auth/token", json={"username": self.username, "password": self.password}
                )
            if response.status_code not in (200, 201):
                raise AirflowError(
                    f"Airflow refused the login of {self.username!r} ({response.status_code}): {response.text[:200]}. "
                    "The password is in <data_dir>/airflow/simple_auth_manager_passwords.json.generated."
                )
            self._token = response.json()["access_token"]
        return self._token

    def request(self, method: str, path: str, **kwargs):
        import httpx

        for attempt in range(1, self.attempts + 1):
            try:
                with self._client() as http:
                    response = http.request(
                        method,
                        f"/api/v2{path}",
                        headers={"Authorization": f"Bearer {self.token()}"},
                        **kwargs,
                    )
                break
            except (httpx.TimeoutException, httpx.NetworkError) as error:
                if attempt == self.attempts:
                    raise AirflowError(
                        f"{method} /api/v2{path}: Airflow's API server did not answer ({error!r})"
                    ) from error
        if not response.is_success:
            raise AirflowError(
                f"{method} /api/v2{path} answered {response.status_code}: {response.text[:300]}"
            )
        return response.json() if response.content else None

    def dag(self, dag_id: str) -> dict | None:
        try:
            return self.request("GET", f"/dags/{dag_id}")
        except AirflowError as error:
            if " 404:" in str(error):
                return None
            raise

    def wait_for_dags(self, dag_ids: tuple[str, ...], timeout_s: float = 180.0) -> None:
        """Wait until the dag-processor has parsed every DAG (the API lists DAGs from the database)."""
        if not wait_until(lambda: all(self.dag(d) is not None for d in dag_ids), timeout_s, interval_s=1.0):
            missing = [d for d in dag_ids if self.dag(d) is None]
            errors = self.request("GET", "/importErrors").get("import_errors", [])
            raise AirflowError(
                f"Airflow has not loaded {missing} within {timeout_s:.0f}s; import errors: {errors}"
            )

    def unpause(self, dag_id: str) -> None:
        self.request("PATCH", f"/dags/{dag_id}", json={"is_paused": False})

    def trigger(self, dag_id: str, logical_date: datetime, run_id: str, conf: dict | None = None) -> str:
        body = {"dag_run_id": run_id, "logical_date": logical_date.isoformat(), "conf": conf or {}}
        return self.request("POST", f"/dags/{dag_id}/dagRuns", json=body)["dag_run_id"]

    def run_state(self, dag_id: str, run_id: str) -> str:
        return self.request("GET", f"/dags/{dag_id}/dagRuns/{run_id}")["state"]

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        instances = self.request("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]
        return {ti["task_id"]: ti["state"] for ti in instances}

    def wait_for_run(self, dag_id: str, run_id: str, timeout_s: float, on_poll=None) -> str:
        """Poll the run until it succeeds or fails; returns its final state."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            state = self.run_state(dag_id, run_id)
            if on_poll is not None:
                on_poll(self.task_states(dag_id, run_id))
            if state in ("success", "failed"):
                return state
            time.sleep(2.0)
        raise AirflowError(
            f"{dag_id} run {run_id} did not finish within {timeout_s:.0f}s (last state: {state})"
        )

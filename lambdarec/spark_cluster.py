"""A Spark standalone cluster on loopback: one master and N workers from the PySpark installation.

Who uses it: `lambdarec spark-cluster start|stop|status` (and `infra/local/spark-cluster.sh`, which calls
it) and the scale-out tests. The JVMs are `spark-class org.apache.spark.deploy.master.Master` and
`...worker.Worker`, bound to 127.0.0.1, with their work and log folders under `<data_dir>/spark-cluster`.
Its URLs and pids are recorded in `<data_dir>/run/spark-cluster.json`, so any `lambdarec` process of the
data directory (or the stop script) finds it. Point jobs at it with `LAMBDAREC_SPARK_MASTER=<master url>`.

The workers start with this interpreter as PYSPARK_PYTHON and this checkout on PYTHONPATH, so their
executors import the same `spark_jobs`/`feature_store` the driver runs: the local stand-in for
machines whose image has lambdarec installed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from feature_store.settings import Settings, project_root
from lambdarec.redis_server import free_port

MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
# No REST submission server (it binds a fixed port, 6066) and a small heap for the daemons themselves:
# the memory that matters is the executors', given per worker with --memory.
DAEMON_PROPERTIES = {"spark.master.rest.enabled": "false", "spark.ui.showConsoleProgress": "false"}
DAEMON_MEMORY = "512m"


class SparkClusterError(RuntimeError):
    """The cluster did not come up (or PySpark is missing)."""


def spark_home() -> Path:
    """The PySpark installation (its bin/spark-class and jars/), found without importing pyspark."""
    spec = importlib.util.find_spec("pyspark")
    if spec is None or not spec.submodule_search_locations:
        raise SparkClusterError("pyspark is not installed in this interpreter; run `make setup`")
    return Path(next(iter(spec.submodule_search_locations)))


def master_args(host: str, port: int, web_port: int, properties: Path) -> list[str]:
    return [
        MASTER_CLASS,
        "--host",
        host,
        "--port",
        str(port),
        "--webui-port",
        str(web_port),
        "--properties-file",
        str(properties),
    ]


def worker_args(
    master_url: str, host: str, cores: int, memory: str, work_dir: Path, web_port: int, properties: Path
) -> list[str]:
    return [
        WORKER_CLASS,
        master_url,
        "--host",
        host,
        "--cores",
        str(cores),
        "--memory",
        memory,
        "--work-dir",
        str(work_dir),
        "--webui-port",
        str(web_port),
        "--properties-file",
        str(properties),
    ]


def daemon_env(
    base: dict[str, str], home: Path, host: str, log_dir: Path, python: str, pythonpath: str
) -> dict[str, str]:
    """Environment of the master and worker JVMs; executors inherit the workers' (see module doc)."""
    env = dict(base)
    env.update(
        {
            "SPARK_HOME": str(home),
            "SPARK_LOCAL_IP": host,
            "SPARK_LOG_DIR": str(log_dir),
            "SPARK_DAEMON_MEMORY": DAEMON_MEMORY,
            "PYSPARK_PYTHON": python,
            "PYTHONPATH": os.pathsep.join(p for p in (pythonpath, base.get("PYTHONPATH", "")) if p),
        }
    )
    return env


def alive_workers(status: dict) -> int:
    """Workers the master's /json/ status reports ALIVE."""
    return sum(1 for worker in status.get("workers", []) if worker.get("state") == "ALIVE")


@dataclass
class SparkStandalone:
    """One master and `workers` workers (`worker_cores` cores, `worker_memory` each) under `directory`."""

    directory: Path
    workers: int = 2
    worker_cores: int = 1
    worker_memory: str = "2g"
    host: str = "127.0.0.1"
    port: int | None = None
    web_port: int | None = None
    python: str = sys.executable
    pythonpath: str = field(default_factory=lambda: str(project_root()))
    processes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def master_url(self) -> str:
        return f"spark://{self.host}:{self.port}"

    @property
    def web_url(self) -> str:
        return f"http://{self.host}:{self.web_port}"

    def _spawn(self, args: list[str], log_name: str, env: dict[str, str]) -> subprocess.Popen:
        log = open(self.directory / "logs" / log_name, "ab")  # noqa: SIM115 - the child keeps it
        try:
            # spark-class execs java, so the pid is the JVM's; a session of its own so a Ctrl-C in the
            # starting shell does not reach it.
            return subprocess.Popen(
                [str(spark_home() / "bin" / "spark-class"), *args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        finally:
            log.close()

    def start(self, timeout_s: float = 180.0) -> SparkStandalone:
        """Start the master, then the workers; return when all workers are registered ALIVE."""
        for sub in ("logs", "work"):
            (self.directory / sub).mkdir(parents=True, exist_ok=True)
        properties = self.directory / "spark-daemons.conf"
        properties.write_text("".join(f"{k} {v}\n" for k, v in DAEMON_PROPERTIES.items()))
        self.port = self.port or free_port(self.host)
        self.web_port = self.web_port or free_port(self.host)
        env = daemon_env(
            dict(os.environ), spark_home(), self.host, self.directory / "logs", self.python, self.pythonpath
        )
        self.processes.append(
            self._spawn(master_args(self.host, self.port, self.web_port, properties), "master.log", env)
        )
        try:
            self._wait(lambda status: status.get("status") == "ALIVE", timeout_s, "the master")
            for index in range(self.workers):
                args = worker_args(
                    self.master_url,
                    self.host,
                    self.worker_cores,
                    self.worker_memory,
                    self.directory / "work",
                    free_port(self.host),
                    properties,
                )
                self.processes.append(self._spawn(args, f"worker-{index + 1}.log", env))
            self._wait(
                lambda status: alive_workers(status) >= self.workers, timeout_s, f"{self.workers} workers"
            )
        except BaseException:
            self.stop()
            raise
        return self

    def status(self) -> dict | None:
        """The master's /json/ status, or None when it does not answer."""
        try:
            with urllib.request.urlopen(f"{self.web_url}/json/", timeout=2) as response:
                return json.load(response)
        except (OSError, urllib.error.URLError, ValueError):
            return None

    def _wait(self, ready, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for process in self.processes:
                if process.poll() is not None:
                    raise SparkClusterError(
                        f"a Spark daemon exited with {process.returncode}; see {self.directory / 'logs'}"
                    )
            status = self.status()
            if status is not None and ready(status):
                return
            time.sleep(0.5)
        raise SparkClusterError(
            f"{what} did not come up within {timeout_s:.0f}s; see {self.directory / 'logs'}"
        )

    def stop(self) -> None:
        """Workers first (their executors go with them), then the master."""
        stop_pids([p.pid for p in reversed(self.processes)])
        for process in self.processes:
            process.wait()
        self.processes = []

    def record(self) -> dict:
        return {
            "master_url": self.master_url,
            "web_url": self.web_url,
            "pids": [p.pid for p in self.processes],
        }


def stop_pids(pids: list[int], timeout_s: float = 30.0) -> None:
    """SIGTERM each process, then SIGKILL what is still alive after `timeout_s`."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout_s
    for pid in pids:
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a child of ours that exited stays a zombie until reaped
        waited, _ = os.waitpid(pid, os.WNOHANG)
        return waited == 0
    except ChildProcessError:
        return True


def cluster_from_settings(settings: Settings) -> SparkStandalone:
    return SparkStandalone(
        directory=settings.data_dir / "spark-cluster",
        workers=settings.spark.cluster_workers,
        worker_cores=settings.spark.cluster_worker_cores,
        worker_memory=settings.spark.cluster_worker_memory,
        port=settings.spark.cluster_port or None,
    )


def state_file(settings: Settings) -> Path:
    return settings.run_dir / "spark-cluster.json"


def read_state(settings: Settings) -> dict | None:
    path = state_file(settings)
    return json.loads(path.read_text()) if path.exists() else None


def start_cluster(settings: Settings) -> dict:
    """Start the data directory's cluster (or return the running one's record)."""
    state = read_state(settings)
    if state is not None and any(_alive(pid) for pid in state["pids"]):
        return state
    cluster = cluster_from_settings(settings).start()
    state = cluster.record()
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    state_file(settings).write_text(json.dumps(state))
    return state


def stop_cluster(settings: Settings) -> bool:
    """Stop the data directory's cluster; False when none was recorded."""
    state = read_state(settings)
    if state is None:
        return False
    stop_pids(list(reversed(state["pids"])))
    state_file(settings).unlink(missing_ok=True)
    return True

"""Background services of the embedded local setup: start one, find it again, stop it.

`lambdarec demo`, `lambdarec airflow start` and `lambdarec mlflow-ui start` run their long-lived
processes (the MLflow UI, `airflow standalone`, the API) through this module. Each service gets a pid
file and a log under `<data_dir>/run`, its own process group (so stopping it also reaches its
children), a free-port check before it starts (a port in use is a clear `PortInUse`, not a stack
trace from deep inside the service) and a readiness probe with a deadline.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path


class ServiceError(RuntimeError):
    """A local service could not be started or stopped; the message says why and what to do."""


class PortInUse(ServiceError):
    """The port a service needs is taken by another process."""


@dataclass(frozen=True)
class ServiceSpec:
    """How to run one local service."""

    name: str  # file stem of its pid file and log: `<run_dir>/<name>.pid`, `<run_dir>/<name>.log`
    command: Sequence[str]
    port: int | None = None
    host: str = "127.0.0.1"
    env: Mapping[str, str] = field(default_factory=dict)
    # airflow standalone shuts its scheduler, API server and workers down on SIGINT; SIGTERM orphans them.
    stop_signal: int = signal.SIGTERM
    port_setting: str | None = None  # the LAMBDAREC_* variable that moves the port, for the error message


def port_in_use(host: str, port: int) -> bool:
    """True when something accepts connections on host:port (or the port cannot be bound)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        if sock.connect_ex((host, port)) == 0:
            return True
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # as the servers bind: a stopped server's connections in TIME_WAIT do not keep its port taken
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def pid_file(run_dir: Path, name: str) -> Path:
    return run_dir / f"{name}.pid"


def log_file(run_dir: Path, name: str) -> Path:
    return run_dir / f"{name}.log"


def _process_start_time(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def running_pid(run_dir: Path, name: str) -> int | None:
    """The pid of the service if its recorded process is still alive (not a recycled pid)."""
    path = pid_file(run_dir, name)
    if not path.exists():
        return None
    try:
        pid_text, started_text = path.read_text().split()
        pid, started = int(pid_text), float(started_text)
    except ValueError:
        return None
    actual = _process_start_time(pid)
    if actual is None or abs(actual - started) > 1.0:
        return None
    import psutil

    if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
        return None
    return pid


def ensure_port_free(spec: ServiceSpec) -> None:
    if spec.port is not None and port_in_use(spec.host, spec.port):
        hint = f" or set {spec.port_setting} to a free port" if spec.port_setting else ""
        raise PortInUse(
            f"{spec.name} needs port {spec.port} on {spec.host}, but another process is using it. "
            f"Stop that process (`make demo-stop` stops lambdarec's own services){hint}."
        )


def start_service(
    spec: ServiceSpec,
    run_dir: Path,
    ready: Callable[[], bool],
    timeout_s: float = 120.0,
) -> int:
    """Start the service in the background and wait until `ready()`; returns its pid.

    An already running instance (same pid file, same process) is reused.
    """
    pid = running_pid(run_dir, spec.name)
    if pid is not None:
        if wait_until(ready, timeout_s):
            return pid
        raise ServiceError(
            f"{spec.name} (pid {pid}) runs but is not ready; see {log_file(run_dir, spec.name)}"
        )
    ensure_port_free(spec)
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_file(run_dir, spec.name)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            list(spec.command),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(spec.env) if spec.env else None,
            start_new_session=True,  # its own process group: stop reaches its children too
        )
    pid_file(run_dir, spec.name).write_text(f"{process.pid} {_process_start_time(process.pid) or 0.0}")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pid_file(run_dir, spec.name).unlink(missing_ok=True)
            raise ServiceError(
                f"{spec.name} exited with code {process.returncode} while starting:\n{tail(log_path)}\n"
                f"(full log: {log_path})"
            )
        if ready():
            return process.pid
        time.sleep(0.25)
    stop_service(spec.name, run_dir, spec.stop_signal)
    raise ServiceError(
        f"{spec.name} was not ready within {timeout_s:.0f}s:\n{tail(log_path)}\n(full log: {log_path})"
    )


def stop_service(
    name: str, run_dir: Path, stop_signal: int = signal.SIGTERM, timeout_s: float = 60.0
) -> bool:
    """Stop the service and whatever it left in its process group; False when it was not running."""
    pid = running_pid(run_dir, name)
    pid_file(run_dir, name).unlink(missing_ok=True)
    if pid is None:
        return False
    try:
        os.kill(pid, stop_signal)
    except ProcessLookupError:
        return True
    if not wait_until(lambda: not _alive(pid), timeout_s):
        _signal_group(pid, signal.SIGKILL)
    # Children that outlived their parent (the process group is the service's own).
    _signal_group(pid, signal.SIGTERM)
    if not wait_until(lambda: not _group_alive(pid), 10.0):
        _signal_group(pid, signal.SIGKILL)
    return True


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _group_alive(pgid: int) -> bool:
    import psutil

    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, psutil.NoSuchProcess, PermissionError):
            continue
    return False


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def wait_until(condition: Callable[[], bool], timeout_s: float, interval_s: float = 0.25) -> bool:
    """Poll `condition` until it holds or the deadline passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)


def http_ok(url: str, timeout_s: float = 2.0) -> bool:
    """True when GET url answers with a 2xx status."""
    import httpx

    try:
        return httpx.get(url, timeout=timeout_s).is_success
    except httpx.HTTPError:
        return False


def tail(path: Path, lines: int = 20) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

"""The private redis-server of the embedded setup: started on a free loopback port, stopped again.

Used when `LAMBDAREC_REDIS_URL` is empty. Its URL and pid are recorded under `<data_dir>/run` so every
`lambdarec` process of one data directory (stream job, API, batch publish) shares the same server.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


class RedisServerUnavailable(RuntimeError):
    """redis-server is missing or did not come up."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _answers_ping(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class EmbeddedRedis:
    """One redis-server process with its files in `directory`."""

    directory: Path
    binary: str = "redis-server"
    host: str = "127.0.0.1"
    port: int | None = None
    process: subprocess.Popen | None = None
    extra_args: tuple[str, ...] = ()  # more redis-server options (a TLS port, ACL users: tests of those)

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> EmbeddedRedis:
        binary = shutil.which(self.binary)
        if binary is None:
            raise RedisServerUnavailable(
                f"{self.binary!r} is not on PATH. `make setup` installs it (Debian: apt-get install redis-server), "
                "or set LAMBDAREC_REDIS_URL to an existing Redis."
            )
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port(self.host)
        args = [
            binary,
            "--bind",
            self.host,
            "--port",
            str(self.port),
            "--dir",
            str(self.directory),
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "yes",
            "--daemonize",
            "no",
            "--logfile",
            str(self.directory / f"redis-{self.port}.log"),
            *self.extra_args,
        ]
        # stderr too: a caller capturing our output must not wait on a pipe the server keeps open.
        self.process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RedisServerUnavailable(
                    f"redis-server exited with {self.process.returncode}; see {self.directory}"
                )
            if _answers_ping(self.host, self.port):
                return self
            time.sleep(0.02)
        self.stop()
        raise RedisServerUnavailable(
            f"redis-server did not answer on {self.host}:{self.port} within {timeout_s}s"
        )

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


def shared_redis_url(run_dir: Path, redis_dir: Path, binary: str = "redis-server") -> str:
    """URL of the data directory's private redis-server, starting it if none is alive."""
    url_file = run_dir / "redis.url"
    if url_file.exists():
        url = url_file.read_text().strip()
        host, port = url.removeprefix("redis://").split("/")[0].split(":")
        if _answers_ping(host, int(port)):
            return url
    server = EmbeddedRedis(directory=redis_dir, binary=binary).start()
    run_dir.mkdir(parents=True, exist_ok=True)
    url_file.write_text(server.url)
    (run_dir / "redis.pid").write_text(str(server.process.pid))
    return server.url


def stop_shared_redis(run_dir: Path) -> bool:
    """Stop the data directory's private redis-server; False when none was running."""
    pid_file = run_dir / "redis.pid"
    if not pid_file.exists():
        return False
    pid = int(pid_file.read_text())
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    pid_file.unlink(missing_ok=True)
    (run_dir / "redis.url").unlink(missing_ok=True)
    return True

"""The private redis-servers of the embedded setup: started on free loopback ports, stopped again.

Used when `LAMBDAREC_REDIS_URL` is empty: one redis-server (`EmbeddedRedis`), or with
`LAMBDAREC_REDIS_CLUSTER=true` a Redis Cluster of three masters (`EmbeddedRedisCluster`, also what the
cluster tests run on). The URL and pids are recorded under `<data_dir>/run` so every `lambdarec`
process of one data directory (stream job, API, batch publish) shares the same server or cluster.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
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


# -- a Redis Cluster of masters on loopback ----------------------------------------------------------
def _cluster_info(host: str, port: int) -> dict[str, str]:
    """A node's CLUSTER INFO fields; empty when it does not answer."""
    import redis

    client = redis.Redis(host=host, port=port, socket_timeout=1, socket_connect_timeout=1)
    try:
        raw = client.execute_command("CLUSTER INFO")
    except (redis.RedisError, OSError):
        return {}
    finally:
        client.close()
    return {str(k): str(v) for k, v in raw.items()}  # redis-py parses the reply into a dict


def cluster_ready(info: dict[str, str], masters: int) -> bool:
    """A node's CLUSTER INFO says the cluster serves: every slot assigned and ok, all masters known."""
    return (
        info.get("cluster_state") == "ok"
        and info.get("cluster_slots_ok") == "16384"
        and info.get("cluster_known_nodes") == str(masters)
    )


@dataclass
class EmbeddedRedisCluster:
    """A Redis Cluster of `masters` redis-servers (cluster mode, no replicas, no persistence) on
    loopback, each in `directory/node-<n>` with its own client and cluster-bus ports, slots assigned by
    `redis-cli --cluster create`. `url` names the first node; cluster clients discover the rest."""

    directory: Path
    masters: int = 3
    binary: str = "redis-server"
    cli: str = "redis-cli"
    host: str = "127.0.0.1"
    nodes: list[EmbeddedRedis] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.nodes[0].url

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    def start(self, timeout_s: float = 30.0) -> EmbeddedRedisCluster:
        cli = shutil.which(self.cli)
        if cli is None:
            raise RedisServerUnavailable(
                f"{self.cli!r} is not on PATH: it comes with redis-server (Debian: apt-get install redis-tools)."
            )
        try:
            for n in range(self.masters):
                directory = self.directory / f"node-{n}"
                (directory / "nodes.conf").unlink(missing_ok=True)  # a fresh cluster every start
                self.nodes.append(
                    EmbeddedRedis(
                        directory=directory,
                        binary=self.binary,
                        host=self.host,
                        extra_args=(
                            "--cluster-enabled",
                            "yes",
                            "--cluster-config-file",
                            "nodes.conf",
                            "--cluster-port",
                            str(free_port(self.host)),
                            "--cluster-node-timeout",
                            "5000",
                        ),
                    ).start(timeout_s)
                )
            created = subprocess.run(
                [
                    cli,
                    "--cluster",
                    "create",
                    *[f"{self.host}:{port}" for port in self.ports],
                    "--cluster-replicas",
                    "0",
                    "--cluster-yes",
                ],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout_s,
            )
            if created.returncode != 0:
                raise RedisServerUnavailable(
                    f"redis-cli --cluster create failed: {created.stdout}{created.stderr}"
                )
            self._wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(cluster_ready(_cluster_info(self.host, port), self.masters) for port in self.ports):
                return
            time.sleep(0.05)
        raise RedisServerUnavailable(
            f"the Redis Cluster on ports {self.ports} did not reach cluster_state:ok"
        )

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        self.nodes = []


def shared_cluster_url(run_dir: Path, cluster_dir: Path, binary: str = "redis-server") -> str:
    """URL of (a node of) the data directory's private Redis Cluster, starting it if it does not serve."""
    state_file = run_dir / "redis-cluster.json"
    if state_file.exists():
        state = json.loads(state_file.read_text())
        if cluster_ready(_cluster_info(state["host"], state["ports"][0]), len(state["ports"])):
            return state["url"]
        stop_shared_cluster(run_dir)  # a stale record
    cluster = EmbeddedRedisCluster(directory=cluster_dir, binary=binary).start()
    run_dir.mkdir(parents=True, exist_ok=True)
    state_file.write_text(
        json.dumps(
            {
                "url": cluster.url,
                "host": cluster.host,
                "ports": cluster.ports,
                "pids": [node.process.pid for node in cluster.nodes],
            }
        )
    )
    return cluster.url


def stop_shared_cluster(run_dir: Path) -> bool:
    """Stop the data directory's private Redis Cluster; False when none was recorded."""
    state_file = run_dir / "redis-cluster.json"
    if not state_file.exists():
        return False
    for pid in json.loads(state_file.read_text())["pids"]:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    state_file.unlink()
    return True

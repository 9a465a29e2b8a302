"""The streaming job's watchdog: is the speed layer down or stuck, and if so restart it.

Called by the `lambdarec_streaming_watchdog` DAG every few minutes (and usable from a shell). The
verdict is a pure function of what Redis and the job's process say (`assess_stream`); the checks and
the restart go through the speed layer's own contracts: the status hash `RedisKeys.speed_status`, the
event bus's committed offsets, and `lambdarec stream status|stop|start --background` (the job
resumes from its Spark checkpoint, so a restart loses and double counts nothing).

- down: no streaming job is alive: no process here and no heartbeat from any host.
- stuck: the job is alive, but the oldest event on the bus that no query has committed has
  waited longer than `Settings.stream.max_staleness_s` (an idle job with nothing to read is healthy).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from feature_store.settings import Settings

HealthState = Literal["healthy", "down", "stuck"]


class WatchdogError(RuntimeError):
    """The watchdog could not read the job's state or restart it."""


@dataclass(frozen=True)
class StreamHealth:
    state: HealthState
    reason: str
    backlog_age_s: float | None  # how long the oldest uncommitted bus event has waited
    lag_ms_p99: float | None  # the job's own freshness figure (event on the bus -> features in Redis)
    processed: int | None

    @property
    def needs_restart(self) -> bool:
        return self.state != "healthy"

    def as_dict(self) -> dict:
        return asdict(self)


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None


def assess_stream(
    status: Mapping[str, str],
    alive: bool,
    oldest_uncommitted_ms: int | None,
    now_ms: int,
    max_staleness_s: float,
) -> StreamHealth:
    """The verdict on the streaming job from its status hash, process liveness and bus backlog."""
    lag = _number(status.get("lag_ms_p99"))
    processed = _number(status.get("processed"))
    processed_count = int(processed) if processed is not None else None
    backlog_age_s = (
        None if oldest_uncommitted_ms is None else max(0.0, (now_ms - oldest_uncommitted_ms) / 1000.0)
    )
    if not alive:
        last_state = status.get("state", "never started")
        return StreamHealth(
            "down",
            f"no streaming job is alive (last reported state: {last_state})",
            backlog_age_s,
            lag,
            processed_count,
        )
    if backlog_age_s is not None and backlog_age_s > max_staleness_s:
        return StreamHealth(
            "stuck",
            f"the oldest unread event has waited {backlog_age_s:.0f}s (limit {max_staleness_s:.0f}s)",
            backlog_age_s,
            lag,
            processed_count,
        )
    reason = (
        "no unread events" if backlog_age_s is None else f"oldest unread event waited {backlog_age_s:.1f}s"
    )
    return StreamHealth("healthy", reason, backlog_age_s, lag, processed_count)


# -- I/O -------------------------------------------------------------------------------------------


def _lambdarec_cli() -> list[str]:
    """The `lambdarec` command of this interpreter's environment (the venv's bin)."""
    return [str(Path(sys.executable).parent / "lambdarec")]


def run_cli(settings: Settings, *args: str, timeout_s: float = 300.0) -> subprocess.CompletedProcess:
    """`lambdarec ...` with these settings (as LAMBDAREC_* variables over the current environment)."""
    import os

    from lambdarec.airflow_local import settings_env

    env = {k: v for k, v in os.environ.items() if not k.startswith("LAMBDAREC_")} | settings_env(settings)
    return subprocess.run(
        [*_lambdarec_cli(), *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def oldest_uncommitted_ms(client, stream: str) -> int | None:
    """Bus time of the first entry after the lowest committed offset of the stream's queries."""
    from feature_store.event_bus import STREAM_START, entry_time_ms, parse_entry_id, read_committed

    committed = read_committed(client, stream)
    lowest = min((parse_entry_id(v) for v in committed.values()), default=None)
    start = f"({lowest}" if lowest is not None else STREAM_START
    entries = client.xrange(stream, min=start, max="+", count=1)
    return entry_time_ms(entries[0][0]) if entries else None


def job_status(settings: Settings) -> tuple[dict[str, str], bool]:
    """The status hash and whether a job is alive (here or by its heartbeat), as
    `lambdarec stream status --json` says."""
    done = run_cli(settings, "stream", "status", "--json", timeout_s=120.0)
    if done.returncode != 0:
        raise WatchdogError(f"`lambdarec stream status` failed: {done.stderr.strip()[-500:]}")
    status = json.loads(done.stdout)
    return status, status.get("alive") == "yes"


def check_stream(settings: Settings, redis_client) -> StreamHealth:
    """Read the job's state and the bus backlog, and judge it (now = the Redis server's clock)."""
    status, alive = job_status(settings)
    seconds, micros = redis_client.time()
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    oldest = oldest_uncommitted_ms(redis_client, settings.bus.stream)
    return assess_stream(status, alive, oldest, now_ms, settings.stream.max_staleness_s)


def restart_stream(settings: Settings) -> str:
    """Restart the job so it resumes from its checkpoint; returns what the restart printed.

    `Settings.stream.restart_command` when set (e.g. `kubectl rollout restart deployment/...` in
    production), else the local job: stop whatever is left of it, start it again in the background.
    """
    if settings.stream.restart_command:
        done = subprocess.run(
            settings.stream.restart_command, capture_output=True, text=True, timeout=300, check=False
        )
        if done.returncode != 0:
            raise WatchdogError(
                f"{' '.join(settings.stream.restart_command)} failed: {done.stderr.strip()[-500:]}"
            )
        return done.stdout.strip()
    stopped = run_cli(settings, "stream", "stop")
    if stopped.returncode != 0:
        raise WatchdogError(f"`lambdarec stream stop` failed: {stopped.stderr.strip()[-500:]}")
    started = run_cli(settings, "stream", "start", "--background")
    if started.returncode != 0:
        raise WatchdogError(f"`lambdarec stream start --background` failed: {started.stderr.strip()[-500:]}")
    return (stopped.stdout + started.stdout).strip()

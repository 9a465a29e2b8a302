"""The streaming watchdog's check against a real redis-server and the real `lambdarec stream status`:
with no job running it says `down`, and it measures how long the oldest unread bus event has waited."""

from __future__ import annotations

import os
import socket
import time

import psutil
import pytest

from feature_store.event_bus import record_committed
from feature_store.redis_keys import RedisKeys
from feature_store.settings import Settings
from feature_store.stream_liveness import (
    current_heartbeat,
    end_heartbeat,
    live_identity,
    renew_heartbeat,
    request_stop,
    stop_requested,
)
from lambdarec.watchdog import check_stream, oldest_uncommitted_ms, run_cli

pytestmark = pytest.mark.integration


@pytest.fixture
def watched(settings: Settings, redis_server, tmp_path) -> Settings:
    return settings.updated(data_dir=tmp_path, redis_url=redis_server.url, stream_max_staleness_s=60)


def test_oldest_unread_event_is_the_first_after_the_lowest_commit(watched: Settings, redis_client) -> None:
    stream = watched.bus.stream
    assert oldest_uncommitted_ms(redis_client, stream) is None
    for entry_id in ("1000-0", "2000-0", "3000-0"):
        redis_client.xadd(stream, {"event": "{}"}, id=entry_id)
    assert oldest_uncommitted_ms(redis_client, stream) == 1000  # nothing committed yet
    record_committed(redis_client, stream, "speed", "2000-0")
    record_committed(redis_client, stream, "bronze", "1000-0")
    assert oldest_uncommitted_ms(redis_client, stream) == 2000  # the slower query decides
    record_committed(redis_client, stream, "bronze", "3000-0")
    record_committed(redis_client, stream, "speed", "3000-0")
    assert oldest_uncommitted_ms(redis_client, stream) is None


def test_no_streaming_job_is_down_with_the_backlog_measured(watched: Settings, redis_client) -> None:
    seconds, _ = redis_client.time()
    waited_ms = int(seconds) * 1000 - 90_000
    redis_client.xadd(watched.bus.stream, {"event": "{}"}, id=f"{waited_ms}-0")
    health = check_stream(watched, redis_client)
    assert health.state == "down"
    assert health.reason == "no streaming job is alive (last reported state: never started)"
    assert health.needs_restart
    assert 90.0 <= health.backlog_age_s < 150.0


def test_a_job_on_another_host_is_alive_while_its_heartbeat_lasts(watched: Settings, redis_client) -> None:
    keys = RedisKeys(watched.redis.key_prefix)
    # a job in another container: its status names a pid that means nothing on this machine
    redis_client.hset(keys.speed_status, mapping={"state": "running", "pid": "1"})
    redis_client.set(keys.speed_heartbeat, "stream-7f9c:1", px=60_000)
    health = check_stream(watched, redis_client)
    assert (health.state, health.reason) == ("healthy", "no unread events")
    started = run_cli(watched, "stream", "start", "--background", "--timeout-s", "20")
    assert (started.returncode, started.stdout.strip()) == (
        0,
        "the streaming job already runs (stream-7f9c:1, by its heartbeat)",
    )
    stopped = run_cli(watched, "stream", "stop")
    assert stopped.returncode == 1
    assert "runs as stream-7f9c:1, not on this machine" in stopped.stderr
    redis_client.pexpire(keys.speed_heartbeat, 200)  # that job stops renewing it
    time.sleep(0.5)
    health = check_stream(watched, redis_client)
    assert (health.state, health.reason) == (
        "down",
        "no streaming job is alive (last reported state: running)",
    )


def test_a_heartbeat_left_by_a_job_killed_on_this_host_does_not_count() -> None:
    here = socket.gethostname()
    gone = max(psutil.pids()) + 100_000  # no such process
    assert live_identity(f"{here}:{gone}") is None
    assert live_identity(f"{here}:{os.getpid()}") == f"{here}:{os.getpid()}"
    assert live_identity(f"other-host:{gone}") == f"other-host:{gone}"
    assert live_identity("") is None


def test_a_job_ends_only_its_own_heartbeat_and_takes_only_its_own_stop_request(redis_client) -> None:
    keys = RedisKeys("lv")
    renew_heartbeat(redis_client, keys, "host-a:1", ttl_s=30)
    assert current_heartbeat(redis_client, keys) == "host-a:1"
    assert 29_000 < redis_client.pttl(keys.speed_heartbeat) <= 30_000
    end_heartbeat(redis_client, keys, "host-b:2")  # a job whose lease was taken over leaves the new one
    assert current_heartbeat(redis_client, keys) == "host-a:1"
    end_heartbeat(redis_client, keys, "host-a:1")
    assert current_heartbeat(redis_client, keys) == ""

    request_stop(redis_client, keys, "host-a:1", ttl_s=10)
    assert not stop_requested(redis_client, keys, "host-b:2")  # the next job is not the one asked
    assert stop_requested(redis_client, keys, "host-a:1")
    assert redis_client.exists(keys.speed_stop_request) == 0 and not stop_requested(
        redis_client, keys, "host-a:1"
    )

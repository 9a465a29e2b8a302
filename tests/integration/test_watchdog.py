"""The streaming watchdog's check against a real redis-server and the real `lambdarec stream status`:
with no job running it says `down`, and it measures how long the oldest unread bus event has waited."""

from __future__ import annotations

import pytest

from feature_store.event_bus import record_committed
from feature_store.settings import Settings
from lambdarec.watchdog import check_stream, oldest_uncommitted_ms

pytestmark = pytest.mark.integration


@pytest.fixture
def watched(settings: Settings, redis_server, tmp_path) -> Settings:
    return settings.model_copy(
        update={"data_dir": tmp_path, "redis_url": redis_server.url, "stream_max_staleness_s": 60}
    )


def test_oldest_unread_event_is_the_first_after_the_lowest_commit(watched: Settings, redis_client) -> None:
    stream = watched.event_stream
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
    redis_client.xadd(watched.event_stream, {"event": "{}"}, id=f"{waited_ms}-0")
    health = check_stream(watched, redis_client)
    assert health.state == "down"
    assert health.reason == "no streaming job process is alive (last reported state: never started)"
    assert health.needs_restart
    assert 90.0 <= health.backlog_age_s < 150.0

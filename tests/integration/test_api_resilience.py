"""Failure behaviour of the API: Redis stopped, Redis frozen (slow), Redis absent at start-up, and the
real `lambdarec serve` process under uvicorn. Each test runs its own redis-server (EmbeddedRedis) so
stopping it cannot disturb the other tests."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import httpx
import orjson
import pytest
import redis

from feature_store.codecs import encode_recs
from feature_store.redis_keys import RedisKeys
from lambdarec.redis_server import EmbeddedRedis, free_port
from serving.app import create_app

pytestmark = pytest.mark.integration

POPULAR = [("i7", 100.0, "popular"), ("i8", 50.0, "popular"), ("i9", 25.0, "popular")]


def seed(url: str, version: str = "v1") -> None:
    keys, client = RedisKeys(), redis.Redis.from_url(url)
    client.set(keys.popular(version), encode_recs(POPULAR))
    client.set(keys.user_recs(version, "u1"), encode_recs([("i1", 0.9, "als"), ("i2", 0.5, "als")]))
    client.set(keys.batch_pointer, version)
    client.close()


async def until(condition, deadline_s: float = 20.0):
    """Await `condition()` until it returns a truthy value or the deadline passes (no fixed sleeps)."""
    deadline = time.monotonic() + deadline_s
    while True:
        value = await condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {deadline_s}s")
        await asyncio.sleep(0.01)


@pytest.fixture
def own_redis(tmp_path):
    server = EmbeddedRedis(directory=tmp_path / "own-redis").start()
    yield server
    server.stop()


def settings_for(serving_settings, server):
    return serving_settings.updated(
        redis_url=server.url, serving_redis_budget_s=0.2, serving_redis_retry_s=0.05
    )


async def test_redis_stopped_degrades_to_popular_then_recovers(
    serving_settings, own_redis, tmp_path, running
):
    seed(own_redis.url)
    app = create_app(settings_for(serving_settings, own_redis))
    async with running(app) as api:
        healthy = (await api.get("/v1/recommendations/u1", params={"k": 2})).json()
        own_redis.stop()
        down = await api.get("/v1/recommendations/u1", params={"k": 2, "exclude": ["i7"]})
        similar_down = await api.get("/v1/items/i1/similar", params={"k": 1})
        ready_down = await api.get("/readyz")
        restarted = EmbeddedRedis(directory=tmp_path / "own-redis", port=own_redis.port).start()
        try:
            seed(restarted.url, "v2")

            async def recovered():
                body = (await api.get("/v1/recommendations/u1", params={"k": 2})).json()
                return body if not body["degraded"] else None

            back = await until(recovered)
            ready_back = await api.get("/readyz")
            metrics = (await api.get("/metrics")).text
        finally:
            restarted.stop()

    assert (healthy["degraded"], [i["item_id"] for i in healthy["items"]]) == (False, ["i1", "i2"])
    assert down.status_code == 200
    assert down.json()["degraded"] is True
    assert [(i["item_id"], i["source"], i["score"]) for i in down.json()["items"]] == [
        ("i8", "popular", 1.0),
        ("i9", "popular", 0.5),
    ]
    assert similar_down.status_code == 200 and similar_down.json()["degraded"] is True
    assert [i["item_id"] for i in similar_down.json()["items"]] == ["i7"]
    assert ready_down.status_code == 503 and ready_down.json()["redis"] is False
    assert (back["batch_version"], [i["item_id"] for i in back["items"]]) == ("v2", ["i1", "i2"])
    assert ready_back.status_code == 200
    assert (
        'lambdarec_degraded_responses_total{endpoint="recommendations",reason="redis_error"} 1.0' in metrics
    )


async def test_frozen_redis_answers_within_the_budget_and_recovers(serving_settings, own_redis, running):
    seed(own_redis.url)
    app = create_app(settings_for(serving_settings, own_redis))
    async with running(app) as api:
        assert (await api.get("/v1/recommendations/u1")).json()["degraded"] is False
        os.kill(own_redis.process.pid, signal.SIGSTOP)  # Redis accepts nothing and answers nothing
        try:
            frozen = await asyncio.wait_for(api.get("/v1/recommendations/u1", params={"k": 1}), timeout=5)
        finally:
            os.kill(own_redis.process.pid, signal.SIGCONT)

        async def recovered():
            body = (await api.get("/v1/recommendations/u1", params={"k": 1})).json()
            return body if not body["degraded"] else None

        back = await until(recovered)
    assert frozen.status_code == 200 and frozen.json()["degraded"] is True
    assert [i["item_id"] for i in frozen.json()["items"]] == ["i7"]
    assert [i["item_id"] for i in back["items"]] == ["i1"]


async def test_a_post_whose_reply_never_came_does_not_claim_nothing_was_published(
    serving_settings, own_redis, running
):
    """Redis frozen while the batch is in flight: the API gives up (503), Redis wakes and runs the
    batch it had received. The 503 must not say "nothing was published": the event is on the bus, and
    the client's resend is what keeps it (every sink counts an event id once)."""
    settings = settings_for(serving_settings, own_redis)
    event = {"event_id": "e1", "user_id": "u1", "item_id": "i1", "event_type": "view", "ts": 1}
    async with running(create_app(settings)) as api:
        # one publish first, so the frozen one goes out on an open connection (not stuck connecting)
        assert (await api.post("/v1/events", json={**event, "event_id": "e0"})).status_code == 202
        os.kill(own_redis.process.pid, signal.SIGSTOP)
        try:
            posted = await asyncio.wait_for(api.post("/v1/events", json=event), timeout=5)
        finally:
            os.kill(own_redis.process.pid, signal.SIGCONT)
        resent = await api.post("/v1/events", json=event)
    client = redis.Redis.from_url(own_redis.url)
    entries = [fields[b"event"] for _, fields in client.xrange(settings.bus.stream)]
    assert posted.status_code == 503
    assert posted.json() == {
        "detail": "the event bus did not confirm the batch (TimeoutError): its events may be on the bus; "
        "resend them unchanged (each event_id counts once)",
        "published": "unknown",
    }
    assert resent.status_code == 202
    assert [orjson.loads(e)["event_id"] for e in entries] == ["e0", "e1", "e1"]


async def test_starts_without_redis_and_serves_once_it_appears(serving_settings, tmp_path, running):
    port = free_port()
    settings = serving_settings.updated(
        redis_url=f"redis://127.0.0.1:{port}/0", serving_redis_budget_s=0.2, serving_redis_retry_s=0.05
    )
    async with running(create_app(settings)) as api:
        health = await api.get("/healthz")
        ready = await api.get("/readyz")
        empty = (await api.get("/v1/recommendations/u1")).json()
        posted = await api.post(
            "/v1/events",
            json={"event_id": "e1", "user_id": "u1", "item_id": "i1", "event_type": "view", "ts": 1},
        )
        server = EmbeddedRedis(directory=tmp_path / "late-redis", port=port).start()
        try:
            seed(server.url)

            async def served():
                body = (await api.get("/v1/recommendations/u1")).json()
                return body if not body["degraded"] else None

            back = await until(served)
        finally:
            server.stop()
    assert health.status_code == 200 and ready.status_code == 503
    assert (empty["degraded"], empty["items"]) == (True, [])
    assert posted.status_code == 503
    assert posted.json() == {
        "detail": "event bus unavailable (ConnectionError); nothing was published, retry (each event_id counts once)",
        "published": "none",
    }
    assert [i["item_id"] for i in back["items"]][:2] == ["i1", "i2"]


def test_lambdarec_serve_runs_under_uvicorn_without_spark(serving_settings, own_redis, tmp_path):
    seed(own_redis.url)
    port = free_port()
    env = {
        **os.environ,
        "LAMBDAREC_DATA_DIR": str(tmp_path),
        "LAMBDAREC_REDIS_URL": own_redis.url,
        "LAMBDAREC_MLFLOW_TRACKING_URI": serving_settings.tracking_uri,
        "LAMBDAREC_MLFLOW_ARTIFACT_ROOT": serving_settings.artifact_root,
    }
    code = (
        "import sys, runpy\n"
        "sys.argv = ['lambdarec', 'serve', '--port', sys.argv[1], '--log-level', 'warning']\n"
        "import atexit\n"
        "atexit.register(lambda: print('HEAVY', sorted({m.split('.')[0] for m, v in sys.modules.items() if v is not None} & {'pyspark', 'spark_jobs', 'xgboost', 'mlflow'}), flush=True))\n"
        "from lambdarec.cli import main\n"
        "main()\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code, str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            while True:
                try:
                    if client.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert process.poll() is None, process.stdout.read()
                assert time.monotonic() < deadline, "lambdarec serve did not come up"
                time.sleep(0.05)
            recs = client.get("/v1/recommendations/u1", params={"k": 2}).json()
            docs = client.get("/docs")
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=30)
    assert [i["item_id"] for i in recs["items"]] == ["i1", "i2"] and recs["degraded"] is False
    assert docs.status_code == 200
    # mlflow is imported (in a worker thread) to look for a champion; Spark never is.
    assert "HEAVY ['mlflow']" in output, output

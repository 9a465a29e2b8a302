"""POST /v1/events (validation, all-or-nothing batches, the event bus), API keys, parameter
validation, /readyz and /metrics, against a real redis-server."""

from __future__ import annotations

import time

import orjson
import pytest
from typer.testing import CliRunner

from feature_store.event_bus import EVENT_FIELD
from feature_store.events import Event
from feature_store.redis_keys import RedisKeys
from serving.app import create_app
from serving.auth import MissingApiKeys, hash_api_key

pytestmark = pytest.mark.integration

NOW_MS = int(time.time() * 1000)


def event(event_id: str, **changes) -> dict:
    return {
        "event_id": event_id,
        "user_id": "u1",
        "item_id": "i1",
        "event_type": "view",
        "ts": NOW_MS,
        **changes,
    }


def bus_payloads(redis_client, settings) -> list[dict]:
    return [
        orjson.loads(fields[EVENT_FIELD.encode()]) for _, fields in redis_client.xrange(settings.bus.stream)
    ]


async def test_one_event_and_a_batch_are_published_to_the_bus(serving_settings, redis_client, running):
    async with running(create_app(serving_settings)) as api:
        single = await api.post("/v1/events", json=event("e1", context={"page": "home", "position": 3}))
        batch = await api.post(
            "/v1/events",
            json=[event("e2", event_type="purchase", value=9.5), event("e3", ts="2026-01-01T00:00:00Z")],
        )

    assert single.status_code == 202 and single.json()["accepted"] == 1
    assert batch.status_code == 202 and batch.json()["accepted"] == 2
    assert len(batch.json()["entry_ids"]) == 2
    expected = [
        Event.model_validate(event("e1", context={"page": "home", "position": "3"})).to_json_dict(),
        Event.model_validate(event("e2", event_type="purchase", value=9.5)).to_json_dict(),
        Event.model_validate(event("e3", ts="2026-01-01T00:00:00Z")).to_json_dict(),
    ]
    assert bus_payloads(redis_client, serving_settings) == expected


async def test_a_batch_with_bad_events_is_rejected_whole_with_each_error(
    serving_settings, redis_client, running
):
    events = [
        event("ok1"),
        event("bad-type", event_type="teleport"),
        event("bad-id", user_id="has space"),
        event("ok1"),  # duplicate of index 0
        event("future", ts=NOW_MS + 3_600_000),
        event("rating-without-value", event_type="rating"),
        "not an object",
    ]
    async with running(create_app(serving_settings)) as api:
        response = await api.post("/v1/events", json={"events": events})
        empty = await api.post("/v1/events", json={"events": []})

    assert response.status_code == 422
    body = response.json()
    assert body["accepted"] == 0 and body["detail"] == "6 of 7 events are invalid; none was accepted"
    assert [(e["index"], e["event_id"], e["reason"]) for e in body["errors"]] == [
        (1, "bad-type", "unknown_event_type"),
        (2, "bad-id", "invalid_id"),
        (3, "ok1", "duplicate_event_id"),
        (4, "future", "future_timestamp"),
        (5, "rating-without-value", "bad_value"),
        (6, None, "malformed"),
    ]
    assert all(e["detail"] for e in body["errors"])
    assert redis_client.exists(serving_settings.bus.stream) == 0  # nothing half-accepted
    assert empty.status_code == 422


async def test_a_503_means_nothing_of_the_batch_is_on_the_bus(serving_settings, redis_client, running):
    """Batches of 100 events until Redis reaches maxmemory (noeviction): every batch answered 202 is on
    the bus whole, and the one answered 503 left none of its events there (none half-published)."""
    batches = [[event(f"m{b}-{n}", context={"note": "x" * 500}) for n in range(100)] for b in range(20)]
    limits = redis_client.config_get("maxmemory*")
    statuses = []
    try:
        redis_client.config_set("maxmemory-policy", "noeviction")
        redis_client.config_set("maxmemory", redis_client.info("memory")["used_memory"] + 200_000)
        async with running(create_app(serving_settings)) as api:
            for batch in batches:
                statuses.append((await api.post("/v1/events", json=batch)).status_code)
                if statuses[-1] != 202:
                    break
    finally:
        redis_client.config_set("maxmemory", limits["maxmemory"])
        redis_client.config_set("maxmemory-policy", limits["maxmemory-policy"])
    assert statuses[-1] == 503 and set(statuses[:-1]) == {202} and len(statuses) > 1, statuses
    published = [e["event_id"] for batch in batches[: len(statuses) - 1] for e in batch]
    assert [p["event_id"] for p in bus_payloads(redis_client, serving_settings)] == published


async def test_a_publish_slower_than_a_recommendations_read_budget_is_still_accepted(
    serving_settings, redis_client, running
):
    """Publishing an event batch may take five read budgets (0.5 s by default) before the API gives up:
    the soak of session 18 got 503s for batches whose write waited more than one budget (0.1 s) under
    load, and every one of them had to be resent. Redis holds writes for 250 ms here."""
    settings = serving_settings.updated(serving_redis_budget_s=0.1)  # the default
    async with running(create_app(settings)) as api:
        redis_client.execute_command("CLIENT", "PAUSE", 250, "WRITE")
        started = time.monotonic()
        response = await api.post("/v1/events", json=[event("slow1"), event("slow2")])
        waited = time.monotonic() - started

    assert response.status_code == 202, response.json()
    assert response.json()["accepted"] == 2
    assert 0.2 < waited < 0.5
    assert [p["event_id"] for p in bus_payloads(redis_client, settings)] == ["slow1", "slow2"]


async def test_the_api_sheds_events_with_503_above_the_backlog_cap(serving_settings, redis_client, running):
    settings = serving_settings.updated(event_stream_maxlen=2, event_stream_max_backlog=5)
    async with running(create_app(settings)) as api:
        accepted = await api.post("/v1/events", json=[event("b1"), event("b2"), event("b3")])
        refused = await api.post("/v1/events", json=[event("b4"), event("b5"), event("b6")])
        fits = await api.post("/v1/events", json=[event("b4"), event("b5")])

    assert [r.status_code for r in (accepted, refused, fits)] == [202, 503, 202]
    assert refused.json() == {
        "detail": "the event bus holds 3 entries and its backlog cap is 5 (LAMBDAREC_EVENT_STREAM_MAX_BACKLOG): "
        "the streaming job is behind or stalled; nothing was published, retry later",
        "published": "none",
    }
    assert [p["event_id"] for p in bus_payloads(redis_client, settings)] == ["b1", "b2", "b3", "b4", "b5"]


async def test_api_keys_guard_every_v1_endpoint(serving_settings, running):
    keyed = serving_settings.updated(api_keys_sha256=[hash_api_key("other"), hash_api_key("s3cret")])
    async with running(create_app(keyed)) as api:
        calls = [
            ("GET", "/v1/recommendations/u1", None),
            ("GET", "/v1/items/i1/similar", None),
            ("POST", "/v1/events", event("e1")),
        ]
        for method, path, body in calls:
            missing = await api.request(method, path, json=body)
            wrong = await api.request(method, path, json=body, headers={"X-API-Key": "guess"})
            right = await api.request(method, path, json=body, headers={"X-API-Key": "s3cret"})
            assert (missing.status_code, wrong.status_code, right.status_code) == (
                401,
                401,
                202 if method == "POST" else 200,
            ), path
            assert missing.json()["detail"] == "missing or unknown API key: send it in the X-API-Key header"
        open_paths = [
            (await api.get(p)).status_code for p in ("/healthz", "/metrics", "/docs", "/openapi.json")
        ]
    assert open_paths == [200, 200, 200, 200]


def test_production_profile_refuses_to_start_without_keys(serving_settings, monkeypatch):
    production = serving_settings.updated(profile="production")
    with pytest.raises(MissingApiKeys, match="LAMBDAREC_API_KEYS_SHA256"):
        create_app(production)
    create_app(production.updated(api_keys_sha256=[hash_api_key("k")]))  # with keys it starts

    from lambdarec.cli import build_app

    monkeypatch.setenv("LAMBDAREC_PROFILE", "production")
    monkeypatch.setenv("LAMBDAREC_DATA_DIR", str(serving_settings.data_dir))
    monkeypatch.delenv("LAMBDAREC_API_KEYS_SHA256", raising=False)
    result = CliRunner().invoke(build_app(), ["serve", "--port", "1"])
    assert result.exit_code == 2
    assert "requires API keys" in result.output


BAD_REQUESTS = [
    ("/v1/recommendations/has%20space", {}),
    ("/v1/recommendations/" + "u" * 129, {}),
    ("/v1/recommendations/u1", {"k": 0}),
    ("/v1/recommendations/u1", {"k": 101}),
    ("/v1/recommendations/u1", {"k": "ten"}),
    ("/v1/recommendations/u1", {"exclude": ["ok", "not ok"]}),
    ("/v1/recommendations/u1", {"exclude": [f"i{n}" for n in range(201)]}),
    ("/v1/recommendations/u1", {"category": "a;b"}),
    ("/v1/recommendations/u1", {"item_id": "x" * 200}),
    ("/v1/items/bad%24id/similar", {}),
    ("/v1/items/i1/similar", {"k": -1}),
]


async def test_bad_parameters_are_rejected(serving_settings, running):
    async with running(create_app(serving_settings)) as api:
        for path, params in BAD_REQUESTS:
            response = await api.get(path, params=params)
            assert response.status_code == 422, (path, params)
            assert response.json()["detail"][0]["loc"][0] in ("path", "query"), (path, params)
        still_fine = await api.get("/v1/recommendations/u-1:a.b@c/d_e", params={"k": 100, "exclude": ["x"]})
    assert still_fine.status_code == 200


async def test_readyz_reports_batch_version_and_speed_lag(
    serving_settings, redis_client, store_writer, running
):
    keys = RedisKeys()
    store_writer.publish_batch("v7", users={}, items={}, popular=[("i1", 1.0, "popular")])
    redis_client.hset(
        keys.speed_status,
        mapping={"lag_ms_p50": "120", "lag_ms_p99": "450", "updated_at": str(int(time.time() * 1000))},
    )
    async with running(create_app(serving_settings)) as api:
        ready = await api.get("/readyz")
        health = await api.get("/healthz")
    body = ready.json()
    assert ready.status_code == 200 and health.json() == {"status": "ok"}
    assert (body["ready"], body["redis"], body["model"], body["batch_version"]) == (True, True, None, "v7")
    assert (body["speed_lag_ms_p50"], body["speed_lag_ms_p99"]) == (120.0, 450.0)
    assert 0 <= body["speed_updated_age_s"] < 600


async def test_metrics_expose_latency_cache_model_and_degraded(serving_settings, store_writer, running):
    store_writer.publish_batch(
        "v1",
        users={"u1": {"recs": [("i1", 1.0, "als")]}},
        items={"i1": {"features": [1.0] * 11, "category": "c"}},
        popular=[("i1", 1.0, "popular")],
    )
    async with running(create_app(serving_settings)) as api:
        for _ in range(3):
            assert (await api.get("/v1/recommendations/u1")).status_code == 200
        text = (await api.get("/metrics")).text
    lines = set(text.splitlines())
    assert 'lambdarec_request_seconds_count{endpoint="recommendations"} 3.0' in lines
    assert 'lambdarec_cache_lookups_total{result="hit",table="users"} 2.0' in lines
    assert 'lambdarec_cache_lookups_total{result="miss",table="users"} 1.0' in lines
    assert 'lambdarec_model_info{backend="",name="",version=""} 1.0' in lines
    assert 'lambdarec_batch_version_info{version="v1"} 1.0' in lines
    assert any(line.startswith("lambdarec_cache_hit_ratio ") for line in lines)
    assert "# TYPE lambdarec_degraded_responses_total counter" in lines


# -- edge limits and scopes --------------------------------------------------------------------------
async def test_oversize_body_gets_413_before_authentication(serving_settings, redis_client, running):
    keyed = serving_settings.updated(api_keys_sha256=[hash_api_key("s3cret")], serving_max_body_bytes=2_000)
    big = orjson.dumps([event(f"e{n}") for n in range(40)])
    assert len(big) > 2_000

    async def chunked():  # no Content-Length: the limit counts the bytes as they arrive
        for start in range(0, len(big), 500):
            yield big[start : start + 500]

    async with running(create_app(keyed)) as api:
        no_key = await api.post("/v1/events", content=big, headers={"Content-Type": "application/json"})
        wrong_key = await api.post(
            "/v1/events",
            content=chunked(),
            headers={"Content-Type": "application/json", "X-API-Key": "guess"},
        )
        right_key = await api.post(
            "/v1/events",
            content=chunked(),
            headers={"Content-Type": "application/json", "X-API-Key": "s3cret"},
        )
        fits = await api.post("/v1/events", json=[event("small")], headers={"X-API-Key": "s3cret"})
        metrics = (await api.get("/metrics")).text

    assert [r.status_code for r in (no_key, wrong_key, right_key, fits)] == [413, 413, 413, 202]
    assert no_key.json() == {
        "detail": f"request body of {len(big)} bytes is over the limit of 2000 (LAMBDAREC_SERVING_MAX_BODY_BYTES)"
    }
    assert wrong_key.json() == {
        "detail": "request body is over the limit of 2000 bytes (LAMBDAREC_SERVING_MAX_BODY_BYTES)"
    }
    assert [p["event_id"] for p in bus_payloads(redis_client, keyed)] == ["small"]
    assert 'lambdarec_refused_requests_total{reason="body_too_large"} 3.0' in metrics.splitlines()


async def test_an_event_with_an_oversize_context_is_rejected_with_its_reason(
    serving_settings, redis_client, running
):
    async with running(create_app(serving_settings)) as api:
        response = await api.post(
            "/v1/events",
            json=[
                event("fine", context={"page": "home"}),
                event("wide", context={f"k{n}": n for n in range(33)}),
                event("heavy", context={"blob": "x" * 5_000}),
            ],
        )
    assert response.status_code == 422
    assert [(e["index"], e["event_id"], e["reason"], e["detail"]) for e in response.json()["errors"]] == [
        (1, "wide", "context_too_large", "context has 33 keys; at most 32"),
        (2, "heavy", "context_too_large", "context holds 5004 bytes of keys and values; at most 4096"),
    ]
    assert redis_client.exists(serving_settings.bus.stream) == 0


async def test_a_read_only_key_cannot_publish_events_and_a_write_only_key_cannot_read(
    serving_settings, store_writer, running
):
    store_writer.publish_batch(
        "v1",
        users={"u1": {"recs": [("i1", 1.0, "als")]}},
        items={"i1": {"features": [1.0] * 11, "category": "c"}},
        popular=[("i1", 1.0, "popular")],
    )
    keyed = serving_settings.updated(
        api_keys_sha256=[
            hash_api_key("reader", ("read",)),
            hash_api_key("writer", ("write",)),
            hash_api_key("both"),
        ]
    )
    async with running(create_app(keyed)) as api:

        def as_(key):
            return {"X-API-Key": key}

        statuses = {
            key: (
                (await api.get("/v1/recommendations/u1", headers=as_(key))).status_code,
                (await api.get("/v1/items/i1/similar", headers=as_(key))).status_code,
                (await api.post("/v1/events", json=event(f"e-{key}"), headers=as_(key))).status_code,
            )
            for key in ("reader", "writer", "both")
        }
        denied = await api.post("/v1/events", json=event("e-x"), headers=as_("reader"))
        metrics = (await api.get("/metrics")).text

    assert statuses == {"reader": (200, 200, 403), "writer": (403, 403, 202), "both": (200, 200, 202)}
    assert denied.json() == {"detail": "this API key may not write: it has the scope(s) read"}
    assert 'lambdarec_refused_requests_total{reason="forbidden"} 4.0' in metrics.splitlines()


async def test_each_api_key_has_its_own_rate_limit(serving_settings, store_writer, running):
    store_writer.publish_batch("v1", users={}, items={}, popular=[("i1", 1.0, "popular")])
    limited = serving_settings.updated(
        api_keys_sha256=[hash_api_key("a"), hash_api_key("b")],
        serving_rate_limit_per_s=0.001,
        serving_rate_limit_burst=3,
    )
    async with running(create_app(limited)) as api:
        a = [await api.get("/v1/recommendations/u1", headers={"X-API-Key": "a"}) for _ in range(4)]
        a_events = await api.post("/v1/events", json=event("e1"), headers={"X-API-Key": "a"})
        b = await api.get("/v1/recommendations/u1", headers={"X-API-Key": "b"})
        metrics = (await api.get("/metrics")).text

    assert [r.status_code for r in a] == [200, 200, 200, 429] and a_events.status_code == 429
    assert a[3].headers["Retry-After"] == "1000"
    assert (
        a[3]
        .json()["detail"]
        .startswith("rate limit of this API key reached (LAMBDAREC_SERVING_RATE_LIMIT_PER_S)")
    )
    assert b.status_code == 200
    assert 'lambdarec_refused_requests_total{reason="rate_limited"} 2.0' in metrics.splitlines()


async def test_prefetches_running_at_once_are_capped(serving_settings, store_writer, running):
    store_writer.publish_batch("v1", users={}, items={}, popular=[("i1", 1.0, "popular")])
    capped = serving_settings.updated(serving_max_prefetches=2)
    app = create_app(capped)
    async with running(app) as api:
        posted = await api.post("/v1/events", json=[event(f"e{n}", user_id=f"u{n}") for n in range(5)])
        await app.state.services.recommender.drain_prefetches()
        metrics = (await api.get("/metrics")).text.splitlines()
    assert posted.status_code == 202
    assert 'lambdarec_prefetches_total{outcome="skipped"} 3.0' in metrics
    assert 'lambdarec_prefetches_total{outcome="done"} 2.0' in metrics

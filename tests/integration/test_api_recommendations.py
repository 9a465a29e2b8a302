"""GET /v1/recommendations against a real redis-server and a real MLflow with a tiny trained ranker:
merging batch and real-time candidates, excluding consumed items, reacting to a user's events through
the speed layer, following batch pointer flips, and hot-swapping the champion."""

from __future__ import annotations

import asyncio
import time

import pytest

from feature_store.ranking import ITEM_INPUTS, USER_INPUTS
from feature_store.redis_keys import RedisKeys
from serving.app import create_app
from serving.schemas import Recommendations
from serving.tuning import ServingSwitches

pytestmark = pytest.mark.integration

CATEGORIES = {
    "i0": "books",
    "i1": "books",
    "i2": "books",
    "i3": "games",
    "i4": "games",
    "i5": "music",
    "i6": "music",
    "i7": "music",
    "i8": "music",
    "i9": "music",
}
NOW_MS = int(time.time() * 1000)


def user_vector(value: float) -> list[float]:
    return [value] * len(USER_INPUTS)


def item_vector(value: float) -> list[float]:
    return [value] * len(ITEM_INPUTS)


def publish_v1(store_writer, version: str = "v1", u1_recs=None) -> None:
    store_writer.publish_batch(
        version,
        users={
            "u1": {
                "recs": u1_recs
                or [("i1", 0.9, "als"), ("i2", 0.8, "als"), ("i3", 0.7, "covisit"), ("i4", 0.6, "popular")],
                "features": user_vector(1.0),
                "affinity": {"books": 0.6, "games": 0.4},
                "seen": ["i0"],
            }
        },
        items={
            i: {"features": item_vector(float(n)), "category": c}
            for n, (i, c) in enumerate(CATEGORIES.items())
        },
        similar={"i5": [("i6", 0.5, "covisit")]},
        popular=[("i7", 100.0, "popular"), ("i8", 90.0, "popular"), ("i9", 80.0, "popular")],
    )


def sources_of(body: dict) -> dict[str, tuple[str, str | None]]:
    return {item["item_id"]: (item["source"], item["because"]) for item in body["items"]}


async def test_merges_batch_and_real_time_candidates_minus_consumed(
    model_settings, ranker_dirs, store_writer, log_ranker, running
):
    version = log_ranker(model_settings, ranker_dirs[0])
    publish_v1(store_writer)
    store_writer.user_event("u1", "i5", "view", NOW_MS, "music")
    store_writer.covisit("i5", {"i8": 3.0, "i0": 1.0})
    store_writer.trending("1h", {"i9": 5.0})

    async with running(create_app(model_settings)) as api:
        response = await api.get(
            "/v1/recommendations/u1", params={"k": 20, "exclude": ["i2", "unknown-item"]}
        )

    assert response.status_code == 200
    body = response.json()
    assert sources_of(body) == {
        "i1": ("batch", None),
        "i3": ("batch", None),
        "i4": ("batch", None),
        "i6": ("similar", "i5"),
        "i8": ("covisit", "i5"),
        "i9": ("trending", None),
        "i7": ("popular", None),  # the pool (6) was thinner than k: topped up from popularity
    }
    assert (body["batch_version"], body["model_version"], body["degraded"], body["candidates"]) == (
        "v1",
        version,
        False,
        7,
    )
    assert [i["score"] for i in body["items"]] == sorted((i["score"] for i in body["items"]), reverse=True)
    assert {i["item_id"]: i["category"] for i in body["items"]} == {
        i: CATEGORIES[i] for i in sources_of(body)
    }
    # the answer is the `Recommendations` wire model, serialized by pydantic: it reads back unchanged
    assert Recommendations.model_validate(body).model_dump(mode="json") == body


async def test_zero_trending_candidates_and_neighbours_propose_none_of_them(
    serving_settings, store_writer, running
):
    """0 means none (a Redis range of 0..-1 would read the whole sorted set)."""
    publish_v1(store_writer)
    store_writer.user_event("u1", "i5", "view", NOW_MS, "music")
    store_writer.covisit("i5", {"i8": 3.0})
    store_writer.trending("1h", {"i9": 5.0})
    settings = serving_settings.updated(serving_trending_candidates=0, serving_neighbors_per_item=0)

    async with running(create_app(settings)) as api:
        body = (await api.get("/v1/recommendations/u1", params={"k": 20})).json()

    assert sources_of(body) == {
        "i1": ("batch", None),
        "i2": ("batch", None),
        "i3": ("batch", None),
        "i4": ("batch", None),
        "i7": ("popular", None),  # the thin pool's top-up, as without the zeros
        "i8": ("popular", None),
        "i9": ("popular", None),
    }


async def test_answer_follows_the_users_events_through_the_speed_layer(
    model_settings, ranker_dirs, store_writer, redis_client, log_ranker, run_speed_layer, running
):
    log_ranker(model_settings, ranker_dirs[0])
    publish_v1(store_writer)
    store_writer.covisit("i5", {"i8": 3.0})
    app = create_app(model_settings)
    async with running(app) as api:
        before = (await api.get("/v1/recommendations/u9", params={"k": 10})).json()
        events = [
            {
                "event_id": "e1",
                "user_id": "u9",
                "item_id": "i5",
                "event_type": "view",
                "ts": NOW_MS - 2000,
                "context": {"category": "music"},
            },
            {"event_id": "e2", "user_id": "u9", "item_id": "i3", "event_type": "click", "ts": NOW_MS - 1000},
        ]
        posted = await api.post("/v1/events", json={"events": events})
        assert posted.status_code == 202
        assert posted.json()["accepted"] == 2
        services = app.state.services
        await services.recommender.drain_prefetches()
        # the prefetch read u9's batch keys and the neighbours of the items just touched
        assert "u9" in services.store.cache.users and "i6" in services.store.cache.items
        assert run_speed_layer(redis_client, model_settings, batch_id=1) == 2
        after = (await api.get("/v1/recommendations/u9", params={"k": 10})).json()

    assert sources_of(before) == {"i7": ("popular", None), "i8": ("popular", None), "i9": ("popular", None)}
    got = sources_of(after)
    assert "i5" not in got and "i3" not in got  # just consumed
    assert got["i6"] == ("similar", "i5")
    assert got["i8"] == ("covisit", "i5")
    assert {"i7", "i9"} <= set(got)


async def test_pointer_flip_serves_the_new_batch_version(serving_settings, store_writer, running):
    publish_v1(store_writer)
    app = create_app(serving_settings)
    async with running(app) as api:
        first = (await api.get("/v1/recommendations/u1", params={"k": 3})).json()
        publish_v1(store_writer, "v2", u1_recs=[("i8", 0.9, "als"), ("i9", 0.8, "als"), ("i7", 0.7, "als")])
        second = (await api.get("/v1/recommendations/u1", params={"k": 3})).json()
        resets = app.state.services.store.cache.resets

    assert (first["batch_version"], [i["item_id"] for i in first["items"]]) == ("v1", ["i1", "i2", "i3"])
    assert (second["batch_version"], [i["item_id"] for i in second["items"]]) == ("v2", ["i8", "i9", "i7"])
    assert first["model_version"] is None and second["model_version"] is None  # no model registered yet
    assert resets == 2  # start-up (none -> v1), then the flip


async def test_diversity_cap_and_page_category(serving_settings, store_writer, running):
    publish_v1(
        store_writer, u1_recs=[("i1", 0.9, "als"), ("i2", 0.8, "als"), ("i3", 0.7, "als"), ("i6", 0.6, "als")]
    )
    capped = serving_settings.updated(serving_max_per_category=1)
    async with running(create_app(capped)) as api:
        diverse = (await api.get("/v1/recommendations/u1", params={"k": 3})).json()
        games_first = (await api.get("/v1/recommendations/u1", params={"k": 2, "category": "games"})).json()

    assert [i["item_id"] for i in diverse["items"]] == ["i1", "i3", "i6"]
    assert [i["item_id"] for i in games_first["items"]] == ["i3", "i1"]


async def test_context_item_adds_its_neighbours_and_unknown_ids_are_ignored(
    serving_settings, store_writer, running
):
    publish_v1(store_writer)
    async with running(create_app(serving_settings)) as api:
        with_context = (await api.get("/v1/recommendations/u1", params={"k": 20, "item_id": "i5"})).json()
        unknown = await api.get("/v1/recommendations/u1", params={"k": 20, "item_id": "no-such-item"})

    assert sources_of(with_context)["i6"] == ("similar", "i5")
    assert "i5" not in sources_of(with_context)
    assert unknown.status_code == 200
    assert set(sources_of(unknown.json())) == {"i1", "i2", "i3", "i4", "i7", "i8", "i9"}


async def test_champion_hot_swap_fails_no_request(
    model_settings, ranker_dirs, store_writer, log_ranker, set_champion, running
):
    first = log_ranker(model_settings, ranker_dirs[0])
    second = log_ranker(model_settings, ranker_dirs[1], champion=False)
    publish_v1(store_writer)
    app = create_app(model_settings)
    async with running(app) as api:
        services = app.state.services
        seen_versions: list[str] = []
        statuses: list[int] = []
        swapped = asyncio.Event()

        async def keep_asking() -> None:
            while not swapped.is_set() or len(seen_versions) < 20:
                response = await api.get("/v1/recommendations/u1", params={"k": 5})
                statuses.append(response.status_code)
                seen_versions.append(response.json()["model_version"])

        async def move_alias() -> None:
            await asyncio.to_thread(set_champion, model_settings, second)
            assert await services.watcher.check()
            swapped.set()

        await asyncio.gather(keep_asking(), move_alias())

    assert set(statuses) == {200}
    assert seen_versions[0] == first and seen_versions[-1] == second
    assert set(seen_versions) == {first, second}
    # once the new model answered, the old one never came back
    assert seen_versions[seen_versions.index(second) :] == [second] * (
        len(seen_versions) - seen_versions.index(second)
    )
    assert services.holder.swaps == 2


async def test_registry_unreachable_keeps_the_last_good_model(
    model_settings, ranker_dirs, store_writer, monkeypatch, log_ranker, running
):
    from lambdarec.redis_server import free_port

    version = log_ranker(model_settings, ranker_dirs[0])
    publish_v1(store_writer)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    app = create_app(model_settings)
    async with running(app) as api:
        services = app.state.services
        # the registry moves to a server that does not answer (nothing listens on the port)
        services.watcher.settings = model_settings.updated(
            mlflow_tracking_uri=f"http://127.0.0.1:{free_port()}"
        )
        assert not await services.watcher.check()
        response = await api.get("/v1/recommendations/u1", params={"k": 3})
        ready = (await api.get("/readyz")).json()

    assert response.status_code == 200 and response.json()["model_version"] == version
    assert services.holder.registry_errors == 1
    assert ready["model"]["version"] == version and ready["model_error"].startswith("registry unreachable")
    assert ready["ready"] is True


async def test_the_champion_orders_every_candidate_and_priors_only_without_it(
    model_settings, ranker_dirs, store_writer, log_ranker, running
):
    import dataclasses

    import numpy as np

    version = log_ranker(model_settings, ranker_dirs[0])
    publish_v1(store_writer)
    store_writer.user_event("u1", "i5", "view", NOW_MS, "music")
    store_writer.covisit("i5", {"i8": 3.0, "i9": 2.0})
    app = create_app(model_settings)
    async with running(app) as api:
        by_model = (await api.get("/v1/recommendations/u1", params={"k": 20})).json()
        holder = app.state.services.holder
        ranker = holder.current
        seen = []

        def predict_and_keep(matrix):
            seen.append(matrix.copy())
            return ranker.run(matrix)

        holder.current = dataclasses.replace(ranker, run=predict_and_keep)
        again = (await api.get("/v1/recommendations/u1", params={"k": 20})).json()

        def broken(matrix):
            raise RuntimeError("the ranker is broken")

        holder.current = dataclasses.replace(ranker, run=broken)
        after_failure = (await api.get("/v1/recommendations/u1", params={"k": 20})).json()
    async with running(create_app(model_settings.updated(serving_use_ranker=False))) as api:
        by_priors = (await api.get("/v1/recommendations/u1", params={"k": 20})).json()

    assert (by_model["ranked_by"], by_model["model_version"], by_model["degraded"]) == (
        "model",
        version,
        False,
    )
    assert again == by_model
    # the answer's scores are the champion's own scores of the candidates, best first
    scores = np.asarray(ranker.run(seen[0]), dtype=np.float32).reshape(-1)
    assert sorted((round(float(s), 6) for s in scores), reverse=True) == [
        item["score"] for item in by_model["items"]
    ]
    assert (after_failure["ranked_by"], after_failure["model_version"], after_failure["degraded"]) == (
        "priors",
        None,
        True,
    )
    assert (by_priors["ranked_by"], by_priors["model_version"], by_priors["degraded"]) == (
        "priors",
        None,
        False,
    )
    assert [i["item_id"] for i in after_failure["items"]] == [i["item_id"] for i in by_priors["items"]]
    assert max(i["score"] for i in by_priors["items"]) <= 1.0


async def test_micro_batching_gives_the_same_answers(
    model_settings, ranker_dirs, store_writer, log_ranker, running
):
    log_ranker(model_settings, ranker_dirs[0])
    publish_v1(store_writer)
    store_writer.user_event("u1", "i5", "view", NOW_MS, "music")
    answers = {}
    for enabled in (False, True):
        app = create_app(
            model_settings.updated(serving_microbatch_enabled=enabled, serving_microbatch_wait_ms=5.0)
        )
        async with running(app) as api:
            responses = await asyncio.gather(
                *[api.get("/v1/recommendations/u1", params={"k": 5}) for _ in range(8)]
            )
            answers[enabled] = [r.json()["items"] for r in responses]
            batcher = app.state.services.recommender.batcher
    assert answers[True] == answers[False]
    assert all(a == answers[False][0] for a in answers[False])
    assert batcher.requests == 8 and batcher.calls < 8


async def test_similar_items_merge_batch_and_speed_neighbours(serving_settings, store_writer, running):
    publish_v1(store_writer)
    store_writer.covisit("i5", {"i8": 3.0, "i6": 1.0})
    async with running(create_app(serving_settings)) as api:
        body = (await api.get("/v1/items/i5/similar", params={"k": 5})).json()
        unknown = (await api.get("/v1/items/nothing/similar")).json()

    assert [(i["item_id"], i["source"], i["sources"]) for i in body["items"]] == [
        ("i8", "covisit", ["covisit"]),
        ("i6", "similar", ["covisit", "similar"]),
    ]
    assert (body["batch_version"], body["degraded"]) == ("v1", False)
    assert unknown["items"] == []


async def test_model_pointer_written_for_operators(
    model_settings, ranker_dirs, redis_client, log_ranker, running
):
    version = log_ranker(model_settings, ranker_dirs[0])
    async with running(create_app(model_settings)):
        pass
    stored = redis_client.hgetall(RedisKeys().model_pointer)
    assert (stored[b"name"].decode(), stored[b"version"].decode(), stored[b"backend"].decode()) == (
        model_settings.ranker.model_name,
        version,
        "onnx",
    )


async def test_every_hot_path_switch_gives_the_same_answer(
    model_settings, ranker_dirs, store_writer, log_ranker, running
):
    """The pipelined reader, the cache, the direct route and orjson are optimizations:
    switched off (one at a time, or all) the API answers exactly the same JSON, ranker scores included."""
    log_ranker(model_settings, ranker_dirs[0])
    publish_v1(store_writer)
    store_writer.user_event("u1", "i5", "view", NOW_MS, "music")
    store_writer.covisit("i5", {"i8": 3.0, "i0": 1.0, "i9": 2.0})
    store_writer.trending("1h", {"i9": 5.0, "i3": 4.0})
    queries = [{"k": 20}, {"k": 3, "category": "music"}, {"k": 4, "exclude": ["i1"], "item_id": "i5"}]
    capped = {"serving_max_per_category": 1}
    no_cache = {"serving_cache_enabled": False}
    variants = [  # (settings, switches)
        ({}, ServingSwitches()),
        ({}, ServingSwitches(fast_redis=False)),
        (no_cache, ServingSwitches()),
        ({}, ServingSwitches(fast_route=False)),
        ({}, ServingSwitches(orjson=False)),
        (no_cache, ServingSwitches(fast_redis=False, fast_route=False)),
    ]
    answers = []
    for overrides, switches in variants:
        for extra in ({}, capped):
            settings = model_settings.updated(**overrides, **extra)
            async with running(create_app(settings, switches=switches)) as api:
                answers.append(
                    [
                        (await api.get(f"/v1/recommendations/{user}", params=query)).json()
                        for user in ("u1", "u-new")
                        for query in queries
                    ]
                )
    for n, overrides in enumerate(variants):
        assert answers[2 * n] == answers[0], overrides
        assert answers[2 * n + 1] == answers[1], (overrides, capped)
    assert answers[0][0]["model_version"] is not None and len(answers[0][0]["items"]) == 8
    assert answers[0] != answers[1]  # the category cap does change the answer

"""Parity of the real-time ranker inputs across engines, on real code paths.

Events go through the streaming job's micro-batch code (`SpeedWriter.process`: validation, catalog
categories, the planned operations and the Lua apply) into a real redis-server, in several batches;
the real API's recommender then assembles its ranker matrix from what the speed layer and the batch
publish wrote. Every real-time column equals the definition at that instant
(`feature_store.realtime.reference_features`, which tests/spark/test_realtime_features_in_spark.py holds equal
to Spark's point-in-time rebuild used for training), and every batch column equals what was published.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pytest

from feature_store.event_bus import EVENT_FIELD
from feature_store.genres import GENRE_INPUTS, genre_inputs
from feature_store.ranking import (
    CANDIDATE_SOURCES,
    ITEM_INPUTS,
    NIGHTLY_INPUTS,
    POOL_INPUTS,
    RANKER_FEATURES,
    REALTIME_INPUTS,
    USER_INPUTS,
)
from feature_store.realtime import from_session, realtime_params, reference_features
from serving.app import create_app
from tests.realtime_data import random_events

pytestmark = pytest.mark.integration


def iso(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, UTC).isoformat().replace("+00:00", "Z")


async def test_serving_matrix_equals_the_definition_and_the_published_batch(
    serving_settings, store_writer, redis_client, running
):
    from spark_jobs.streaming.speed_job import SpeedWriter

    serving_settings = serving_settings.updated(serving_recent_items=3)
    events = random_events(seed=5, users=3, items=16, n=90)
    items = sorted({e.item_id for e in events})
    categories = {
        item: f"c{n % 3}" for n, item in enumerate(items[:-1])
    }  # the last one is not in the catalog
    similar = {
        item: [(items[(n + 1) % len(items)], 0.5), (items[(n + 5) % len(items)], 0.25)]
        for n, item in enumerate(items)
    }
    genre_profiles = {"u0": {"g0": 0.75, "g1": 0.25}, "u1": {"g2": 1.0}}  # u2 has none
    genres = {item: ("g0", "g1", "g2")[: n % 4] for n, item in enumerate(items)}
    recs = {
        "u0": [
            (items[1], 0.9, "batch"),
            (items[6], 0.8, "batch"),
            (items[1], 0.4, "als"),
            (items[6], 3.0, "popular"),
        ]
    }
    pool = {
        "u0": [[0.5] + [float("nan")] * (len(POOL_INPUTS) - 1), [0.25 * c for c in range(len(POOL_INPUTS))]]
    }
    store_writer.publish_batch(
        "v1",
        users={
            u: {
                "recs": recs.get(u, []),
                "features": [float(n)] * len(USER_INPUTS),
                "affinity": {"c0": 0.5},
                **({"genres": genre_profiles[u]} if u in genre_profiles else {}),
                **({"pool": pool[u]} if u in pool else {}),
            }
            for n, u in enumerate(("u0", "u1", "u2"))
        },
        items={
            i: {
                "features": [float(n)] * len(ITEM_INPUTS),
                "category": categories.get(i, ""),
                "genres": genres[i],
            }
            for n, i in enumerate(items)
        },
        similar={
            seed: [(item, score, "covisit") for item, score in neighbours]
            for seed, neighbours in similar.items()
        },
        popular=[(items[3], 10.0, "popular")],
    )
    redis_client.hdel("lr:b:v1:categories", items[-1])
    writer = SpeedWriter(redis_client, serving_settings)
    payloads = [
        (
            f"{e.ts_ms}-0",
            e.ts_ms,
            f'{{"event_id":"{e.event_id}","user_id":"{e.user_id}","item_id":"{e.item_id}",'
            f'"event_type":"{e.event_type}","ts":"{iso(e.ts_ms)}"}}',
        )
        for e in events
    ]
    # bus entries as the source ships them: (entry_id, bus_time_ms, raw, size_bytes)
    entries = [(entry_id, ms, raw, len(raw.encode())) for entry_id, ms, raw in payloads]
    for batch_id, start in enumerate(range(0, len(entries), 13)):  # several micro-batches, in bus order
        writer.process(entries[start : start + 13], batch_id)
    assert EVENT_FIELD == "event"

    t_ms = events[-1].ts_ms
    params = realtime_params(serving_settings)
    app = create_app(serving_settings)
    checked = genre_checked = nightly_checked = 0
    async with running(app):
        recommender = app.state.services.recommender
        for user in ("u0", "u1", "u2"):
            view, columns, found, signals = await recommender._gather(user, None, frozenset(), 10)
            block, cats, item_genres = recommender._item_block(view.version, columns.item_ids, found)
            session_events, shares = from_session(view.session)
            matrix = recommender._matrix(
                view, columns, block, cats, item_genres, shares, session_events, signals
            )
            expected_rt = reference_features(
                events, user, t_ms, columns.item_ids, categories, similar, params
            )
            published = {item: {} for item, _, _ in recs.get(user, [])}
            for item, score, source in recs.get(user, []):
                if source in CANDIDATE_SOURCES:
                    published[item][f"cand_{source}"] = score
            batch_items = [item for item, _, source in recs.get(user, []) if source == "batch"]
            for item, values in zip(batch_items, pool.get(user, [])):
                published[item].update((n, v) for n, v in zip(POOL_INPUTS, values) if not math.isnan(v))
            for row, item in enumerate(columns.item_ids):
                got = dict(zip(RANKER_FEATURES, matrix[row].tolist()))
                assert tuple(got[name] for name in REALTIME_INPUTS) == pytest.approx(
                    expected_rt[item], rel=1e-6
                ), (user, item)
                assert tuple(got[name] for name in GENRE_INPUTS) == pytest.approx(
                    genre_inputs(genre_profiles.get(user, {}), genres[item]), rel=1e-6, nan_ok=True
                ), (user, item)
                genre_checked += not math.isnan(got[GENRE_INPUTS[0]])
                for name in NIGHTLY_INPUTS:
                    value = published.get(item, {}).get(name)
                    assert math.isnan(got[name]) if value is None else got[name] == pytest.approx(value), (
                        user,
                        item,
                        name,
                    )
                    nightly_checked += value is not None and name in POOL_INPUTS
                assert got[USER_INPUTS[0]] == float(("u0", "u1", "u2").index(user))
                assert (
                    got[ITEM_INPUTS[0]] == float(items.index(item))
                    if item in items
                    else np.isnan(got[ITEM_INPUTS[0]])
                )
                checked += 1
    # the history carries signal of every kind, so the equalities above compared real values
    all_rt = [
        reference_features(events, u, t_ms, items, categories, similar, params) for u in ("u0", "u1", "u2")
    ]
    assert all(
        any(values[n] > 0 for rt in all_rt for values in rt.values()) for n in range(len(REALTIME_INPUTS))
    )
    assert checked >= 15 and genre_checked >= 5
    # all of items[6]'s pool row (items[1], the other batch rec, is no candidate of this request)
    assert nightly_checked == len(POOL_INPUTS)

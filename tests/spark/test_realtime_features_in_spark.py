"""Spark's point-in-time rebuild of the real-time inputs equals their definition (the oracle in
feature_store.realtime), value for value, on a hand-checked history and on random sessions."""

from datetime import UTC, datetime

import pytest

from feature_store.realtime import REALTIME_INPUTS, reference_features
from spark_jobs.realtime_features import realtime_inputs, realtime_state
from tests.realtime_data import CATEGORIES, EVENTS, MIN, PARAMS, SIMILAR, START_MS, random_events


def interactions_of(spark, events):
    rows = [
        (
            e.event_id,
            e.user_id,
            e.item_id,
            e.event_type,
            datetime.fromtimestamp(e.ts_ms / 1000, UTC).replace(tzinfo=None),
            None,
            None,
            1.0,
            None,
            False,
            1,
            f"{e.user_id}:s",
            datetime.fromtimestamp(e.ts_ms / 1000, UTC).date(),
        )
        for e in events
    ]
    from feature_store.tables import INTERACTIONS

    return spark.createDataFrame(rows, INTERACTIONS.ddl)


def spark_features(spark, events, asks, categories, similar):
    """{(user, t_ms, item): REALTIME_INPUTS values} for asks [(user, t_ms, [items])]."""
    candidates = spark.createDataFrame(
        [(u, t, i) for u, t, items in asks for i in items], "user_id string, t_ms long, item_id string"
    )
    moments = candidates.select("user_id", "t_ms").distinct()
    cats = spark.createDataFrame(sorted(categories.items()), "item_id string, category string")
    sim = spark.createDataFrame(
        [
            (seed, item, score, rank)
            for seed, items in similar.items()
            for rank, (item, score) in enumerate(items, 1)
        ],
        "item_id string, similar_item_id string, score double, rank int",
    )
    state = realtime_state(interactions_of(spark, events), moments, cats, sim, PARAMS)
    rows = realtime_inputs(candidates, state, cats).collect()
    return {(r.user_id, r.t_ms, r.item_id): tuple(r[name] for name in REALTIME_INPUTS) for r in rows}


def oracle(events, asks, categories, similar):
    return {
        (u, t, item): values
        for u, t, items in asks
        for item, values in reference_features(events, u, t, items, categories, similar, PARAMS).items()
    }


def test_spark_rebuild_of_a_hand_checked_history(spark):
    asks = [
        ("u1", START_MS + 31 * MIN, ["a", "b", "c"]),
        ("u1", START_MS + 3 * MIN, ["a", "e"]),
        ("u3", START_MS, ["a"]),
    ]
    got = spark_features(spark, EVENTS, asks, CATEGORIES, SIMILAR)
    assert got == {
        ("u1", START_MS + 31 * MIN, "a"): (1.0, 0.0, 2.0, 0.25, 1.5, 0.5),
        ("u1", START_MS + 31 * MIN, "b"): (1.0, 0.0, 2.0, 0.0, 1.5, 0.0),
        ("u1", START_MS + 31 * MIN, "c"): (1.0, 0.0, 0.0, 0.6, 0.0, 1.5),
        ("u1", START_MS + 3 * MIN, "a"): (4.0, pytest.approx(2 / 3), 1.0, 0.0, 1.0, 0.0),
        ("u1", START_MS + 3 * MIN, "e"): (4.0, pytest.approx(1 / 3), 0.0, 0.0, 0.0, 0.0),
        ("u3", START_MS, "a"): (0.0, 0.0, 0.0, 0.0, 0.0, 0.0),  # no events: nothing
    }


def test_spark_rebuild_equals_the_definition_on_random_sessions(spark):
    events = random_events(seed=3)
    items = sorted({e.item_id for e in events})
    categories = {item: f"c{n % 3}" for n, item in enumerate(items[:-1])}  # the last item has no category
    similar = {items[0]: [(items[1], 0.5), (items[2], 0.25)], items[3]: [(items[1], 0.125)]}
    asks = [(e.user_id, e.ts_ms, items) for e in events[10::7]]
    got = spark_features(spark, events, asks, categories, similar)
    expected = oracle(events, asks, categories, similar)
    assert set(got) == set(expected)
    assert {k: tuple(round(v, 9) for v in vals) for k, vals in got.items()} == {
        k: tuple(round(v, 9) for v in vals) for k, vals in expected.items()
    }
    assert all(any(v[n] > 0 for v in expected.values()) for n in (2, 3, 4, 5))

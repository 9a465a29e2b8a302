import math
from datetime import date

from pyspark.testing import assertDataFrameEqual

from feature_store.genres import GENRE_INPUTS, genre_inputs
from feature_store.ranking import RANKER_FEATURES
from spark_jobs.candidates import CandidateParams, build_candidates
from spark_jobs.training_set import build_training_set, graded_labels, ranker_inputs
from tests.batch_models_data import interaction, interactions_df, item_features_df, user_features_df

T = date(2024, 1, 10)
NEXT = "2024-01-11"

BEFORE = [
    interaction("u1", "a", "2024-01-09 10:00", session="s1"),
    interaction("u1", "b", "2024-01-09 10:05", session="s1"),
    interaction("u2", "a", "2024-01-08 09:00", session="s2"),
    interaction("u3", "b", "2024-01-09 23:59", session="s3"),
]
AFTER = [
    interaction("u1", "c", "2024-01-10 00:00", "purchase", session="s4"),  # exactly at T: a label
    interaction("u1", "c", "2024-01-10 00:01", "view", session="s4"),  # weaker event on the same item
    interaction("u1", "d", "2024-01-11 12:00", "click", session="s5"),
    interaction("u1", "e", "2024-01-12 00:00", "purchase", session="s6"),  # at T + horizon: outside
    interaction("u3", "c", "2024-01-10 08:00", "skip", session="s7"),  # negative signal: not a label
    interaction("u3", "d", "2024-01-11 08:00", "view", session="s7"),
]

CANDIDATE_ROWS = [
    (T, "als", "u1", "c", 0.9, 1),
    (T, "als", "u1", "d", 0.5, 2),
    (T, "popular", "u1", "c", 3.0, 1),
    (T, "covisit", "u1", "e", 0.7, 1),
    (T, "popular", "u1", "f", 2.0, 2),
    (T, "als", "u2", "c", 0.4, 1),
    (T, "popular", "u3", "c", 3.0, 1),
    (T, "popular", "u3", "d", 2.0, 2),
    # computed for a later cut-off: it saw events after T and must not be read
    (date(2024, 1, 11), "als", "u1", "c", 99.0, 1),
]


U1_GENRES = {"cat1": 0.6, "cat2": 0.4}
ITEM_GENRES = {"c": ("cat1", "cat3"), "d": ("cat2",)}


def vector(user=None, item=None, affinity=None, cand=None, genres=None):
    """genres: (the user's profile, the item's genres), whose inputs feature_store.genres defines."""
    values = {**(user or {}), **(item or {}), **{f"cand_{s}": v for s, v in (cand or {}).items()}}
    if affinity is not None:
        values["ui_category_affinity"] = affinity
    if genres is not None and genres[0] and genres[1]:
        values.update(zip(GENRE_INPUTS, genre_inputs(*genres)))
    return [values.get(name) for name in RANKER_FEATURES]


def as_none(values):
    return [None if (v is None or math.isnan(v)) else v for v in values]


def gold(spark):
    users = user_features_df(
        spark,
        [
            (
                "2024-01-10",
                "u1",
                {"user_events_7d": 2.0, "user_lifetime_events": 2.0},
                {"cat1": 0.25, "cat2": 0.75},
                U1_GENRES,
            ),
            ("2024-01-10", "u3", {"user_events_7d": 1.0}, {"cat1": 1.0}),
            ("2024-01-11", "u1", {"user_events_7d": 100.0, "user_lifetime_events": 100.0}, {"cat1": 1.0}),
        ],
    )
    items = item_features_df(
        spark,
        [
            ("2024-01-10", "c", "cat1", {"item_events_7d": 3.0, "item_avg_rating": 4.5}, ["cat1", "cat3"]),
            ("2024-01-10", "d", "cat2", {"item_events_7d": 1.0}, ["cat2"]),
            ("2024-01-10", "f", "cat3", {"item_events_7d": 7.0}),
            ("2024-01-11", "c", "cat1", {"item_events_7d": 1000.0}),
        ],
    )
    return users, items


def candidates_df(spark):
    return spark.createDataFrame(
        CANDIDATE_ROWS, "as_of date, source string, user_id string, item_id string, score double, rank int"
    )


def test_graded_labels_use_the_strongest_positive_event_in_the_window(spark):
    labels = graded_labels(interactions_df(spark, BEFORE + AFTER), T, horizon_days=2)
    assertDataFrameEqual(
        labels,
        spark.createDataFrame(
            [("u1", "c", 8.0), ("u1", "d", 2.0), ("u3", "d", 1.0)],
            "user_id STRING, item_id STRING, relevance DOUBLE",
        ),
    )


def test_ranker_inputs_follow_the_contract_order_and_read_only_cutoff_partitions(spark):
    users, items = gold(spark)
    got = {
        (r.user_id, r.item_id): (as_none(r.features), r.sources)
        for r in ranker_inputs(candidates_df(spark), users, items, T).collect()
    }
    u1 = {"user_events_7d": 2.0, "user_lifetime_events": 2.0}
    # a source's input is 1 / the item's rank in that source's list, whatever its raw score
    assert got == {
        ("u1", "c"): (
            vector(
                u1,
                {"item_events_7d": 3.0, "item_avg_rating": 4.5},
                0.25,
                {"als": 1.0, "popular": 1.0},
                (U1_GENRES, ITEM_GENRES["c"]),
            ),
            ["als", "popular"],
        ),
        ("u1", "d"): (
            vector(u1, {"item_events_7d": 1.0}, 0.75, {"als": 0.5}, (U1_GENRES, ITEM_GENRES["d"])),
            ["als"],
        ),
        ("u1", "e"): (vector(u1, None, None, {"covisit": 1.0}), ["covisit"]),
        ("u1", "f"): (vector(u1, {"item_events_7d": 7.0}, None, {"popular": 0.5}), ["popular"]),
        ("u2", "c"): (
            vector(None, {"item_events_7d": 3.0, "item_avg_rating": 4.5}, None, {"als": 1.0}),
            ["als"],
        ),
        ("u3", "c"): (
            vector(
                {"user_events_7d": 1.0},
                {"item_events_7d": 3.0, "item_avg_rating": 4.5},
                1.0,
                {"popular": 1.0},
            ),
            ["popular"],
        ),
        ("u3", "d"): (
            vector({"user_events_7d": 1.0}, {"item_events_7d": 1.0}, None, {"popular": 0.5}),
            ["popular"],
        ),
    }


def test_training_set_joins_labels_and_keeps_users_with_signal(spark):
    users, items = gold(spark)
    interactions = interactions_df(spark, BEFORE + AFTER)
    got = build_training_set(
        candidates_df(spark), users, items, interactions, T, horizon_days=2, max_negatives=2
    )
    assert got.columns == ["as_of", "user_id", "item_id", "features", "relevance"]
    # u2 has no label (dropped); u1's e is outside the window -> a negative; u3's skip on c -> a negative.
    assert sorted((r.as_of, r.user_id, r.item_id, r.relevance) for r in got.collect()) == [
        (T, "u1", "c", 8.0),
        (T, "u1", "d", 2.0),
        (T, "u1", "e", 0.0),
        (T, "u1", "f", 0.0),
        (T, "u3", "c", 0.0),
        (T, "u3", "d", 1.0),
    ]
    sampled = build_training_set(
        candidates_df(spark), users, items, interactions, T, horizon_days=2, max_negatives=1
    ).collect()
    u1_negatives = [r.item_id for r in sampled if r.user_id == "u1" and r.relevance == 0]
    assert len(u1_negatives) == 1 and u1_negatives[0] in {"e", "f"}
    again = build_training_set(
        candidates_df(spark), users, items, interactions, T, horizon_days=2, max_negatives=1
    ).collect()
    assert sorted(r.item_id for r in again if r.user_id == "u1") == sorted(
        r.item_id for r in sampled if r.user_id == "u1"
    )


def test_no_feature_sees_events_after_the_cutoff(spark):
    """Point-in-time proof: rewrite everything at or after T (other items, other users, more events) and
    rebuild gold features (the data layer's builders), candidates and ranker inputs from the raw
    interactions: every feature of every candidate is unchanged, only the labels move."""
    from datetime import timedelta

    from spark_jobs.features import build_item_features, build_user_features

    params = CandidateParams(per_source=3, als_rank=2, als_max_iter=3, covisit_window_minutes=600)
    altered_future = [
        interaction("u1", "a", "2024-01-10 00:00", "purchase", session="x1"),
        interaction("u2", "b", "2024-01-10 00:00", "purchase", session="x2"),
        interaction("u3", "a", "2024-01-10 05:00", "purchase", session="x3"),
        interaction("u9", "z", "2024-01-10 06:00", "purchase", session="x4"),
        *[interaction(f"n{i}", "b", "2024-01-10 07:00", "purchase", session=f"y{i}") for i in range(5)],
    ]

    def build(rows):
        interactions = interactions_df(spark, rows)
        users = build_user_features(interactions, None, T, T + timedelta(days=1))
        items = build_item_features(interactions, None, T, T + timedelta(days=1))
        active = spark.createDataFrame([("u1",), ("u2",), ("u3",)], "user_id string")
        sources, _ = build_candidates(interactions, active, T, params)
        candidates = sources["als"].unionByName(sources["covisit"]).unionByName(sources["popular"])
        inputs = {
            (r.user_id, r.item_id): as_none(r.features)
            for r in ranker_inputs(candidates, users, items, T).collect()
        }
        labels = sorted(tuple(r) for r in graded_labels(interactions, T, 2).collect())
        return inputs, labels

    inputs, labels = build(BEFORE + AFTER)
    inputs_altered, labels_altered = build(BEFORE + altered_future)
    # the inputs carry real gold values (not all missing), and not one of them moved
    assert inputs and any(v is not None for vector in inputs.values() for v in vector[:18])
    assert inputs == inputs_altered
    assert labels != labels_altered

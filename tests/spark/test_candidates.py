import math
from datetime import date

import numpy as np
import pytest
from pyspark.sql import functions as F

from feature_store.ranking import CANDIDATE_SOURCES, POOL_SCORERS
from spark_jobs.candidates import (
    CandidateParams,
    ItemItemModel,
    active_users,
    als_candidates,
    als_factors,
    build_candidates,
    covisit_candidates,
    covisit_similar,
    ease_candidates,
    ease_items,
    ease_weights,
    fit_ease,
    fit_pool_scorers,
    gram_entries,
    history_before,
    implicit_weights,
    item_gram,
    next_items,
    pool_scores,
    popular_candidates,
    popularity,
    recent_items,
    rp3beta_weights,
    seen_items,
)
from tests.batch_models_data import interaction, interactions_df

AS_OF = date(2024, 1, 10)

ROWS = [
    interaction("u1", "a", "2024-01-08 10:00", session="s1"),
    interaction("u1", "b", "2024-01-08 10:05", session="s1"),
    interaction("u1", "c", "2024-01-08 10:10", session="s1"),
    # 110 minutes after c: same session id, but outside the 60-minute co-visitation window.
    interaction("u1", "f", "2024-01-08 12:00", session="s1"),
    interaction("u2", "a", "2024-01-09 09:00", session="s2"),
    interaction("u2", "b", "2024-01-09 09:02", session="s2"),
    interaction("u2", "d", "2024-01-09 20:00", session="s3"),
    interaction("u3", "c", "2024-01-09 11:00", "click", session="s4"),
    interaction("u3", "e", "2024-01-09 11:30", session="s4"),
    # At and after the cut-off: no source may see these.
    interaction("u1", "d", "2024-01-10 00:00", "purchase", session="s5"),
    interaction("u3", "f", "2024-01-11 08:00", "purchase", session="s6"),
]


@pytest.fixture
def interactions(spark):
    return interactions_df(spark, ROWS)


@pytest.fixture(scope="module")
def every_source(spark):
    """build_candidates with every source over ROWS for three users, once for the module's tests."""
    users = spark.createDataFrame([("u1",), ("u2",), ("u3",)], "user_id string")
    params = CandidateParams(per_source=2, als_rank=2, als_max_iter=3)
    sources, similar = build_candidates(interactions_df(spark, ROWS), users, AS_OF, params)
    return {name: df.collect() for name, df in sources.items()}, similar


def rows(df, *cols):
    return sorted(tuple(r[c] for c in cols) for r in df.collect())


def rows_of(entries):
    """Sorted (i, j, users, weight) of collected Gram entries."""
    return sorted(zip(*(entries[c].tolist() for c in ("i", "j", "users", "weight"))))


def test_history_stops_strictly_before_the_cutoff(interactions):
    assert rows(history_before(interactions, AS_OF), "user_id", "item_id") == sorted(
        [
            ("u1", "a"),
            ("u1", "b"),
            ("u1", "c"),
            ("u1", "f"),
            ("u2", "a"),
            ("u2", "b"),
            ("u2", "d"),
            ("u3", "c"),
            ("u3", "e"),
        ]
    )
    assert rows(active_users(interactions, AS_OF, days=1), "user_id") == [("u2",), ("u3",)]


def test_covisit_similar_counts_sessions_within_the_window(interactions):
    similar = covisit_similar(
        history_before(interactions, AS_OF), window_minutes=60, max_span=10, neighbors=50
    )
    got = [
        (i, j, round(s, 6), r) for i, j, s, r in rows(similar, "item_id", "similar_item_id", "score", "rank")
    ]
    half, e_c = 0.5, round(1 / math.sqrt(2), 6)
    assert got == [
        ("a", "b", 1.0, 1),
        ("a", "c", half, 2),
        ("b", "a", 1.0, 1),
        ("b", "c", half, 2),
        ("c", "a", half, 2),
        ("c", "b", half, 3),
        ("c", "e", e_c, 1),
        ("e", "c", e_c, 1),
    ]


def test_covisit_span_bounds_how_far_apart_in_the_session_items_pair(interactions):
    similar = covisit_similar(
        history_before(interactions, AS_OF), window_minutes=60, max_span=1, neighbors=50
    )
    # a-c are two events apart in s1, so with span 1 they only pair via... nothing: gone.
    assert ("a", "c") not in rows(similar, "item_id", "similar_item_id")
    assert ("a", "b") in rows(similar, "item_id", "similar_item_id")


def test_covisit_candidates_expand_recent_items_and_skip_seen(spark, interactions):
    history = history_before(interactions, AS_OF)
    users = spark.createDataFrame([("u1",), ("u2",), ("u3",)], "user_id string")
    similar = covisit_similar(history, 60, 10, 50)
    got = covisit_candidates(recent_items(history, users, 20), similar, seen_items(history), n=2)
    assert [(u, i, round(s, 6), r) for u, i, s, r in rows(got, "user_id", "item_id", "score", "rank")] == [
        ("u1", "e", round(1 / math.sqrt(2), 6), 1),
        ("u2", "c", 1.0, 1),
        ("u3", "a", 0.5, 1),
        ("u3", "b", 0.5, 2),
    ]


def test_popularity_decays_with_age_and_popular_candidates_skip_seen(spark, interactions):
    history = history_before(interactions, AS_OF)
    scores = dict(rows(popularity(history, AS_OF, window_days=30, half_life_days=1.0), "item_id", "score"))

    def decayed(weight, hours_before_cutoff):
        return weight * 0.5 ** (hours_before_cutoff / 24)

    expected = {
        "a": decayed(1, 38) + decayed(1, 15),
        "b": decayed(1, 37 + 55 / 60) + decayed(1, 14 + 58 / 60),
        "c": decayed(1, 37 + 50 / 60) + decayed(2, 13),
        "d": decayed(1, 4),
        "e": decayed(1, 12.5),
        "f": decayed(1, 36),
    }
    assert scores == pytest.approx(expected)
    users = spark.createDataFrame([("u1",), ("u3",)], "user_id string")
    got = popular_candidates(popularity(history, AS_OF, 30, 1.0), users, seen_items(history), n=2, pool=6)
    # by score: c > b > a > d > e > f (b's events are minutes later than a's)
    assert sorted(scores, key=lambda i: -scores[i]) == ["c", "b", "a", "d", "e", "f"]
    assert rows(got, "user_id", "item_id", "rank") == [
        ("u1", "d", 1),
        ("u1", "e", 2),
        ("u3", "a", 2),
        ("u3", "b", 1),
    ]


def test_als_proposes_the_missing_item_of_the_users_taste_group(spark):
    # Two taste groups; each user saw three of their group's four items.
    group_x, group_y = ["x1", "x2", "x3", "x4"], ["y1", "y2", "y3", "y4"]
    data, missing = [], {}
    for g, items in (("x", group_x), ("y", group_y)):
        for u in range(4):
            user = f"{g}u{u}"
            missing[user] = items[u]
            for h, item in enumerate(i for i in items if i != items[u]):
                data.append(interaction(user, item, f"2024-01-0{h + 1} 10:00", "purchase"))
    history = interactions_df(spark, data)
    users = spark.createDataFrame([(u,) for u in missing], "user_id string")
    params = CandidateParams(als_rank=4, als_max_iter=15, als_reg_param=0.01, als_alpha=5.0)
    user_factors, item_factors = als_factors(implicit_weights(history), params)
    got = als_candidates(user_factors, item_factors, users, seen_items(history), n=3).collect()
    top1 = {r.user_id: r.item_id for r in got if r["rank"] == 1}
    assert top1 == missing
    seen = {(r.user_id, r.item_id) for r in seen_items(history).collect()}
    assert not [r for r in got if (r.user_id, r.item_id) in seen]
    assert sorted((r.user_id, r["rank"]) for r in got) == sorted((u, k) for u in missing for k in (1, 2, 3))


def test_build_candidates_writes_every_source_in_the_table_shape(every_source):
    sources, similar = every_source
    assert list(sources) == [*CANDIDATE_SOURCES, *POOL_SCORERS]
    # the pool scorers score exactly the indexed part of what the proposing sources found
    pool = {(r.user_id, r.item_id) for s in CANDIDATE_SOURCES for r in sources[s]}
    for scorer in POOL_SCORERS:
        assert {(r.user_id, r.item_id) for r in sources[scorer]} == pool
    for source, got in sources.items():
        assert list(got[0].asDict()) == ["as_of", "source", "user_id", "item_id", "score", "rank"]
        assert {(r.as_of, r.source) for r in got} == {(AS_OF, source)}
        assert {r["rank"] for r in got} <= ({1, 2} if source in CANDIDATE_SOURCES else set(range(1, 9)))
    # Items first seen after the cut-off are unknown to every source (f was seen before, d by u2).
    assert {r.item_id for got in sources.values() for r in got} <= {"a", "b", "c", "d", "e", "f"}
    assert similar.columns == ["as_of", "item_id", "similar_item_id", "score", "rank"]


def test_sources_left_out_are_not_computed_and_the_scorers_score_what_the_others_proposed(
    spark, interactions, every_source
):
    users = spark.createDataFrame([("u1",), ("u2",), ("u3",)], "user_id string")
    params = CandidateParams(sources=("covisit", "popular"), per_source=2)
    sources, _ = build_candidates(interactions, users, AS_OF, params)
    assert list(sources) == ["covisit", "popular", *POOL_SCORERS]
    everything, _ = every_source
    for source in ("covisit", "popular"):
        assert sorted(sources[source].collect()) == sorted(everything[source])
    pool = {(r.user_id, r.item_id) for s in ("covisit", "popular") for r in sources[s].collect()}
    assert {(r.user_id, r.item_id) for r in sources["rp3beta"].collect()} == pool


def test_ease_proposes_each_users_co_occurring_items_over_the_capped_catalog(spark):
    # {a, b} and {c, d} never meet; e is the 5th most popular item, beyond the cap of 4 (d wins the tie by id).
    seen = spark.createDataFrame(
        [
            ("u1", "a"),
            ("u1", "b"),
            ("u2", "a"),
            ("u2", "b"),
            ("u3", "a"),
            ("u4", "c"),
            ("u4", "d"),
            ("u5", "c"),
            ("u6", "e"),
        ],
        "user_id string, item_id string",
    )
    users = spark.createDataFrame([(f"u{i}",) for i in range(1, 8)], "user_id string")
    items = ease_items(seen, max_items=4)
    assert rows(items, "idx", "item_id") == [(0, "a"), (1, "b"), (2, "c"), (3, "d")]
    # weight: each user counts 1 / their number of indexed items (u3, u5: 1; u1, u2, u4: 1/2)
    four_items = [
        (0, 0, 3, 2.0),
        (0, 1, 2, 1.0),
        (1, 1, 2, 1.0),
        (2, 2, 2, 1.5),
        (2, 3, 1, 0.5),
        (3, 3, 1, 0.5),
    ]
    assert rows(gram_entries(seen, items), "i", "j", "users", "weight") == four_items
    # the Gram matrix collected in parts (pairs bound 3 + 3 + 1 + 3 + 1 + 1 = 12, at most 2 a part: 6
    # parts, some empty) is the same as in one
    whole, split = item_gram(seen, 5), item_gram(seen, 5, pairs_per_collect=2)
    assert list(split.item_ids) == list(whole.item_ids) == ["a", "b", "c", "d", "e"]
    assert rows_of(split.entries) == rows_of(whole.entries) == [*four_items, (4, 4, 1, 1.0)]
    model = fit_ease(seen, whole, lam=1.0, max_items=4)
    got = ease_candidates(seen, users, n=2, model=model)
    # B[a, b] = G[a, b] / (G[a, a] + 1) = 2/4; B[c, d] = 1/3. u1, u2, u4 saw their whole group, u6 only
    # an item beyond the cap, u7 nothing: no proposals.
    assert rows(got, "user_id", "item_id", "score", "rank") == [
        ("u3", "b", 0.5, 1),
        ("u5", "d", float(np.float32(1 / 3)), 1),
    ]
    # a pool scorer's view of a pool others proposed: every indexed item, relative to the user's best
    # (null when that is not positive), ranked; u6's history is beyond the cap, so u6 gets no view
    pool = spark.createDataFrame(
        [("u3", "c"), ("u3", "b"), ("u3", "zz"), ("u5", "d"), ("u6", "a")], "user_id string, item_id string"
    )
    ids = np.array(["a", "b", "c", "d"], dtype=object)
    near = np.zeros((4, 4), dtype=np.float32)
    near[0, 1] = 0.5  # a -> b
    weights = {"ease": near, "neg": -np.ones((4, 4), dtype=np.float32)}
    model = ItemItemModel(items, spark.sparkContext.broadcast((ids, weights)))
    assert rows(pool_scores(seen, pool, model), "source", "user_id", "item_id", "score", "rank") == [
        ("ease", "u3", "b", 1.0, 1),
        ("ease", "u3", "c", 0.0, 2),
        ("ease", "u5", "d", None, 1),
        ("neg", "u3", "b", None, 1),
        ("neg", "u3", "c", None, 2),
        ("neg", "u5", "d", None, 1),
    ]


def test_pool_scorers_are_ease_at_each_lambda_and_rp3beta_over_the_capped_catalog(spark):
    seen = spark.createDataFrame(
        [("u1", "a"), ("u1", "b"), ("u2", "a"), ("u2", "b"), ("u2", "c"), ("u3", "c"), ("u4", "e")],
        "user_id string, item_id string",
    )
    model = fit_pool_scorers(seen, item_gram(seen, 3), max_items=3)
    ids, weights = model.shared.value
    assert ids.tolist() == ["a", "b", "c"] and list(weights) == list(POOL_SCORERS)
    x = np.array([[1, 1, 0], [1, 1, 1], [0, 0, 1]], dtype=np.float64)  # u4's e is beyond the cap
    for name, lam in (("ease100", 100.0), ("ease500", 500.0), ("ease2000", 2000.0)):
        assert weights[name].dtype == np.float32
        np.testing.assert_array_equal(weights[name], ease_weights(x.T @ x, lam).astype(np.float32))
    by_user = x.T @ (x / x.sum(axis=1, keepdims=True))
    expected = rp3beta_weights(by_user, x.sum(axis=0), 0.5).astype(np.float32)
    np.testing.assert_allclose(weights["rp3beta"], expected, rtol=1e-6)


def test_candidate_recall_per_source_and_union(spark, interactions):
    from spark_jobs.evaluation import candidate_pool_recall

    candidates = spark.createDataFrame(
        [
            (AS_OF, "als", "u1", "d", 1.0, 1),
            (AS_OF, "als", "u1", "e", 0.5, 2),
            (AS_OF, "covisit", "u3", "f", 1.0, 1),
            (AS_OF, "popular", "u1", "e", 3.0, 1),
            (AS_OF, "popular", "u3", "a", 2.0, 1),
        ],
        "as_of date, source string, user_id string, item_id string, score double, rank int",
    )
    future = next_items(interactions, AS_OF, horizon_days=7)
    assert rows(future, "user_id", "item_id") == [("u1", "d"), ("u3", "f")]
    relevance = future.withColumn("relevance", F.lit(1.0))
    sources = ("als", "covisit", "popular", "ease")
    assert candidate_pool_recall(candidates, relevance, sources, cutoffs=(1, 2)) == {
        "als@1": 0.5,
        "covisit@1": 0.5,
        "popular@1": 0.0,
        "ease@1": 0.0,
        "union@1": 1.0,
        "als@2": 0.5,
        "covisit@2": 0.5,
        "popular@2": 0.0,
        "ease@2": 0.0,
        "union@2": 1.0,
        "users": 2.0,
    }
    only_popular = candidate_pool_recall(
        candidates.where("source = 'popular'"), relevance, sources, cutoffs=(2,)
    )
    assert only_popular == {
        "als@2": 0.0,
        "covisit@2": 0.0,
        "popular@2": 0.0,
        "ease@2": 0.0,
        "union@2": 0.0,
        "users": 2.0,
    }

"""Serving's columnar functions against their per-candidate meaning (tests/serving_reference.py),
value for value.

Serving merges, scores and assembles a request's candidates as numpy columns; every test here builds
the same request both ways and asserts identical results (exact equality, no tolerance). Also the item
table of the batch-version cache and the plain-tuple codec the cache keeps batch lists in.
"""

from __future__ import annotations

import gc
import random

import numpy as np
import pytest

from feature_store.codecs import CodecError, decode_recs, decode_recs_plain, encode_feature_rows, encode_recs
from feature_store.ranking import CANDIDATE_SOURCES, ITEM_INPUTS, POOL_INPUTS, USER_INPUTS
from feature_store.realtime import from_session
from serving.cache import _ROW_BYTES, BatchCache, ItemBatch, ItemTable, approx_bytes
from serving.candidates import SOURCES, merge_columns, priors_columns
from serving.ranking import assemble_matrix, genre_block, realtime_block, source_scores_block
from serving.ranking import select_top_k as select_top_k_columns
from serving.store import nightly_inputs, split_recs
from tests.serving_reference import Candidate, feature_rows, merge_candidates, priors, select_top_k


def request_proposals(
    seed: int, items: int = 120
) -> tuple[dict[str, list[tuple[str, float, str | None]]], set[str]]:
    """Proposals shaped like a request's: batch recs, co-visitation and similar neighbours of recent
    items (each with its recent item), trending and popular lists; overlaps, repeats within a source,
    ties and consumed items included."""
    rng = random.Random(seed)
    pool = [f"i{n}" for n in range(items)]
    seeds = [f"r{n}" for n in range(4)]

    def scores(count: int, scale: float) -> list[float]:
        return [round(rng.random() * scale, 2) if rng.random() > 0.1 else 1.0 for _ in range(count)]

    batch = [
        (item, score, rng.choice(["als", "covisit", "popular", "other"]))
        for item, score in zip(rng.sample(pool, 60), scores(60, 1.0))
    ]
    covisit = [(rng.choice(pool), score, seed) for seed in seeds for score in scores(15, 20.0)]
    similar = [(rng.choice(pool), score, seed) for seed in seeds for score in scores(15, 1.0)]
    trending = [(rng.choice(pool), score, None) for score in scores(30, 100.0)]
    popular = [(item, float(100 - n), "popular") for n, item in enumerate(rng.sample(pool, 40))]
    consumed = set(rng.sample(pool, 15))
    return {
        "batch": batch,
        "covisit": covisit,
        "similar": similar,
        "trending": trending,
        "popular": popular,
    }, consumed


def as_reference(columns) -> list[Candidate]:
    """CandidateColumns as the reference's Candidate list (scores in SOURCES order)."""
    return [
        Candidate(
            item_id,
            {SOURCES[j]: float(columns.scores[row, j]) for j in np.flatnonzero(columns.proposed[row])},
            columns.because[row],
        )
        for row, item_id in enumerate(columns.item_ids)
    ]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("cap", [400, 50])
def test_merge_columns_equals_the_reference_merge(seed, cap):
    proposals, consumed = request_proposals(seed)
    reference = list(merge_candidates(proposals, consumed, cap).values())
    columns = merge_columns(proposals, consumed, cap)
    got = as_reference(columns)
    assert got == reference
    # The score dicts also keep the reference's insertion order (SOURCES order): `sources` and ties depend on it.
    assert [list(c.scores) for c in got] == [list(c.scores) for c in reference]
    assert [columns.sources(row) for row in range(len(columns))] == [
        [s for s in SOURCES if s in c.scores] for c in reference
    ]


def test_merge_columns_of_nothing_and_of_everything_consumed():
    empty = merge_columns({}, set(), 10)
    assert (empty.item_ids, empty.scores.shape, empty.because) == ([], (0, len(SOURCES)), [])
    gone = merge_columns({"batch": [("a", 1.0, "als")]}, {"a"}, 10)
    assert gone.item_ids == []


def test_top_up_adds_first_scores_of_new_items_past_the_cap():
    proposals = {"batch": [("a", 0.9, "als"), ("b", 0.5, "als")]}
    columns = merge_columns(proposals, {"x"}, 2).top_up(
        [
            ("a", 5.0, "popular"),
            ("x", 4.0, "popular"),
            ("c", 3.0, "popular"),
            ("c", 9.0, "popular"),
            ("d", 1.0, "popular"),
        ],
        "popular",
        {"x"},
    )
    assert as_reference(columns) == [
        Candidate("a", {"batch": 0.9}),
        Candidate("b", {"batch": 0.5}),
        Candidate("c", {"popular": 3.0}),
        Candidate("d", {"popular": 1.0}),
    ]


@pytest.mark.parametrize("seed", range(6))
def test_priors_columns_equal_the_reference_priors(seed):
    proposals, consumed = request_proposals(seed)
    columns = merge_columns(proposals, consumed, 400)
    candidates = list(merge_candidates(proposals, consumed, 400).values())
    rng = random.Random(seed)
    categories = [rng.choice(["music", "books", "film", None]) for _ in candidates]
    _, shares = from_session({"cat:music": "3", "cat:books": "1", "type:view": "4"})
    for session, cats in [(None, None), (shares, categories), ({}, categories)]:
        values, primary = priors(candidates, session, cats)
        got_values, got_primary = priors_columns(columns, session, cats)
        assert got_values.tolist() == values
        assert [SOURCES[n] for n in got_primary] == primary


def test_priors_columns_of_a_lone_zero_score_and_of_no_candidates():
    columns = merge_columns({"popular": [("d", 0.0, "popular")], "batch": [("a", 0.8, "als")]}, set(), 10)
    values, primary = priors_columns(columns)
    assert (values.tolist(), [SOURCES[n] for n in primary]) == priors(
        [Candidate("a", {"batch": 0.8}), Candidate("d", {"popular": 0.0})]
    )
    assert [a.tolist() for a in priors_columns(merge_columns({}, set(), 10))] == [[], []]


@pytest.mark.parametrize("seed", range(6))
def test_matrix_equals_the_reference(seed):
    proposals, consumed = request_proposals(seed)
    columns = merge_columns(proposals, consumed, 400)
    rng = np.random.default_rng(seed)
    # the published recs: each batch item once, then a per-source score of some of them
    recs = list(dict.fromkeys(item for item, _, _ in proposals["batch"]))
    entries = [(item, 1.0 - n / 100, "batch") for n, item in enumerate(recs)]
    entries += [
        (item, float(np.float32(rng.random())), source)
        for source in CANDIDATE_SOURCES
        for item in recs
        if rng.random() < 0.6
    ]
    # the pool scorers' rows, one per rec, some values missing
    pool = rng.random((len(recs), len(POOL_INPUTS)), dtype=np.float32)
    pool[rng.random(pool.shape) < 0.3] = np.nan
    batch_recs, source_scores = split_recs(tuple(entries))
    per_source = nightly_inputs(source_scores, encode_feature_rows(pool.tolist()), "u1")
    assert [r[0] for r in batch_recs] == recs
    scores_of = {item: {} for item in recs}
    for item, score, source in entries:
        if source in CANDIDATE_SOURCES:
            scores_of[item][f"cand_{source}"] = score
    for item, values in zip(recs, pool):
        scores_of[item].update((n, float(v)) for n, v in zip(POOL_INPUTS, values) if not np.isnan(v))
    ids = columns.item_ids
    batch_rows = np.flatnonzero(columns.proposed[:, SOURCES.index("batch")])
    rec_rows = np.array([recs.index(ids[row]) for row in batch_rows], dtype=np.intp)
    categories = [rng.choice(["music", "books", None]) for _ in ids]
    shares = {"music": 0.75, "books": 0.25}
    covisit = {item: float(np.float32(rng.random())) for item in ids if rng.random() < 0.3}
    similar = {item: float(np.float32(rng.random())) for item in ids if rng.random() < 0.3}
    by_recency = {item: float(np.float32(rng.random())) for item in ids if rng.random() < 0.3}
    similar_by_recency = {item: float(np.float32(rng.random())) for item in ids if rng.random() < 0.3}
    user = rng.random(len(USER_INPUTS), dtype=np.float32)
    items = [rng.random(len(ITEM_INPUTS), dtype=np.float32) if n % 7 else None for n in range(len(ids))]
    affinities = [float(np.float32(rng.random())) if n % 5 else None for n in range(len(ids))]
    block = np.array(
        [np.full(len(ITEM_INPUTS), np.nan, dtype=np.float32) if f is None else f for f in items],
        dtype=np.float32,
    )
    profile = {"rock": 0.5, "pop": 0.25, "folk": 0.25}
    names = np.array(["rock", "pop", "jazz", "folk"])
    genres = [tuple(rng.choice(names, rng.integers(0, 4), replace=False).tolist()) for _ in ids]
    got = assemble_matrix(
        user,
        block,
        np.array([np.nan if a is None else a for a in affinities], dtype=np.float32),
        genre_block(profile, genres),
        source_scores_block(len(ids), batch_rows, rec_rows, per_source),
        realtime_block(ids, categories, 5.0, shares, covisit, similar, by_recency, similar_by_recency),
    )
    realtime = [
        (
            5.0,
            shares.get(c, 0.0) if c else 0.0,
            covisit.get(i, 0.0),
            similar.get(i, 0.0),
            by_recency.get(i, 0.0),
            similar_by_recency.get(i, 0.0),
        )
        for i, c in zip(ids, categories)
    ]
    reference = feature_rows(
        user,
        items,
        affinities,
        [scores_of.get(i) if i in set(ids[r] for r in batch_rows) else None for i in ids],
        realtime,
        profile,
        genres,
    )
    np.testing.assert_array_equal(got, reference)


def test_select_top_k_columns_equals_the_reference():
    rng = random.Random(3)
    for _ in range(50):
        n = rng.randint(0, 40)
        scores = [rng.choice([0.1, 0.5, 0.5, 0.9, rng.random()]) for _ in range(n)]
        categories = [rng.choice(["a", "b", "c", None]) for _ in range(n)]
        for k, cap, preferred in [(10, 0, None), (5, 1, None), (10, 2, "b"), (3, 0, "a"), (40, 1, "c")]:
            assert select_top_k_columns(np.array(scores), categories, k, cap, preferred) == select_top_k(
                scores, categories, k, cap, preferred
            )


# -- the item table of the batch-version cache -----------------------------------------------------
def test_item_table_rows_features_and_categories():
    table = ItemTable(max_bytes=10**7)
    vectors = [
        np.full(len(ITEM_INPUTS), float(n), dtype=np.float32) for n in range(70)
    ]  # more than the first allocation
    for n, vector in enumerate(vectors):
        table.put(f"i{n}", ItemBatch(vector, f"c{n % 3}"))
    table.put(
        "bad", ItemBatch(np.zeros(2, dtype=np.float32), None)
    )  # wrong length: NaN row, as the reference's "missing"
    table.put("i1", ItemBatch(None, "c9"))  # an update keeps the row
    rows = table.rows(["i5", "nope", "i69", "i1", "bad"])
    assert rows == [6, 0, 70, 2, 71]
    np.testing.assert_array_equal(table.features[rows[0]], vectors[5])
    np.testing.assert_array_equal(table.features[rows[2]], vectors[69])
    assert np.isnan(table.features[[0, 2, 71]]).all()
    assert [table.categories[r] for r in rows] == ["c2", None, "c0", "c9", None]
    assert (table.get("i5").category, table.get("nope"), len(table), "i69" in table) == ("c2", None, 71, True)


def test_item_table_starts_over_when_full():
    row = (
        approx_bytes("a")
        + approx_bytes(tuple(ItemBatch(np.zeros(len(ITEM_INPUTS), dtype=np.float32), "a")))
        + _ROW_BYTES
    )
    table = ItemTable(max_bytes=2 * row)  # room for two items
    for item in ("a", "b", "c"):
        table.put(item, ItemBatch(np.zeros(len(ITEM_INPUTS), dtype=np.float32), item))
    assert (len(table), "a" in table, table.rows(["c"]), table.categories) == (1, False, [1], [None, "c"])


def test_cache_lookup_through_the_item_table_counts_hits():
    cache = BatchCache(enabled=True)
    cache.reset("v1")
    item = ItemBatch(np.zeros(len(ITEM_INPUTS), dtype=np.float32), "c")
    cache.items.put("i1", item)
    assert cache.lookup_items(["i1", "i2", "i1"]) == ({"i1": item}, ["i2"])
    assert cache.lookup_items(["i2", "i1"], found=False) == (
        {},
        ["i2"],
    )  # the columnar path reads hits from the table
    assert (cache.stats.hits["items"], cache.stats.misses["items"]) == (3, 2)  # per id looked up
    cache.reset("v2")
    assert (len(cache.items), cache.items.rows(["i1"])) == (0, [0])


# -- the plain-tuple codec -------------------------------------------------------------------------
def test_plain_recs_equal_decode_recs_and_leave_the_garbage_collector_alone():
    blob = encode_recs((f"i{n}", 1.0 - n / 10, "als") for n in range(10))
    plain = decode_recs_plain(blob)
    assert plain == tuple(decode_recs(blob))
    assert [type(rec) for rec in plain] == [tuple] * 10
    gc.collect()
    gc.collect()  # the first collection untracks the inner tuples, the next one the outer tuple
    assert (gc.is_tracked(plain), any(gc.is_tracked(rec) for rec in plain)) == (False, False)
    with pytest.raises(CodecError, match="scored items"):
        decode_recs_plain(b"\x93\x01\x02\x03")  # [1, 2, 3]: not a list of triples
    with pytest.raises(CodecError, match="scored items"):
        decode_recs_plain(b"\xc1")


def test_cached_users_and_items_leave_the_garbage_collector_alone():
    """The cache holds plain tuples whose parts the garbage collector stops tracking: one tracked object
    per cached user or item (the tuple itself: it holds an array and a dict), not one per scored item."""
    import msgpack

    from feature_store.codecs import encode_features, encode_ids
    from serving.store import decode_user_batch

    cache = BatchCache(enabled=True)
    cache.reset("v1")
    user = decode_user_batch(
        encode_recs([("i1", 0.9, "als"), ("i2", 0.5, "covisit")]),
        encode_features([1.0] * len(USER_INPUTS)),
        msgpack.packb({"music": 0.5}),
        encode_ids(["i3"]),
        msgpack.packb({"rock": 1.0}),
        None,
        "u1",
    )
    cache.keep_user("u1", user)
    cache.items.put("i1", ItemBatch(np.zeros(len(ITEM_INPUTS), dtype=np.float32), "music", ("music", "pop")))
    gc.collect()
    gc.collect()
    stored_user, stored_item = cache.users.get("u1"), cache.items.entries[1]
    assert (type(stored_user), type(stored_item)) == (tuple, tuple)
    assert [gc.is_tracked(part) for part in stored_user] == [False] * 6
    assert [gc.is_tracked(rec) for rec in stored_user[0]] + [gc.is_tracked(part) for part in stored_item] == [
        False
    ] * 5
    assert cache.user("u1") == user and cache.user("u1").seen == ("i3",)
    assert cache.items.get("i1").category == "music"

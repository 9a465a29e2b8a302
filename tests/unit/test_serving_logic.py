"""Pure logic of the serving layer: candidate merging and priors, the ranker's input matrix, blending,
top-k with diversity, the batch-version cache, API-key checks, micro-batching and the model files.

Why one module: these are the pure steps of one request, tested in the order a request runs them, each
section headed by a comment; split by step, each file would be a few dozen lines.
"""

from __future__ import annotations

import asyncio
import json
import math
import sys

import numpy as np
import pytest

from feature_store.codecs import ScoredItem, encode_feature_rows
from feature_store.ranking import (
    CANDIDATE_SOURCES,
    ITEM_INPUTS,
    MODEL_FILES,
    NIGHTLY_INPUTS,
    POOL_INPUTS,
    RANKER_FEATURES,
    USER_INPUTS,
)
from feature_store.realtime import from_session
from feature_store.registry import LoadedRanker, ModelLoadError, feature_columns, ranker_from_directory
from serving.auth import ApiKeyGuard, BadApiKeyDigest, MissingApiKeys, guard_from_settings, hash_api_key
from serving.batcher import MicroBatcher
from serving.cache import SIZE_SAMPLE, BatchCache, Bounded, ItemBatch, UserBatch, approx_bytes
from serving.ranking import (
    assemble_matrix,
    genre_block,
    realtime_block,
    select_top_k,
    source_scores_block,
)
from serving.store import nightly_inputs, split_recs
from tests.serving_reference import Candidate, Proposal, merge_candidates, priors


# -- candidates ------------------------------------------------------------------------------------
def test_merge_unions_sources_minus_consumed_keeping_best_scores_and_cause():
    merged = merge_candidates(
        {
            "batch": [Proposal("a", 0.9), Proposal("b", 0.5), Proposal("seen", 1.0)],
            "covisit": [Proposal("b", 3.0, "r1"), Proposal("c", 1.0, "r1"), Proposal("c", 2.0, "r2")],
            "trending": [Proposal("d", 7.0), Proposal("a", 4.0)],
        },
        consumed={"seen"},
        max_candidates=10,
    )
    assert merged == {
        "b": Candidate("b", {"covisit": 3.0, "batch": 0.5}, "r1"),
        "c": Candidate("c", {"covisit": 2.0}, "r1"),
        "a": Candidate("a", {"batch": 0.9, "trending": 4.0}),
        "d": Candidate("d", {"trending": 7.0}),
    }


def test_merge_cap_keeps_the_strongest_sources():
    merged = merge_candidates(
        {"popular": [Proposal("p", 1.0)], "covisit": [Proposal("c", 1.0)], "batch": [Proposal("b", 1.0)]},
        set(),
        2,
    )
    assert list(merged) == ["c", "b"]


def test_priors_normalize_per_source_and_weight_sources():
    candidates = [
        Candidate("a", {"batch": 0.8}),
        Candidate("b", {"batch": 0.4, "trending": 10.0}),
        Candidate("c", {"covisit": 2.0}),
        Candidate("d", {"popular": 0.0}),
    ]
    values, primary = priors(candidates)
    assert values == pytest.approx(
        [0.9, 0.5, 1.0, 0.3]
    )  # b: max(0.9*0.5, 0.5*1.0); d: lone zero score -> 1.0 * 0.3
    assert primary == ["batch", "trending", "covisit", "popular"]


def test_session_shapes_priors_toward_its_categories():
    candidates = [Candidate("x", {"popular": 10.0}), Candidate("y", {"popular": 10.0})]
    _, shares = from_session({"cat:music": "3", "cat:books": "1", "type:view": "4", "session_id": "s"})
    values, _ = priors(candidates, shares, ["music", None])
    assert values == pytest.approx([0.3 * 1.375, 0.3])


# -- ranking ---------------------------------------------------------------------------------------
def test_matrix_follows_ranker_features_with_nan_for_missing():
    user = np.arange(len(USER_INPUTS), dtype=np.float32)
    items = np.full((3, len(ITEM_INPUTS)), np.nan, dtype=np.float32)
    items[0] = 7.0
    # rows 0 and 2 are published recommendations (recs rows 1 and 0); row 1 came from a real-time source
    per_source = np.full((2, len(NIGHTLY_INPUTS)), np.nan, dtype=np.float32)
    per_source[0, :3] = [0.9, np.nan, 4.0]  # als, covisit, popular
    per_source[0, NIGHTLY_INPUTS.index("pool_rp3beta_score")] = 0.5
    per_source[1, :2] = [0.5, 2.0]
    sources = source_scores_block(3, np.array([0, 2]), np.array([1, 0]), per_source)
    realtime = realtime_block(
        ["a", "b", "c"],
        ["music", None, "books"],
        4.0,
        {"music": 0.75, "books": 0.25},
        {"b": 3.0},
        {"a": 0.5, "c": 0.25},
        {"b": 0.75},
        {"c": 0.125},
    )
    # genres: a rock/pop item, a jazz one (not in the profile), one without genres
    genres = genre_block({"rock": 0.6, "pop": 0.2, "folk": 0.2}, [("rock", "pop"), ("jazz",), ()])
    matrix = assemble_matrix(
        user, items, np.array([0.25, np.nan, np.nan], dtype=np.float32), genres, sources, realtime
    )
    names = list(RANKER_FEATURES)
    expected = np.full((3, len(RANKER_FEATURES)), np.nan, dtype=np.float32)
    expected[:, : len(USER_INPUTS)] = user
    expected[0, len(USER_INPUTS) : len(USER_INPUTS) + len(ITEM_INPUTS)] = 7.0
    expected[0, names.index("ui_category_affinity")] = 0.25
    # cosine 0.8 / (sqrt(0.44) * sqrt(2)); max 0.6; mean 0.4
    expected[0, names.index("ui_genre_cosine") : names.index("ui_genre_mean_share") + 1] = [
        0.8 / np.sqrt(0.88),
        0.6,
        0.4,
    ]
    expected[1, names.index("ui_genre_cosine") : names.index("ui_genre_mean_share") + 1] = 0.0
    expected[0, [names.index("cand_als"), names.index("cand_covisit")]] = [0.5, 2.0]
    expected[2, [names.index("cand_als"), names.index("cand_popular"), names.index("pool_rp3beta_score")]] = [
        0.9,
        4.0,
        0.5,
    ]
    expected[:, names.index("rt_session_events")] = 4.0
    expected[:, names.index("rt_session_category_share")] = [0.75, 0.0, 0.25]
    expected[:, names.index("rt_recent_covisit")] = [0.0, 3.0, 0.0]
    expected[:, names.index("rt_recent_similar")] = [0.5, 0.0, 0.25]
    expected[:, names.index("rt_recency_covisit")] = [0.0, 0.75, 0.0]
    expected[:, names.index("rt_recency_similar")] = [0.0, 0.0, 0.125]
    np.testing.assert_array_equal(matrix, expected)


def test_matrix_without_user_features_or_published_recommendations():
    sources = source_scores_block(2, np.array([], dtype=np.intp), np.array([], dtype=np.intp), None)
    realtime = realtime_block(["a", "b"], [None, None], 0.0, {}, {}, {}, {}, {})
    genres = genre_block(None, [("rock",), ()])
    matrix = assemble_matrix(
        None,
        np.zeros((2, len(ITEM_INPUTS)), np.float32),
        np.full(2, np.nan, np.float32),
        genres,
        sources,
        realtime,
    )
    names = list(RANKER_FEATURES)
    assert (
        np.isnan(matrix[:, : len(USER_INPUTS)]).all()
        and np.isnan(matrix[:, names.index("cand_als")]).all()
        and np.isnan(matrix[:, names.index("ui_genre_cosine")]).all()
    )
    assert matrix[:, names.index("rt_session_events") :].tolist() == [[0.0] * 6, [0.0] * 6]


def test_top_k_with_category_cap_and_preferred_category():
    scores = [0.9, 0.8, 0.7, 0.6, 0.5]
    categories = ["a", "a", "a", "b", None]
    scores = np.array(scores)
    assert select_top_k(scores, categories, 3) == [0, 1, 2]
    assert select_top_k(scores, categories, 3, max_per_category=1) == [0, 3, 4]
    assert select_top_k(scores, categories, 5, max_per_category=1) == [
        0,
        3,
        4,
        1,
        2,
    ]  # capped items fill the rest
    assert select_top_k(scores, categories, 2, preferred_category="b") == [3, 0]
    assert select_top_k(np.array([0.5, 0.5, 0.5]), [None] * 3, 3) == [0, 1, 2]  # ties keep candidate order


# -- cache -----------------------------------------------------------------------------------------
def test_bounded_table_holds_a_byte_budget_and_forgets_the_oldest_entries():
    entry = approx_bytes("a") + approx_bytes(1)  # each entry here: a one-letter key and a small int
    assert entry == sys.getsizeof("a") + sys.getsizeof(1)
    table: Bounded[str, int] = Bounded(2 * entry)
    table.put("a", 1)
    table.put("b", 2)
    table.put("a", 10)  # an update does not evict
    assert (table.get("a"), len(table), table.bytes) == (10, 2, 2 * entry)
    table.put("c", 3)
    assert ("a" in table, "b" in table, "c" in table, len(table), table.bytes) == (
        False,
        True,
        True,
        2,
        2 * entry,
    )
    big = (ScoredItem("i1", 1.0, "als"),) * 50
    table.put("d", big)  # larger than the whole budget: everything older goes, and so does it
    assert (len(table), table.bytes) == (0, 0)
    table.clear()
    assert table.bytes == 0


def test_approx_bytes_counts_containers_strings_and_arrays():
    assert approx_bytes("abc") == sys.getsizeof("abc")
    assert approx_bytes(("ab", 1.5)) == sys.getsizeof(("ab", 1.5)) + sys.getsizeof("ab") + sys.getsizeof(1.5)
    assert approx_bytes({"k": "v"}) == sys.getsizeof({"k": "v"}) + 2 * sys.getsizeof("k")
    array = np.zeros(1000, dtype=np.float32)
    assert approx_bytes(array) == sys.getsizeof(array) >= 4000
    assert approx_bytes(array[:10]) == 40 + 112  # a view counts its own elements


def test_a_long_container_counts_its_first_elements_average_for_every_element():
    item = ScoredItem("i10", 1.5, "batch")
    one = approx_bytes(item)
    assert one == sys.getsizeof(item) + sum(sys.getsizeof(v) for v in item)
    recs = [ScoredItem(f"i{n}", 1.5, "batch") for n in range(10, 160)]  # 150 items of one size
    assert approx_bytes(recs) == sys.getsizeof(recs) + 150 * one
    # only the first SIZE_SAMPLE are measured: a longer id later on is not seen
    mixed = [*["ab"] * SIZE_SAMPLE, "a much longer string"]
    assert approx_bytes(mixed) == sys.getsizeof(mixed) + 9 * sys.getsizeof("ab")


def test_user_cache_evicts_by_bytes_not_entries():
    user = UserBatch(tuple(ScoredItem(f"i{n}", 1.0, "als") for n in range(100)), None, {}, ())
    size = approx_bytes("u0") + approx_bytes(tuple(user))
    cache = BatchCache(
        enabled=True, max_bytes=2 * (3 * size + 8)
    )  # users get half: room for three such users
    cache.reset("v1")
    for n in range(5):
        cache.keep_user(f"u{n}", user)
    assert [f"u{n}" in cache.users for n in range(5)] == [False, False, True, True, True]
    assert cache.users.bytes <= cache.users.max_bytes


def test_batch_cache_is_scoped_to_one_version_and_counts_hits():
    cache = BatchCache(enabled=True)
    cache.reset("v1")
    item = ItemBatch(np.zeros(2, dtype=np.float32), "c")
    cache.items.put("i1", item)
    cache.users.put("u1", UserBatch((ScoredItem("i1", 1.0, "als"),), None, {}, frozenset()))
    assert cache.lookup_items(["i1", "i2"]) == ({"i1": item}, ["i2"])
    assert cache.user("u1") is not None and cache.user("u2") is None
    assert (cache.accepts("v1"), cache.accepts("v0"), cache.accepts(None)) == (True, False, False)
    assert (cache.stats.hits["items"], cache.stats.misses["items"], cache.stats.hit_ratio()) == (1, 1, 0.5)
    cache.reset("v2")
    assert (len(cache.items), len(cache.users), cache.popular, cache.version) == (0, 0, None, "v2")


def test_disabled_cache_misses_everything():
    cache = BatchCache(enabled=False)
    cache.reset("v1")
    cache.items.put("i1", ItemBatch(None, None))
    assert cache.lookup_items(["i1"]) == ({}, ["i1"])
    assert cache.cached_popular() is None and cache.accepts("v1") is False


# -- auth ------------------------------------------------------------------------------------------
def test_api_key_guard_compares_digests(settings):
    guard = ApiKeyGuard([hash_api_key("one"), hash_api_key("two").upper()])
    assert (
        guard.enabled,
        guard.accepts("one"),
        guard.accepts("two"),
        guard.accepts("three"),
        guard.accepts(None),
    ) == (
        True,
        True,
        True,
        False,
        False,
    )
    assert ApiKeyGuard([]).accepts(None) is True
    assert hash_api_key("secret") == "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"
    with pytest.raises(BadApiKeyDigest, match="store hashes, not keys"):
        ApiKeyGuard(["secret"])
    with pytest.raises(MissingApiKeys):
        guard_from_settings(settings.updated(profile="production"))
    assert guard_from_settings(settings).enabled is False


def test_api_keys_carry_scopes():
    secret_digest = "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"
    assert hash_api_key("secret", ("read",)) == f"{secret_digest}:read"
    assert hash_api_key("secret", ("read", "write")) == f"{secret_digest}:read,write"
    guard = ApiKeyGuard(
        [hash_api_key("both"), hash_api_key("reader", ("read",)), f"{hash_api_key('writer')}:write"]
    )
    both, reader, writer = guard.identify("both"), guard.identify("reader"), guard.identify("writer")
    assert (both.scopes, reader.scopes, writer.scopes) == ({"read", "write"}, {"read"}, {"write"})
    assert reader.id == hash_api_key("reader")[:12] and guard.identify("nobody") is None
    assert ApiKeyGuard([]).identify(None).scopes == {"read", "write"}  # authentication off: local profile
    with pytest.raises(BadApiKeyDigest, match="unknown API key scope"):
        ApiKeyGuard([f"{secret_digest}:admin"])


# -- micro-batching ----------------------------------------------------------------------------------
def _ranker(name: str, calls: list[int]) -> LoadedRanker:
    def run(matrix: np.ndarray) -> np.ndarray:
        calls.append(matrix.shape[0])
        return matrix[:, 0] * 2

    return LoadedRanker(name=name, version="1", backend="test", columns=None, run=run)


async def test_micro_batcher_scores_concurrent_requests_in_one_call():
    calls: list[int] = []
    ranker = _ranker("r", calls)
    batcher = MicroBatcher(wait_ms=20)
    matrices = [np.full((n, 3), float(n), dtype=np.float32) for n in (1, 2, 3)]
    results = await asyncio.gather(*[batcher.predict(ranker, m) for m in matrices])
    assert [r.tolist() for r in results] == [[2.0], [4.0, 4.0], [6.0, 6.0, 6.0]]
    assert calls == [6] and (batcher.calls, batcher.requests) == (1, 3)


async def test_micro_batcher_never_mixes_rankers():
    calls_a: list[int] = []
    calls_b: list[int] = []
    batcher = MicroBatcher(wait_ms=20)
    a, b = _ranker("a", calls_a), _ranker("b", calls_b)
    one = np.ones((1, 2), dtype=np.float32)
    await asyncio.gather(batcher.predict(a, one), batcher.predict(b, one), batcher.predict(b, one))
    assert (calls_a, calls_b) == ([1], [2])


# -- model files ---------------------------------------------------------------------------------------
def test_feature_columns_reorder_or_refuse():
    assert feature_columns(list(RANKER_FEATURES)) is None
    assert feature_columns(["cand_als", "user_events_7d"]).tolist() == [RANKER_FEATURES.index("cand_als"), 0]
    with pytest.raises(ModelLoadError, match="features serving does not build"):
        feature_columns(["user_events_7d", "shoe_size"])


def _tiny_lightgbm_files(directory, onnx: bool):
    import lightgbm

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, len(RANKER_FEATURES))).astype(np.float32)
    y = (x[:, 0] > 0).astype(int) + (x[:, 1] > 0).astype(int)
    booster = lightgbm.train(
        {"objective": "lambdarank", "verbose": -1, "num_leaves": 4, "num_threads": 1},
        lightgbm.Dataset(x, y, group=[20] * 10),
        num_boost_round=5,
    )
    (directory / "artifacts").mkdir(parents=True)
    booster.save_model(str(directory / MODEL_FILES.native))
    output = "variable"
    if onnx:
        import onnxmltools
        from onnxmltools.convert.common.data_types import FloatTensorType

        model = onnxmltools.convert_lightgbm(
            booster, initial_types=[("input", FloatTensorType([None, x.shape[1]]))]
        )
        (directory / MODEL_FILES.onnx).write_bytes(model.SerializeToString())
        output = [o.name for o in model.graph.output][0]
    (directory / MODEL_FILES.meta).write_text(
        json.dumps({"kind": "lightgbm", "features": list(RANKER_FEATURES), "onnx_output": output})
    )
    return booster, x


def test_onnx_ranker_matches_the_native_booster(tmp_path):
    booster, x = _tiny_lightgbm_files(tmp_path, onnx=True)
    ranker = ranker_from_directory(tmp_path, "m", "3")
    assert (ranker.name, ranker.version, ranker.backend) == ("m", "3", "onnx")
    np.testing.assert_allclose(ranker.predict(x[:20]), booster.predict(x[:20]), rtol=1e-4, atol=1e-5)
    assert ranker.predict(np.zeros((0, len(RANKER_FEATURES)), dtype=np.float32)).shape == (0,)


def test_missing_onnx_falls_back_to_the_native_booster(tmp_path):
    booster, x = _tiny_lightgbm_files(tmp_path, onnx=False)
    ranker = ranker_from_directory(tmp_path, "m", "1")
    assert ranker.backend == "native:lightgbm"
    np.testing.assert_allclose(ranker.predict(x[:5]), booster.predict(x[:5]), rtol=1e-6)


def test_model_without_meta_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="has no artifacts/ranker_meta.json"):
        ranker_from_directory(tmp_path, "m", "9")


def test_readyz_age_parsing():
    from serving.app import _age_s

    assert _age_s(None) is None and _age_s("not a time") is None
    assert math.isclose(_age_s("0"), _age_s("1970-01-01T00:00:00Z"), abs_tol=1.0)


def test_serving_imports_no_spark_and_no_mlflow_at_import_time():
    import subprocess
    import sys

    code = (
        "import sys, serving.app, serving.recommender, lambdarec.commands.serve\n"
        "from lambdarec.cli import build_app; build_app()\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'pyspark', 'spark_jobs', 'mlflow', 'xgboost', 'lightgbm', 'onnxruntime'}))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_split_recs_keeps_first_entries_in_order_and_scores_by_nightly_source():
    nan = float("nan")
    entries = (
        ("a", 0.9, "batch"),
        ("b", 0.8, "batch"),
        ("a", 0.5, "als"),
        ("c", 0.4, "covisit"),  # listed only under a nightly source: a recommendation too
        ("b", 0.3, "unknown"),  # a source the ranker has no input for: no score
        ("a", 0.7, "als"),  # the same source twice: its later score
        ("b", 0.25, "ease"),
    )
    recs, scores = split_recs(entries)
    assert recs == (("a", 0.9, "batch"), ("b", 0.8, "batch"), ("c", 0.4, "covisit"))
    # CANDIDATE_SOURCES order: als, covisit, popular, ease
    expected = np.array([[0.7, nan, nan, nan], [nan, nan, nan, 0.25], [nan, 0.4, nan, nan]], dtype=np.float32)
    np.testing.assert_array_equal(scores, expected)
    assert scores.dtype == np.float32
    assert split_recs(()) == ((), None)


def test_nightly_inputs_put_the_published_pool_rows_beside_the_source_scores_of_the_first_recs():
    nan = float("nan")
    sources = np.array([[0.5, nan, nan, nan], [nan, 1.0, nan, nan], [nan, nan, 0.25, nan]], dtype=np.float32)
    pool = [
        [0.5 * n + c for c in range(len(POOL_INPUTS))] for n in range(2)
    ]  # two batch recs, one source-only
    got = nightly_inputs(sources, encode_feature_rows(pool), "u1")
    expected = np.full((3, len(NIGHTLY_INPUTS)), nan, dtype=np.float32)
    expected[:, : len(CANDIDATE_SOURCES)] = sources
    expected[:2, len(CANDIDATE_SOURCES) :] = pool
    np.testing.assert_array_equal(got, expected)
    # no pool key, an unreadable one, or more rows than recs: the sources' scores alone
    alone = expected.copy()
    alone[:, len(CANDIDATE_SOURCES) :] = nan
    for blob in (None, b"\x07", encode_feature_rows([[0.0] * len(POOL_INPUTS)] * 4)):
        np.testing.assert_array_equal(nightly_inputs(sources, blob, "u1"), alone)
    assert nightly_inputs(None, encode_feature_rows(pool), "u1") is None

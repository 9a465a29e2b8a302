"""The item-to-item models (EASE, RP3beta) against hand-computed values and independent numpy references,
and how they score a candidate pool."""

import numpy as np
import pandas as pd

from spark_jobs.candidates import (
    ease_weights,
    gram_matrix,
    pool_scores_by,
    rp3beta_weights,
    top_items_by_ease,
)

# users x items (a, b, c, d): {a, b} and {c, d} never meet, so each weight is a 1-variable ridge.
X = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 1]], dtype=np.float64)


def test_gram_matrix_mirrors_the_upper_triangle():
    entries = pd.DataFrame({"i": [0, 0, 1, 2, 2, 3], "j": [0, 1, 1, 2, 3, 3], "users": [3, 2, 2, 1, 1, 1]})
    assert gram_matrix(entries, 4).tolist() == (X.T @ X).tolist()


def test_ease_weights_by_hand_on_two_separate_pairs():
    # B[i, j] = G[i, j] / (G[i, i] + lambda) when item i is j's only co-occurring item.
    expected = np.array([[0, 2 / 4, 0, 0], [2 / 3, 0, 0, 0], [0, 0, 0, 1 / 2], [0, 0, 1 / 2, 0]])
    assert np.abs(ease_weights(X.T @ X, 1.0) - expected).max() < 1e-15


def test_ease_weights_equal_a_ridge_regression_of_each_item_on_the_others():
    # The closed form B = I - P diag(1/diag(P)) is, column by column, the ridge regression of item j on
    # every other item (diagonal constrained to 0): an independent way to get the same numbers.
    x = np.array([[1, 1, 0, 1], [0, 1, 1, 0], [1, 0, 1, 1], [1, 1, 1, 0], [0, 0, 1, 1]], dtype=np.float64)
    lam = 0.5
    gram = x.T @ x
    reference = np.zeros((4, 4))
    for j in range(4):
        others = [i for i in range(4) if i != j]
        reference[others, j] = np.linalg.solve(
            gram[np.ix_(others, others)] + lam * np.eye(3), gram[others, j]
        )
    got = ease_weights(gram, lam)
    assert np.abs(got - reference).max() < 1e-12
    assert np.diag(got).tolist() == [0.0, 0.0, 0.0, 0.0]


def test_top_items_by_ease_skips_seen_unindexed_and_unsupported_items():
    weights = ease_weights(X.T @ X, 1.0).astype(np.float32)
    users = pd.DataFrame({"user_id": ["u3", "u4", "u9"], "seen": [["a"], ["c", "zz"], ["d"]]})
    got = top_items_by_ease(users, np.array(["a", "b", "c", "d"], dtype=object), weights, n=2, chunk=2)
    assert got.to_dict("list") == {
        "user_id": ["u3", "u4", "u9"],
        "item_id": ["b", "d", "c"],
        "score": [0.5, 0.5, 0.5],
        "rank": [1, 1, 1],
    }


def test_rp3beta_weights_by_hand_and_as_the_random_walk_they_stand_for():
    # users x items (a, b, c): u1 {a, b}, u2 {a, b, c}, u3 {c}; every item has 2 users
    x = np.array([[1, 1, 0], [1, 1, 1], [0, 0, 1]], dtype=np.float64)
    weighted = x.T @ (x / x.sum(axis=1, keepdims=True))  # each user weighted 1 / their item count
    got = rp3beta_weights(weighted, x.sum(axis=0), 0.5)
    # a -> b: through u1 (1/2) and u2 (1/3), from a's 2 users, divided by b's popularity 2^0.5
    assert got[0, 1] == (1 / 2 + 1 / 3) / 2 / np.sqrt(2)
    # the walk item -> user -> item, as an independent reference
    to_user = (x / x.sum(axis=0, keepdims=True)).T
    to_item = x / x.sum(axis=1, keepdims=True)
    walk = (to_user @ to_item) / np.sqrt(x.sum(axis=0))[np.newaxis, :]
    np.fill_diagonal(walk, 0.0)
    assert np.abs(got - walk).max() < 1e-15
    assert np.diag(got).tolist() == [0.0, 0.0, 0.0]


def test_pool_scores_by_scores_every_indexed_candidate_relative_to_the_users_best():
    items = np.array(["a", "b", "c", "d"], dtype=object)
    affinity = np.array([[0, 2, 1, 1], [2, 0, 0, 0], [1, 0, 0, 0], [1, 0, 0, 0]], dtype=np.float32)
    weights = {"near": affinity, "far": -affinity}
    users = pd.DataFrame(
        {
            "user_id": ["u1", "u2", "u3"],
            "seen": [["a"], ["zz"], ["b", "c"]],
            "pool": [["d", "zz", "b", "c"], ["a"], ["a"]],
        }
    )
    got = pool_scores_by(users, items, weights)
    got = got.astype(object).where(got.notna(), None)  # missing scores are NaN here, null in Spark
    # u1: b 2, c 1, d 1 (c before d: ties by item id; zz is not indexed); "far" has no positive best, so
    # no relative score, only ranks. u2 has no indexed history: no view. u3: a = B[b, a] + B[c, a] = 3.
    assert got.to_dict("list") == {
        "source": ["near"] * 3 + ["far"] * 3 + ["near", "far"],
        "user_id": ["u1"] * 6 + ["u3", "u3"],
        "item_id": ["b", "c", "d", "c", "d", "b", "a", "a"],
        "score": [1.0, 0.5, 0.5, None, None, None, 1.0, None],
        "rank": [1, 2, 3, 1, 2, 3, 1, 1],
    }


def test_a_batch_without_users_yields_typed_empty_columns_that_arrow_turns_into_the_output_schema():
    import pyarrow as pa

    empty = pd.DataFrame({"user_id": pd.Series([], dtype=object), "seen": pd.Series([], dtype=object)})
    got = top_items_by_ease(empty, np.array(["a"], dtype=object), np.zeros((1, 1), dtype=np.float32), n=2)
    types = {"user_id": pa.string(), "item_id": pa.string(), "score": pa.float64(), "rank": pa.int32()}
    arrays = [pa.Array.from_pandas(got[c], type=t) for c, t in types.items()]
    assert pa.RecordBatch.from_arrays(arrays, list(types)).num_rows == 0

"""EASE's closed form against hand-computed values and an independent numpy reference."""

import numpy as np
import pandas as pd

from spark_jobs.candidates import ease_weights, gram_matrix, top_items_by_ease

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

"""The paired comparison of evaluate's predictions: per-user NDCG (missing lists score 0) and the pairs."""

import math

import pandas as pd

from benchmarks.paired_predictions import paired_rows, per_user_ndcg


def test_per_user_ndcg_scores_each_users_list_and_zero_without_one():
    predictions = pd.DataFrame(
        {
            "model": ["xgboost", "xgboost", "ease", "ease"],
            "user_id": ["u1", "u1", "u1", "u2"],
            "item_id": ["b", "a", "c", "a"],
            "rank": [2, 1, 1, 1],
        }
    )
    relevance = {"u1": {"b": 1.0}, "u2": {"a": 1.0}}
    got = per_user_ndcg(predictions, relevance, k=10)
    # u1: b at rank 2 for xgboost (1 / log2(3)), missed by ease; u2: no xgboost list, ease hits at rank 1
    assert got == {"ease": {"u1": 0.0, "u2": 1.0}, "xgboost": {"u1": 1 / math.log2(3), "u2": 0.0}}


def test_paired_rows_compare_each_ranker_with_each_other_model_over_the_same_users():
    ndcg = {"xgboost": {"u1": 1.0, "u2": 0.5}, "ease": {"u1": 0.5, "u2": 0.5}, "als": {"u1": 1.0, "u2": 1.0}}
    rows = paired_rows(ndcg, ["xgboost"])
    assert [(r["baseline"], r["mean_diff"], r["better"], r["worse"], r["users"]) for r in rows] == [
        ("als", -0.25, 0, 1, 2),
        ("ease", 0.25, 1, 0, 2),
    ]
    assert rows[1]["relative"] == 0.5 and rows[1]["ranker_ndcg"] == 0.75 and rows[1]["baseline_ndcg"] == 0.5
    # every resample of the +0.5 / 0 differences lies in [0, 0.5]
    assert 0.0 <= rows[1]["ci95"][0] <= rows[1]["ci95"][1] <= 0.5

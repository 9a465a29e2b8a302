"""The paired comparison of evaluate's predictions: per-user NDCG (missing lists score 0) and the pairs."""

import math

import pandas as pd
import pytest

from benchmarks.paired_predictions import against_rows, paired_rows, per_user_ndcg, scored_means


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


def test_against_rows_pair_each_ranker_with_the_same_ranker_of_the_other_run():
    ndcg = {
        "xgboost": {"u1": 0.5, "u2": 0.5},
        "xgboost@all": {"u1": 1.0, "u2": 0.5},
        "lightgbm": {"u1": 1.0, "u2": 1.0},
        "ease@all": {"u1": 0.0, "u2": 0.0},
    }
    rows = against_rows(ndcg, ["xgboost", "lightgbm"], "all")  # no lightgbm@all: no row
    assert [(r["ranker"], r["baseline"], r["mean_diff"], r["better"], r["worse"]) for r in rows] == [
        ("xgboost", "xgboost@all", -0.25, 0, 1)
    ]


def test_scored_means_are_checked_against_the_json_of_their_own_run():
    ndcg = {"xgboost": {"u1": 0.5, "u2": 1.0}, "xgboost@all": {"u1": 1.0, "u2": 1.0}}
    assert scored_means(ndcg, {"models": {"xgboost": {"ndcg@10": 0.75}}}) == {"xgboost": 0.75}
    assert scored_means(ndcg, {"models": {"xgboost": {"ndcg@10": 1.0}}}, "all") == {"xgboost@all": 1.0}
    with pytest.raises(SystemExit, match="differ from the evaluate JSON of all"):
        scored_means(ndcg, {"models": {"xgboost": {"ndcg@10": 0.9}}}, "all")

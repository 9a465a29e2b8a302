"""Choosing ALS's knobs from the grid's result table (pure)."""

import pytest

from feature_store.settings import Settings
from spark_jobs.als_tuning import AlsGrid, choose_best
from spark_jobs.candidates import CandidateParams

TABLE = [
    {
        "als_rank": 16,
        "als_reg_param": 0.05,
        "als_alpha": 10.0,
        "als_max_iter": 10,
        "ndcg@10": 0.21,
        "recall@100": 0.50,
    },
    {
        "als_rank": 32,
        "als_reg_param": 0.05,
        "als_alpha": 10.0,
        "als_max_iter": 10,
        "ndcg@10": 0.25,
        "recall@100": 0.48,
    },
    {
        "als_rank": 64,
        "als_reg_param": 0.05,
        "als_alpha": 10.0,
        "als_max_iter": 10,
        "ndcg@10": 0.25,
        "recall@100": 0.52,
    },
]


def test_choose_best_takes_the_highest_metric_and_the_earlier_point_on_a_tie():
    assert choose_best(TABLE, "ndcg@10") is TABLE[1]
    assert choose_best(TABLE, "recall@100") is TABLE[2]
    assert choose_best(TABLE[:1], "ndcg@10") is TABLE[0]


def test_choose_best_says_what_is_wrong():
    with pytest.raises(ValueError, match="no tuning results"):
        choose_best([], "ndcg@10")
    with pytest.raises(KeyError, match=r"'map@10' missing from rows \[0, 1, 2\]"):
        choose_best(TABLE, "map@10")


def test_grid_points_are_the_product_in_order_and_params_start_at_the_first_point():
    settings = Settings(als_ranks=(8, 16), als_reg_params=(0.1,), als_alphas=(1.0, 5.0), als_max_iters=(3,))
    assert AlsGrid.from_settings(settings.candidates).points() == [
        {"als_rank": 8, "als_reg_param": 0.1, "als_alpha": 1.0, "als_max_iter": 3},
        {"als_rank": 8, "als_reg_param": 0.1, "als_alpha": 5.0, "als_max_iter": 3},
        {"als_rank": 16, "als_reg_param": 0.1, "als_alpha": 1.0, "als_max_iter": 3},
        {"als_rank": 16, "als_reg_param": 0.1, "als_alpha": 5.0, "als_max_iter": 3},
    ]
    params = CandidateParams.from_settings(settings.candidates)
    assert (params.als_rank, params.als_reg_param, params.als_alpha, params.als_max_iter) == (8, 0.1, 1.0, 3)

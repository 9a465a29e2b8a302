"""XGBoost ranker trained with `xgboost.spark.SparkXGBRanker` on `num_workers` Spark tasks.

The rows arrive in `num_workers` partitions of whole queries sorted by (qid, item_id)
(`partitioned_queries`, so a cluster trains the same model as local mode); SparkXGBRanker then runs
XGBoost's collective (Rabit) allreduce between the tasks of a barrier stage. Called by `spark_jobs.steps.models` (step `train_xgboost`) and `lambdarec evaluate`.
"""

from __future__ import annotations

import time

import numpy as np
from pyspark.sql import DataFrame

from spark_jobs.rankers.common import RankerParams, TrainedRanker, partitioned_queries


def xgboost_params(params: RankerParams) -> dict:
    """Booster parameters (what is logged to MLflow)."""
    return {
        "objective": "rank:ndcg",
        "eval_metric": "ndcg@10",
        "lambdarank_pair_method": "topk",
        "lambdarank_num_pair_per_sample": 10,
        "n_estimators": params.trees,
        "max_depth": params.max_depth,
        "learning_rate": params.learning_rate,
        "min_child_weight": params.min_child_weight,
        "tree_method": "hist",
        "random_state": params.seed,
    }


def train_xgboost(examples: DataFrame, params: RankerParams) -> TrainedRanker:
    """Fit on (user_id, item_id, features, relevance) rows; one query per user."""
    from xgboost.spark import SparkXGBRanker

    booster_params = xgboost_params(params)
    ranker = SparkXGBRanker(
        features_col="features",
        label_col="relevance",
        qid_col="qid",
        num_workers=params.num_workers,
        force_repartition=False,  # already one partition per worker
        missing=np.nan,
        **booster_params,
    )
    started = time.perf_counter()
    # Cached, because SparkXGBRanker sorts each partition by qid again and Spark's optimizer drops a
    # sort that sits under another sort: the cache hides ours, so (qid, item_id) order survives.
    rows = partitioned_queries(examples, params.num_workers).select("qid", "features", "relevance").cache()
    try:
        model = ranker.fit(rows)
    finally:
        rows.unpersist()
    seconds = time.perf_counter() - started
    booster = model.get_booster()
    return TrainedRanker(
        kind="xgboost",
        booster=booster,
        n_trees=booster.num_boosted_rounds(),
        params=booster_params,
        train_seconds=seconds,
        num_workers=params.num_workers,
    )

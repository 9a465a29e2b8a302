"""ALS's rank, regParam, alpha and maxIter chosen on a validation split of the history a cut-off sees.

Each user's latest `validation_share` of interactions (by time; users keep at least one in the fit part)
is held out; ALS is fitted on the rest once per grid point, and each point's candidates are judged on
the held-out items the user had not touched before (NDCG@10 and recall@per_source, spark_jobs.evaluation).
`choose_best` (pure) picks the point with the best `metric`. Only events before the cut-off are read, so
tuning at the earliest cut-off of a run leaks nothing of the holdout into the candidates.
Callers: spark_jobs.steps.data (step `candidates`), spark_jobs.offline_eval.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from itertools import product

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from feature_store.settings import CandidateSettings
from spark_jobs.candidates import (
    ALS_SOURCE,
    CandidateParams,
    als_candidates,
    als_factors,
    implicit_weights,
    seen_items,
)

GRID_KEYS: tuple[str, ...] = ("als_rank", "als_reg_param", "als_alpha", "als_max_iter")
NDCG_K = 10


@dataclass(frozen=True)
class AlsGrid:
    """The values tried for each ALS knob; the grid is their product, in this order."""

    ranks: tuple[int, ...]
    reg_params: tuple[float, ...]
    alphas: tuple[float, ...]
    max_iters: tuple[int, ...]

    @classmethod
    def from_settings(cls, candidates: CandidateSettings) -> AlsGrid:
        return cls(
            candidates.als_ranks, candidates.als_reg_params, candidates.als_alphas, candidates.als_max_iters
        )

    def points(self) -> list[dict[str, float]]:
        return [
            dict(zip(GRID_KEYS, values))
            for values in product(self.ranks, self.reg_params, self.alphas, self.max_iters)
        ]


def choose_best(results: Sequence[Mapping[str, float]], metric: str) -> Mapping[str, float]:
    """The row of `results` (grid point + its metrics) with the highest `metric`; the earlier row wins a tie."""
    if not results:
        raise ValueError("no tuning results to choose from")
    missing = [i for i, row in enumerate(results) if metric not in row]
    if missing:
        raise KeyError(
            f"tuning metric {metric!r} missing from rows {missing}; rows have {sorted(results[0])}"
        )
    return max(enumerate(results), key=lambda pair: (pair[1][metric], -pair[0]))[1]


def validation_split(history: DataFrame, share: float) -> tuple[DataFrame, DataFrame]:
    """(fit, held_out): each user's latest `share` of interactions (ties by item id) are held out,
    rounded down, so a user keeps at least one interaction in `fit`."""
    order = Window.partitionBy("user_id").orderBy(F.col("ts").desc(), F.col("item_id").desc())
    numbered = history.withColumn("_n", F.row_number().over(order)).withColumn(
        "_total", F.count("*").over(Window.partitionBy("user_id"))
    )
    held = (F.col("_n") <= F.floor(F.col("_total") * F.lit(share))) & (F.col("_n") < F.col("_total"))
    return numbered.where(~held).drop("_n", "_total"), numbered.where(held).drop("_n", "_total")


def validation_targets(fit: DataFrame, held_out: DataFrame) -> DataFrame:
    """(user_id, item_id, relevance=1): held-out positive items the user had not touched in `fit`."""
    return (
        held_out.where(F.col("label") == 1)
        .select("user_id", "item_id")
        .distinct()
        .join(seen_items(fit), ["user_id", "item_id"], "left_anti")
        .withColumn("relevance", F.lit(1.0))
    )


def score_point(
    fit: DataFrame, targets: DataFrame, params: CandidateParams, catalog_size: int
) -> dict[str, float]:
    """NDCG@10 and recall@per_source of ALS fitted with `params` on `fit`, over the users with targets."""
    from spark_jobs.evaluation import ranking_metrics

    users = targets.select("user_id").distinct()
    user_factors, item_factors = als_factors(implicit_weights(fit), params)
    ranked = als_candidates(user_factors, item_factors, users, seen_items(fit), params.per_source).cache()
    ndcg = ranking_metrics(ranked, targets, NDCG_K, catalog_size)
    recall = ranking_metrics(ranked, targets, params.per_source, catalog_size)
    ranked.unpersist()
    return {
        f"ndcg@{NDCG_K}": ndcg[f"ndcg@{NDCG_K}"],
        f"recall@{params.per_source}": recall[f"recall@{params.per_source}"],
        "users": ndcg["users"],
    }


def tune_als(
    history: DataFrame, params: CandidateParams, grid: AlsGrid, share: float, metric: str
) -> tuple[CandidateParams, list[dict[str, float]]]:
    """`params` with the ALS knobs of the best grid point, and the table of every point's metrics.
    A one-point grid, or no ALS source, is used as is (no fits, empty table)."""
    points = grid.points()
    if len(points) == 1 or ALS_SOURCE not in params.sources:
        return replace(params, **points[0]), []
    fit, held_out = validation_split(history, share)
    fit = fit.cache()
    targets = validation_targets(fit, held_out).cache()
    catalog_size = fit.select("item_id").distinct().count()
    table = [
        {**point, **score_point(fit, targets, replace(params, **point), catalog_size)} for point in points
    ]
    fit.unpersist()
    targets.unpersist()
    best = choose_best(table, metric)
    return replace(params, **{key: best[key] for key in GRID_KEYS}), table

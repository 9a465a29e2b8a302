"""Offline evaluation on a time-based holdout: how well each model ranks what users did next.

The holdout of a cut-off T is what users positively interacted with in [T, T + horizon) and had not
touched before T (`relevant_items`). Every model is judged by its top-k list per user:
popularity and ALS by their own candidate ranks (`top_k_from_source`), the rankers by their scores over
all candidates (`top_k_by_score`), the blend by reciprocal-rank fusion of the rankers (`rank_fusion`).
`ranking_metrics` computes the means of spark_jobs.metrics' per-user functions inside Spark tasks, so
it scales with the number of users. Callers: spark_jobs.steps.models (`train_*`, `evaluate`),
spark_jobs.model_registry (each training run's report), spark_jobs.offline_eval.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from spark_jobs.candidates import history_before, rank_top_n, seen_items
from spark_jobs.frames import union_all
from spark_jobs.metrics import (
    CANDIDATE_RECALL_CUTOFFS,
    METRIC_NAMES,
    UNION,
    candidate_recall,
    metric_key,
    parse_metric_key,
    user_metrics,
)
from spark_jobs.scoring import fused_scores, score_inputs
from spark_jobs.training_set import at, graded_labels


def relevant_items(interactions: DataFrame, as_of: date, horizon_days: int) -> DataFrame:
    """(user_id, item_id, relevance): graded labels of the holdout window, without items seen before as_of."""
    seen = seen_items(history_before(interactions, as_of))
    return graded_labels(interactions, as_of, horizon_days).join(seen, ["user_id", "item_id"], "left_anti")


def top_k_from_source(candidates: DataFrame, source: str, as_of: date, k: int) -> DataFrame:
    """(user_id, item_id, rank, score): one candidate source's own first k, as a stand-alone recommender."""
    return (
        at(candidates, as_of)
        .where((F.col("source") == source) & (F.col("rank") <= k))
        .select("user_id", "item_id", "rank", "score")
    )


def top_k_by_score(scored: DataFrame, k: int) -> DataFrame:
    """(user_id, item_id, rank, score): the k best-scored items per user (ties by item id)."""
    return rank_top_n(scored, k).select("user_id", "item_id", "rank", "score")


def rank_fusion(rankings: Iterable[DataFrame], k: int) -> DataFrame:
    """(user_id, item_id, rank, score): the first k of the reciprocal-rank fusion of full rankings."""
    return top_k_by_score(
        fused_scores(union_all([r.select("user_id", "item_id", "rank") for r in rankings])), k
    )


def _user_metric_batches(k: int):
    def compute(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for frame in frames:
            rows = []
            for ranked, relevance in zip(frame["ranked"], frame["relevance"]):
                gains = dict(relevance) if relevance is not None else {}
                rows.append(user_metrics(list(ranked) if ranked is not None else [], gains, k))
            yield pd.concat(
                [frame[["user_id"]].reset_index(drop=True), pd.DataFrame(rows, columns=list(METRIC_NAMES))],
                axis=1,
            )

    return compute


def user_ranking_metrics(rankings: DataFrame, relevance: DataFrame, k: int) -> DataFrame:
    """(user_id, ndcg, map, precision, recall, hr, mrr): each metric@k of every user with relevant items
    (a user without a ranking scores 0). What the means and the promotion gate's paired comparison use."""
    ranked = (
        rankings.where(F.col("rank") <= k)
        .groupBy("user_id")
        .agg(
            F.transform(
                F.array_sort(F.collect_list(F.struct("rank", "item_id"))), lambda s: s["item_id"]
            ).alias("ranked")
        )
    )
    gains = (
        relevance.where(F.col("relevance") > 0)
        .groupBy("user_id")
        .agg(
            F.map_from_entries(F.collect_list(F.struct("item_id", F.col("relevance").cast("double")))).alias(
                "relevance"
            )
        )
    )
    joined = gains.join(ranked, "user_id", "left").select("user_id", "ranked", "relevance")
    return joined.mapInPandas(
        _user_metric_batches(k), "user_id string, " + ", ".join(f"{m} double" for m in METRIC_NAMES)
    )


def mean_ranking_metrics(
    per_user: DataFrame, rankings: DataFrame, k: int, catalog_size: int
) -> dict[str, float]:
    """Means of `user_ranking_metrics` rows plus catalog coverage of those users' top k. Keys like
    `ndcg@10`, plus `users`."""
    means = per_user.agg(F.count("*").alias("users"), *[F.avg(m).alias(m) for m in METRIC_NAMES]).first()
    covered = (
        rankings.where(F.col("rank") <= k)
        .join(per_user.select("user_id"), "user_id")
        .select("item_id")
        .distinct()
        .count()
    )
    result = {metric_key(m, k): float(means[m] or 0.0) for m in METRIC_NAMES}
    result[metric_key("coverage", k)] = covered / catalog_size if catalog_size else 0.0
    result["users"] = float(means["users"])
    return result


def ranking_metrics(rankings: DataFrame, relevance: DataFrame, k: int, catalog_size: int) -> dict[str, float]:
    """Mean per-user metrics@k over the users with relevant items (a user without a ranking scores 0),
    plus catalog coverage of those users' top k. Keys like `ndcg@10`, plus `users`."""
    return mean_ranking_metrics(user_ranking_metrics(rankings, relevance, k), rankings, k, catalog_size)


def _candidate_recall_batches(sources: Sequence[str], cutoffs: Sequence[int], keys: Sequence[str]):
    def compute(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for frame in frames:
            rows = []
            for pools, relevance in zip(frame["pools"], frame["relevance"]):
                given = dict(pools) if pools is not None else {}
                rows.append(
                    candidate_recall({s: list(given.get(s, ())) for s in sources}, dict(relevance), cutoffs)
                )
            yield pd.DataFrame(rows, columns=list(keys))

    return compute


def candidate_pool_recall(
    candidates: DataFrame,
    relevance: DataFrame,
    sources: Sequence[str],
    cutoffs: Sequence[int] = CANDIDATE_RECALL_CUTOFFS,
) -> dict[str, float]:
    """Mean of spark_jobs.metrics.candidate_recall over the users that have relevant items and
    candidates: `<source>@N` and `union@N` for each N in `cutoffs`, plus `users`. `candidates` are
    (user_id, source, item_id, rank) rows of one cut-off, `relevance` (user_id, item_id, relevance)."""
    depth = max(cutoffs)
    keys = [metric_key(name, n) for n in cutoffs for name in (*sources, UNION)]
    per_source = (
        candidates.where(F.col("rank") <= depth)
        .groupBy("user_id", "source")
        .agg(
            F.transform(
                F.array_sort(F.collect_list(F.struct("rank", "item_id"))), lambda s: s["item_id"]
            ).alias("items")
        )
    )
    pools = per_source.groupBy("user_id").agg(
        F.map_from_entries(F.collect_list(F.struct("source", "items"))).alias("pools")
    )
    gains = (
        relevance.where(F.col("relevance") > 0)
        .groupBy("user_id")
        .agg(
            F.map_from_entries(F.collect_list(F.struct("item_id", F.col("relevance").cast("double")))).alias(
                "relevance"
            )
        )
    )
    per_user = (
        gains.join(pools, "user_id")
        .select("pools", "relevance")
        .mapInPandas(
            _candidate_recall_batches(tuple(sources), tuple(cutoffs), keys),
            ", ".join(f"`{k}` double" for k in keys),
        )
    )
    means = per_user.agg(
        F.count("*").alias("users"), *[F.avg(F.col(f"`{k}`")).alias(k) for k in keys]
    ).first()
    return {**{k: float(means[k] or 0.0) for k in keys}, "users": float(means["users"])}


# -- one holdout, many models ----------------------------------------------------------------------

BASELINE_SOURCES: tuple[str, ...] = ("popular", "als", "covisit")
BLEND = "blend"


@dataclass
class Holdout:
    """Everything a model is judged on for cut-off `as_of`: its candidates' ranker inputs and what users did next."""

    as_of: date
    candidates: DataFrame
    inputs: DataFrame
    relevance: DataFrame
    catalog_size: int
    k: int


def holdout_data(
    candidates: DataFrame,
    user_features: DataFrame,
    item_features: DataFrame,
    interactions: DataFrame,
    as_of: date,
    horizon_days: int,
    k: int,
    realtime: DataFrame | None = None,
) -> Holdout:
    from spark_jobs.training_set import ranker_inputs

    catalog_size = at(item_features, as_of).select("item_id").distinct().count()
    return Holdout(
        as_of=as_of,
        candidates=at(candidates, as_of).cache(),
        inputs=ranker_inputs(candidates, user_features, item_features, as_of, realtime).cache(),
        relevance=relevant_items(interactions, as_of, horizon_days).cache(),
        catalog_size=catalog_size,
        k=k,
    )


def holdout_rankings(
    holdout: Holdout,
    models: Mapping[str, object],
    sources: Sequence[str] = BASELINE_SOURCES,
    blend: Sequence[str] = (),
) -> dict[str, DataFrame]:
    """Each model's top k on the holdout (label -> (user_id, item_id, rank, score)): each candidate source
    alone, each ranker (label -> a scoring.NativeModel, over all of each user's candidates) and, when
    `blend` names two or more rankers, their reciprocal-rank fusion (`blend`)."""
    rankings = {
        source: top_k_from_source(holdout.candidates, source, holdout.as_of, holdout.k) for source in sources
    }
    # each ranker scores the inputs once: its top k and the blend's whole order both read them
    scored = {label: score_inputs(holdout.inputs, model).cache() for label, model in models.items()}
    for label, scores in scored.items():
        rankings[label] = top_k_by_score(scores, holdout.k)
    if len(blend) >= 2:
        full_depth = 1_000_000  # fusion needs each ranker's whole order, not only its top k
        rankings[BLEND] = rank_fusion(
            [top_k_by_score(scored[label], full_depth) for label in blend], holdout.k
        )
    return rankings


def evaluate_models(
    holdout: Holdout,
    models: Mapping[str, object],
    sources: Sequence[str] = BASELINE_SOURCES,
    blend: Sequence[str] = (),
) -> dict[str, dict[str, float]]:
    """Metrics@k on the holdout of every ranking of `holdout_rankings`."""
    return {
        label: ranking_metrics(ranked, holdout.relevance, holdout.k, holdout.catalog_size)
        for label, ranked in holdout_rankings(holdout, models, sources, blend).items()
    }


@dataclass(frozen=True)
class HoldoutEvaluation:
    """Metrics@k per model, and one metric per user and model (`per_user`: user_id + a column per
    model label; the same users for every model) for the promotion gate's paired comparison."""

    results: dict[str, dict[str, float]]
    per_user: pd.DataFrame


def evaluate_with_per_user(
    holdout: Holdout,
    models: Mapping[str, object],
    metric: str,
    sources: Sequence[str] = BASELINE_SOURCES,
    blend: Sequence[str] = (),
) -> HoldoutEvaluation:
    """`evaluate_models` plus every user's value of `metric` (e.g. `ndcg@10`, at the holdout's k), each
    model's per-user metrics computed once for both."""
    name, k = parse_metric_key(metric)
    if k != holdout.k or name not in METRIC_NAMES:
        raise ValueError(
            f"{metric!r} is not a per-user metric at the holdout's k={holdout.k} (one of {', '.join(metric_key(m, holdout.k) for m in METRIC_NAMES)})"
        )
    results: dict[str, dict[str, float]] = {}
    per_user = None
    for label, ranked in holdout_rankings(holdout, models, sources, blend).items():
        users = user_ranking_metrics(ranked, holdout.relevance, holdout.k).cache()
        results[label] = mean_ranking_metrics(users, ranked, holdout.k, holdout.catalog_size)
        values = users.select("user_id", F.col(name).alias(label)).toPandas()
        per_user = (
            values
            if per_user is None
            else per_user.merge(values, on="user_id", how="outer", validate="one_to_one")
        )
        users.unpersist()
    if per_user is None or per_user.isna().any().any():
        raise RuntimeError("the models' per-user metrics are not over the same holdout users")
    return HoldoutEvaluation(results, per_user.sort_values("user_id", ignore_index=True))

"""What the XGBoost and LightGBM rankers share: query ids, the validation split, native prediction,
per-query NDCG, feature importance and the choice of how many trees the compressed model keeps."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from feature_store.ranking import RANKER_FEATURES
from feature_store.settings import RankerSettings
from spark_jobs.metrics import ndcg_at_k
from spark_jobs.request_examples import asking_user

RankerKind = Literal["xgboost", "lightgbm"]
VALIDATION_SHARE = 0.2
MAX_VALIDATION_QUERIES = 20_000


@dataclass(frozen=True)
class RankerParams:
    trees: int = 200
    max_depth: int = 3
    learning_rate: float = 0.05
    num_workers: int = 2
    seed: int = 42
    min_child_weight: float = 10.0

    @classmethod
    def from_settings(cls, ranker: RankerSettings, **overrides) -> RankerParams:
        """The knobs as set (each has its name in RankerSettings); `overrides` on top (the seed)."""
        values = {f.name: getattr(ranker, f.name) for f in fields(cls) if f.name in type(ranker).model_fields}
        values.update(overrides)
        return cls(**values)


@dataclass
class TrainedRanker:
    """A trained native booster (xgboost.Booster or lightgbm.Booster) and how it was trained."""

    kind: RankerKind
    booster: Any
    n_trees: int
    params: dict[str, Any]
    train_seconds: float
    num_workers: int
    extra: dict[str, Any] = field(default_factory=dict)

    def predict(self, features: np.ndarray, trees: int | None = None) -> np.ndarray:
        """Scores of rows in RANKER_FEATURES order (NaN = missing), optionally with only the first trees."""
        return predict_native(self.kind, self.booster, features, trees)

    def native_bytes(self) -> bytes:
        """The booster in its library's own portable format (xgboost JSON, LightGBM text)."""
        if self.kind == "xgboost":
            return bytes(self.booster.save_raw(raw_format="json"))
        return self.booster.model_to_string().encode()

    def importance(self) -> dict[str, float]:
        """Total gain per feature name (0 for features no tree split on)."""
        return feature_importance(self.kind, self.booster)

    def first_trees(self, trees: int) -> TrainedRanker:
        """The same ranker holding only its first `trees` trees (a boosted model's prefix is a model)."""
        if self.kind == "xgboost":
            booster = self.booster[:trees]
        else:
            import lightgbm

            booster = lightgbm.Booster(model_str=self.booster.model_to_string(num_iteration=trees))
        return TrainedRanker(
            self.kind, booster, trees, self.params, self.train_seconds, self.num_workers, dict(self.extra)
        )


def predict_native(
    kind: RankerKind,
    booster: Any,
    features: np.ndarray,
    trees: int | None = None,
    columns: Sequence[int] | None = None,
) -> np.ndarray:
    """Scores of RANKER_FEATURES rows; `columns` picks a model's own inputs out of them (one trained
    before an input was added, `feature_store.registry.feature_columns`)."""
    matrix = np.asarray(features, dtype=np.float32).reshape(-1, len(RANKER_FEATURES))
    if columns is not None:
        matrix = np.ascontiguousarray(matrix[:, list(columns)])
    if kind == "xgboost":
        import xgboost

        iteration_range = (0, trees) if trees else (0, 0)
        return booster.predict(xgboost.DMatrix(matrix, missing=np.nan), iteration_range=iteration_range)
    return booster.predict(matrix, num_iteration=trees or None)


def feature_importance(kind: RankerKind, booster: Any) -> dict[str, float]:
    if kind == "xgboost":
        gains = booster.get_score(importance_type="total_gain")
        # Boosters trained from an array column name their features f0, f1, ...
        return {
            name: float(gains.get(f"f{i}", gains.get(name, 0.0))) for i, name in enumerate(RANKER_FEATURES)
        }
    return {
        name: float(g) for name, g in zip(RANKER_FEATURES, booster.feature_importance(importance_type="gain"))
    }


def with_query_ids(examples: DataFrame) -> DataFrame:
    """Adds `qid`: a dense int per user (both libraries group rows by an integer query id)."""
    from spark_jobs.candidates import index_ids

    return examples.join(index_ids(examples, "user_id").withColumnRenamed("idx", "qid"), "user_id")


def partitioned_queries(examples: DataFrame, num_workers: int) -> DataFrame:
    """(qid, item_id, features, relevance) in `num_workers` partitions, query q in partition
    q % num_workers, each sorted by (qid, item_id).

    A shuffle hands a task its rows in the order the map outputs arrive, which differs between local
    mode and a cluster, and both libraries' models depend on row order (bins, pair sampling, ties).
    Training on these partitions makes the model a function of the rows alone."""
    with_qid = with_query_ids(examples).select("qid", "item_id", "features", "relevance")
    by_query = (
        with_qid.rdd.keyBy(lambda row: row.qid % num_workers)
        .partitionBy(num_workers, lambda worker: worker)
        .values()
    )
    return examples.sparkSession.createDataFrame(by_query, with_qid.schema).sortWithinPartitions(
        "qid", "item_id"
    )


def split_validation(
    examples: DataFrame, seed: int, share: float = VALIDATION_SHARE
) -> tuple[DataFrame, DataFrame]:
    """(train, validation) by a seeded hash of the asking user, the same every run: all of a user's
    queries (the moments of the request-time set) on one side. Moments of one user share label events
    (the next hour's positives) and feature values, so validating on a user the ranker trained on
    rewards memorising that user's items."""
    bucket = F.abs(F.xxhash64(F.lit(seed), asking_user(F.col("user_id")))) % 1000
    is_validation = bucket < int(share * 1000)
    return examples.where(~is_validation), examples.where(is_validation)


@dataclass(frozen=True)
class LocalQueries:
    """A set of queries on the driver: rows sorted by query, with per-query boundaries."""

    features: np.ndarray
    relevance: np.ndarray
    query_ids: np.ndarray
    item_ids: np.ndarray

    def boundaries(self) -> list[tuple[int, int]]:
        if len(self.query_ids) == 0:
            return []
        starts = np.flatnonzero(np.r_[True, self.query_ids[1:] != self.query_ids[:-1]])
        ends = np.r_[starts[1:], len(self.query_ids)]
        return list(zip(starts.tolist(), ends.tolist()))


def collect_queries(examples: DataFrame, max_queries: int = MAX_VALIDATION_QUERIES) -> LocalQueries:
    """Brings at most `max_queries` users' rows (user_id, item_id, features, relevance) to the driver."""
    users = examples.select("user_id").distinct().orderBy("user_id").limit(max_queries)
    rows = examples.join(users, "user_id").orderBy("user_id", "item_id").collect()
    return LocalQueries(
        features=np.array([r.features for r in rows], dtype=np.float32).reshape(
            len(rows), len(RANKER_FEATURES)
        ),
        relevance=np.array([r.relevance for r in rows], dtype=np.float64),
        query_ids=np.array([r.user_id for r in rows], dtype=object),
        item_ids=np.array([r.item_id for r in rows], dtype=object),
    )


def mean_ndcg(queries: LocalQueries, scores: np.ndarray, k: int = 10) -> float:
    """Mean NDCG@k over the queries with a relevant row, ranking each query's rows by score."""
    values = []
    for start, end in queries.boundaries():
        gains = {str(i): float(g) for i, g in zip(range(start, end), queries.relevance[start:end]) if g > 0}
        if not gains:
            continue
        order = np.argsort(-scores[start:end], kind="stable") + start
        values.append(ndcg_at_k([str(i) for i in order], gains, k))
    return float(np.mean(values)) if values else 0.0


def ndcg_by_tree_count(
    ranker: TrainedRanker, queries: LocalQueries, counts: Sequence[int], k: int = 10
) -> dict[int, float]:
    """Validation NDCG@k of the model cut to its first n trees, for each n in `counts`."""
    return {n: mean_ndcg(queries, ranker.predict(queries.features, trees=n), k) for n in counts}


def tree_count_grid(n_trees: int, steps: int = 20) -> list[int]:
    """Candidate prefix lengths: about `steps` evenly spaced counts, always including all trees."""
    step = max(1, n_trees // steps)
    return sorted(set(range(step, n_trees + 1, step)) | {n_trees})


def best_tree_count(ndcg_by_trees: Mapping[int, float]) -> int:
    """The prefix with the highest NDCG, the fewest trees on a tie."""
    best = max(ndcg_by_trees.values())
    return min(n for n, value in ndcg_by_trees.items() if value == best)


def early_stopped(ranker: TrainedRanker, validation: LocalQueries) -> TrainedRanker:
    """The ranker cut to its best prefix on the validation queries (early stopping after the fact):
    `trees` is then a ceiling, so the same setting serves a night of a few hundred queries, where late
    trees fit noise, and one of thousands, where they still add signal. Without a validation query
    that has a relevant row there is no evidence, and every tree stays."""
    if not np.any(validation.relevance > 0):
        return ranker
    by_trees = ndcg_by_tree_count(ranker, validation, tree_count_grid(ranker.n_trees))
    kept = ranker.first_trees(best_tree_count(by_trees))
    kept.extra["early_stopping"] = {
        "trained_trees": ranker.n_trees,
        "kept_trees": kept.n_trees,
        "validation_ndcg@10_by_trees": {str(n): v for n, v in by_trees.items()},
    }
    return kept


def choose_tree_count(ndcg_by_trees: Mapping[int, float], tolerance: float) -> int:
    """The fewest first trees whose NDCG is within `tolerance` of the full model's (the largest count)."""
    full = ndcg_by_trees[max(ndcg_by_trees)]
    return min(n for n, value in ndcg_by_trees.items() if value >= full - tolerance)

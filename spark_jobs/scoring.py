"""Batch scoring: rank every active user's candidates with a ranker and keep the top N.

`score_inputs` runs a native booster (xgboost JSON / LightGBM text, as stored in a registered model's
`native_model` file) inside Spark tasks over `training_set.ranker_inputs` rows; evaluation uses it for
the holdout, the `score` step (`score_batch`) for today's candidates with the `@champion` model, writing
`gold/batch_scores`. Without any champion yet (a first run whose model did not pass the gate) the batch
falls back to reciprocal-rank fusion of the candidate sources, recorded as model version `none`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from feature_store.ranking import CANDIDATE_SOURCES
from feature_store.tables import BATCH_SCORES
from spark_jobs.candidates import rank_top_n
from spark_jobs.rankers.common import RankerKind, predict_native

NO_MODEL_VERSION = "none"
RRF_K = 60  # reciprocal-rank fusion constant (Cormack et al.): 1 / (60 + rank)


@dataclass(frozen=True)
class NativeModel:
    """A ranker as bytes, so it ships to Spark tasks without MLflow or training code."""

    kind: RankerKind
    native: bytes
    version: str = NO_MODEL_VERSION
    trees: int | None = None  # score with only the first trees (None = all)
    columns: tuple[int, ...] | None = None  # the model's inputs in RANKER_FEATURES (None: all, in order)


def registered_model(loaded) -> NativeModel:
    """The NativeModel of a ranker loaded from the registry (`feature_store.registry.load_ranker`):
    it scores the inputs it was trained on (`LoadedRanker.columns`, picked out of today's
    RANKER_FEATURES rows), so a champion from before an input was added keeps scoring after the
    upgrade, as it does in serving."""
    columns = None if loaded.columns is None else tuple(map(int, loaded.columns))
    return NativeModel(loaded.kind, loaded.native, loaded.version, columns=columns)


_BOOSTERS: dict[int, object] = {}  # per Python worker: parsed boosters by hash of their bytes


def load_booster(kind: RankerKind, native: bytes):
    """Parse a native model (cached per worker process, so each task pays it once)."""
    key = hash((kind, native))
    if key not in _BOOSTERS:
        from feature_store.registry import parse_native_booster

        _BOOSTERS.clear()
        _BOOSTERS[key] = parse_native_booster(kind, native)
    return _BOOSTERS[key]


def score_inputs(inputs: DataFrame, model: NativeModel) -> DataFrame:
    """(user_id, item_id, score, sources) for ranker_inputs rows (user_id, item_id, features, sources)."""
    shared = inputs.sparkSession.sparkContext.broadcast(model)

    def score(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        m = shared.value
        booster = load_booster(m.kind, m.native)
        for frame in frames:
            if frame.empty:
                continue
            matrix = np.vstack([np.asarray(f, dtype=np.float32) for f in frame["features"]])
            yield pd.DataFrame(
                {
                    "user_id": frame["user_id"],
                    "item_id": frame["item_id"],
                    "score": predict_native(m.kind, booster, matrix, m.trees, m.columns).astype(np.float64),
                    "sources": frame["sources"],
                }
            )

    return inputs.select("user_id", "item_id", "features", "sources").mapInPandas(
        score, "user_id string, item_id string, score double, sources array<string>"
    )


def top_n_scores(scored: DataFrame, n: int, as_of: date, model_version: str) -> DataFrame:
    """The `gold/batch_scores` rows: each user's n best (user_id, item_id, score, sources) with rank."""
    return (
        rank_top_n(scored, n)
        .select(
            F.lit(as_of).cast("date").alias("as_of"),
            "user_id",
            "item_id",
            F.col("score").cast("double"),
            F.col("rank").cast("int"),
            "sources",
            F.lit(model_version).alias("model_version"),
        )
        .select(*BATCH_SCORES.columns)
    )


def fused_scores(ranked: DataFrame) -> DataFrame:
    """(user_id, item_id, score): reciprocal-rank fusion of rows (user_id, item_id, rank) from several rankings."""
    return ranked.groupBy("user_id", "item_id").agg(
        F.sum(1.0 / (F.lit(RRF_K) + F.col("rank"))).alias("score")
    )


def fused_source_scores(candidates: DataFrame) -> DataFrame:
    """(user_id, item_id, score, sources) by reciprocal-rank fusion of the sources: the no-model fallback."""
    from spark_jobs.training_set import candidate_scores

    proposed = candidates.where(F.col("source").isin(*CANDIDATE_SOURCES))
    return fused_scores(proposed).join(
        candidate_scores(candidates).select("user_id", "item_id", "sources"), ["user_id", "item_id"]
    )

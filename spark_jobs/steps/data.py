"""The nightly's data steps: gold features, every source's candidates (ALS tuned once per run) and
the request-time training set, each written to its Delta table for the run date's cut-offs."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from feature_store.ranking import CANDIDATE_SOURCES, POOL_SCORERS
from feature_store.tables import (
    CANDIDATES,
    INTERACTIONS,
    ITEM_FEATURES,
    ITEM_SIMILAR,
    TRAINING_SET,
    USER_FEATURES,
)
from spark_jobs.delta_io import as_of_condition
from spark_jobs.frames import union_all
from spark_jobs.model_registry import log_step_run
from spark_jobs.steps.context import BatchContext


def step_features(ctx: BatchContext) -> dict[str, Any]:
    from spark_jobs.features import run_features

    cut = ctx.cutoffs
    report = run_features(ctx.spark, ctx.settings, cut.train, cut.serve + timedelta(days=1))
    return {
        "as_of": [str(cut.train), str(cut.serve)],
        "user_rows": report.user_rows,
        "item_rows": report.item_rows,
    }


def step_candidates(ctx: BatchContext) -> dict[str, Any]:
    from spark_jobs.als_tuning import GRID_KEYS, AlsGrid, tune_als
    from spark_jobs.candidates import (
        CandidateParams,
        active_users,
        build_candidates,
        history_before,
        next_items,
    )
    from spark_jobs.evaluation import candidate_pool_recall

    settings, cut = ctx.settings, ctx.cutoffs
    interactions = ctx.read(INTERACTIONS).cache()
    # ALS's knobs are chosen once per run, on what the earliest cut-off sees: no later cut-off's labels leak in
    params, tuning = tune_als(
        history_before(interactions, cut.train),
        CandidateParams.from_settings(settings.candidates),
        AlsGrid.from_settings(settings.candidates),
        settings.candidates.als_validation_share,
        settings.candidates.als_tune_metric,
    )
    cutoffs = (cut.train, cut.holdout, cut.serve)
    candidates, similar = [], []
    for as_of in cutoffs:
        sources, neighbours = build_candidates(
            interactions,
            active_users(interactions, as_of, settings.batch.active_user_days).cache(),
            as_of,
            params,
        )
        candidates += sources.values()
        similar.append(neighbours)
    # One commit per table for all three cut-offs: each Delta commit costs about a second on 2 cores,
    # and the twelve small per-source, per-cut-off writes were most of the step.
    condition = as_of_condition(*cutoffs)
    ctx.replace_where(CANDIDATES, union_all(candidates), condition)
    ctx.replace_where(ITEM_SIMILAR, union_all(similar), condition)
    written = ctx.read(CANDIDATES).where(F.col("as_of").isin(list(cutoffs)))
    rows: dict[str, dict[str, int]] = {
        str(as_of): {s: 0 for s in (*CANDIDATE_SOURCES, *POOL_SCORERS)} for as_of in cutoffs
    }
    for row in written.groupBy("as_of", "source").count().collect():
        rows[str(row["as_of"])][row["source"]] = row["count"]
    neighbours = dict(
        ctx.read(ITEM_SIMILAR).where(F.col("as_of").isin(list(cutoffs))).groupBy("as_of").count().collect()
    )
    # the next interactions of the earlier cut-offs are known: how much of them do candidates cover?
    recall = {
        str(as_of): candidate_pool_recall(
            written.where(F.col("as_of") == F.lit(as_of)),
            next_items(interactions, as_of, days).withColumn("relevance", F.lit(1.0)),
            params.sources,
        )
        for as_of, days in ((cut.train, settings.batch.label_horizon_days), (cut.holdout, cut.holdout_days))
    }
    chosen = {key: getattr(params, key) for key in GRID_KEYS}
    metrics = {f"recall.{a}.{s}": v for a, r in recall.items() for s, v in r.items()}
    metrics.update({f"als_tuning.{i}.{m}": v for i, row in enumerate(tuning) for m, v in row.items()})
    log_step_run(settings, "candidates", ctx.run_date, cut.holdout, metrics, params=chosen)
    return {
        "rows": rows,
        "item_similar_rows": {str(a): neighbours.get(a, 0) for a in cutoffs},
        "recall": recall,
        "als": chosen,
        "als_tuning": tuning,
    }


def step_training_set(ctx: BatchContext) -> dict[str, Any]:
    from feature_store.realtime import realtime_params
    from spark_jobs.request_examples import build_request_time_set

    settings, cut = ctx.settings, ctx.cutoffs
    examples = build_request_time_set(
        ctx.read(CANDIDATES),
        ctx.read(USER_FEATURES),
        ctx.read(ITEM_FEATURES),
        ctx.read(ITEM_SIMILAR),
        ctx.read(INTERACTIONS),
        cut.train,
        cut.holdout,
        realtime_params(settings),
        horizon_ms=settings.batch.request_label_horizon_minutes * 60_000,
        moments_per_user=settings.batch.request_moments_per_user,
        max_negatives=settings.batch.max_negatives_per_query,
        session_start_moments=settings.batch.request_session_start_moments,
        moments_without_speed_per_user=settings.batch.request_moments_without_speed_per_user,
        next_item_relevance=settings.batch.request_next_item_relevance,
    )
    rows = ctx.replace_where(TRAINING_SET, examples, as_of_condition(cut.train))
    return {"as_of": str(cut.train), "rows": rows}


def realtime_at(ctx: BatchContext, as_of: date) -> DataFrame:
    """The real-time inputs of cut-off `as_of`'s candidates at the cut-off (see request_examples)."""
    from feature_store.realtime import realtime_params
    from spark_jobs.request_examples import realtime_at_cutoff

    return realtime_at_cutoff(
        ctx.read(CANDIDATES),
        ctx.read(ITEM_FEATURES),
        ctx.read(ITEM_SIMILAR),
        ctx.read(INTERACTIONS),
        as_of,
        realtime_params(ctx.settings),
    )

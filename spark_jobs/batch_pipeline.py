"""The nightly batch pipeline: one day of events in, a promoted ranker and a published batch out.

The steps, what each reads and writes and what makes it idempotent for a run date D are declared once
in feature_store.nightly (`NIGHTLY_STEPS`); this module holds one body per declared step (`STEPS`, in
the declared order). Each reads its inputs from Delta tables and MLflow and writes its outputs there,
never handing data over in memory. h = `Settings.label_horizon_days`; the holdout starts H =
`Settings.holdout_days` (default h) before D and the training cut-off h before that. Entry points:
`run_step` (`lambdarec batch step`, and `lambdarec/batch_task.py`, what the Airflow DAG's
SparkSubmitOperator launches), `run_batch` (all steps, `lambdarec batch run`).
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from feature_store.nightly import step_names
from feature_store.ranking import CANDIDATE_SOURCES
from feature_store.redis_keys import RedisKeys
from feature_store.settings import Settings
from feature_store.tables import (
    BATCH_SCORES,
    CANDIDATES,
    INTERACTIONS,
    ITEM_FEATURES,
    ITEM_SIMILAR,
    TRAINING_SET,
    USER_FEATURES,
    Table,
)
from spark_jobs.frames import union_all
from spark_jobs.session import job_cache

log = logging.getLogger("lambdarec.batch")
EVAL_K = 10


class BatchStepError(RuntimeError):
    """A step cannot run on the data it found (the message says what is missing and what to run)."""


@dataclass(frozen=True)
class Cutoffs:
    """The three cut-offs of run date D with label horizon h and holdout length H (default h): judge on
    D-H (labels up to D), train on D-H-h (labels up to D-H), serve D."""

    train: date
    holdout: date
    serve: date

    @classmethod
    def of(cls, run_date: date, horizon_days: int, holdout_days: int | None = None) -> Cutoffs:
        holdout = run_date - timedelta(days=holdout_days or horizon_days)
        return cls(train=holdout - timedelta(days=horizon_days), holdout=holdout, serve=run_date)

    @property
    def holdout_days(self) -> int:
        return (self.serve - self.holdout).days


@dataclass
class BatchContext:
    """What every step gets: the session, settings, run date, and the outside world passed in."""

    spark: SparkSession
    settings: Settings
    run_date: date
    redis_url: Callable[[], str] = field(default=lambda: "")
    clock: Callable[[], float] = time.time

    @property
    def cutoffs(self) -> Cutoffs:
        return Cutoffs.of(self.run_date, self.settings.label_horizon_days, self.settings.holdout_days)

    def read(self, table: Table) -> DataFrame:
        from spark_jobs.delta_io import read_table

        return read_table(self.spark, self.settings, table)


# -- Delta writes ----------------------------------------------------------------------------------


def replace_where(ctx: BatchContext, table: Table, df: DataFrame, condition: str) -> int:
    """Overwrite exactly the rows matching `condition` (one partition) with `df`; rows written."""
    from spark_jobs.delta_io import conform, ensure_table, last_commit_metrics

    path = ensure_table(ctx.spark, ctx.settings, table)
    conform(df, table).write.format("delta").mode("overwrite").option("replaceWhere", condition).save(path)
    return int(last_commit_metrics(ctx.spark, path).get("numOutputRows", 0))


def as_of_condition(as_of: date) -> str:
    return f"as_of = DATE'{as_of.isoformat()}'"


def as_of_in_condition(dates: tuple[date, ...]) -> str:
    return "as_of IN (" + ", ".join(f"DATE'{d.isoformat()}'" for d in dates) + ")"


# -- steps -------------------------------------------------------------------------------------------


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
        CandidateParams.from_settings(settings),
        AlsGrid.from_settings(settings),
        settings.als_validation_share,
        settings.als_tune_metric,
    )
    cutoffs = (cut.train, cut.holdout, cut.serve)
    candidates, similar = [], []
    for as_of in cutoffs:
        sources, neighbours = build_candidates(
            interactions, active_users(interactions, as_of, settings.active_user_days).cache(), as_of, params
        )
        candidates += sources.values()
        similar.append(neighbours)
    # One commit per table for all three cut-offs: each Delta commit costs about a second on 2 cores,
    # and the twelve small per-source, per-cut-off writes were most of the step.
    condition = as_of_in_condition(cutoffs)
    replace_where(ctx, CANDIDATES, union_all(candidates), condition)
    replace_where(ctx, ITEM_SIMILAR, union_all(similar), condition)
    written = ctx.read(CANDIDATES).where(F.col("as_of").isin(list(cutoffs)))
    rows: dict[str, dict[str, int]] = {str(as_of): {s: 0 for s in CANDIDATE_SOURCES} for as_of in cutoffs}
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
            CANDIDATE_SOURCES,
        )
        for as_of, days in ((cut.train, settings.label_horizon_days), (cut.holdout, cut.holdout_days))
    }
    chosen = {key: getattr(params, key) for key in GRID_KEYS}
    metrics = {f"recall.{a}.{s}": v for a, r in recall.items() for s, v in r.items()}
    metrics.update({f"als_tuning.{i}.{m}": v for i, row in enumerate(tuning) for m, v in row.items()})
    _log_step_run(ctx, "candidates", metrics, params=chosen)
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
        horizon_ms=settings.request_label_horizon_minutes * 60_000,
        moments_per_user=settings.request_moments_per_user,
        max_negatives=settings.max_negatives_per_query,
    )
    rows = replace_where(ctx, TRAINING_SET, examples, as_of_condition(cut.train))
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


def holdout(ctx: BatchContext):
    from spark_jobs.evaluation import holdout_data

    return holdout_data(
        ctx.read(CANDIDATES),
        ctx.read(USER_FEATURES),
        ctx.read(ITEM_FEATURES),
        ctx.read(INTERACTIONS),
        ctx.cutoffs.holdout,
        ctx.cutoffs.holdout_days,
        EVAL_K,
        realtime=realtime_at(ctx, ctx.cutoffs.holdout),
    )


def run_versions(ctx: BatchContext) -> dict[str, dict[str, Any]]:
    """This run date's registered versions: version -> tags."""
    from spark_jobs.model_registry import list_versions

    return {
        v["version"]: v["tags"]
        for v in list_versions(ctx.settings)
        if v["tags"].get("run_date") == str(ctx.run_date)
    }


def step_train(ctx: BatchContext, kind: str) -> dict[str, Any]:
    from spark_jobs.evaluation import BASELINE_SOURCES, evaluate_models
    from spark_jobs.model_registry import log_ranker_run
    from spark_jobs.rankers.common import RankerParams, collect_queries, split_validation
    from spark_jobs.rankers.export import export_ranker
    from spark_jobs.scoring import NativeModel
    from spark_jobs.training_set import at

    done = [v for v, tags in run_versions(ctx).items() if tags.get("kind") == kind]
    if done:
        return {"kind": kind, "version": done[0], "skipped": "already registered for this run date"}
    settings, cut = ctx.settings, ctx.cutoffs
    examples = at(ctx.read(TRAINING_SET), cut.train).cache()
    if examples.limit(1).count() == 0:
        raise BatchStepError(
            f"no training examples for as_of {cut.train}: the training set needs candidates and events in "
            f"[{cut.train}, {cut.holdout}); run the steps `candidates` and `training_set` (or use a later --date)"
        )
    params = RankerParams.from_settings(settings)
    train_part, validation_part = split_validation(examples, params.seed)
    if kind == "xgboost":
        from spark_jobs.rankers.xgboost_ranker import train_xgboost as train
    else:
        from spark_jobs.rankers.lightgbm_ranker import train_lightgbm as train
    ranker = train(train_part, params)
    results = evaluate_models(
        holdout(ctx), {kind: NativeModel(kind, ranker.native_bytes())}, sources=BASELINE_SOURCES[:2]
    )
    tags = {"as_of": str(cut.train), "run_date": str(ctx.run_date), "holdout_as_of": str(cut.holdout)}
    with tempfile.TemporaryDirectory() as tmp:
        meta = export_ranker(
            ranker,
            collect_queries(validation_part),
            settings.ranker_compress_tolerance,
            Path(tmp),
            extra_meta={
                "trained_as_of": str(cut.train),
                "holdout_as_of": str(cut.holdout),
                "holdout": results[kind],
            },
        )
        registered = log_ranker_run(
            settings,
            Path(tmp),
            meta,
            {**ranker.params, "num_workers": ranker.num_workers},
            results,
            ranker.importance(),
            tags,
        )
    return {
        "kind": kind,
        "version": registered.version,
        "holdout": results[kind],
        "train_seconds": ranker.train_seconds,
        "compressed": meta["compressed"],
    }


def holdout_tag(as_of: date | str, metric: str) -> str:
    from spark_jobs.model_registry import mlflow_key

    return f"holdout.{as_of}.{mlflow_key(metric)}"


PER_USER_ARTIFACT = "holdout_per_user.csv"


def per_user_column(version: str) -> str:
    """The column of a registered version in the evaluate run's per-user table."""
    return f"v{version}"


def step_evaluate(ctx: BatchContext) -> dict[str, Any]:
    """Compare every model of this run date, the champion and the baselines on the same holdout; the
    promotion metric of every holdout user and model goes to the run's `holdout_per_user.csv` (for
    the gate's paired comparison: computed here once, read by `promote`)."""
    from feature_store.registry import champion_version, load_ranker
    from spark_jobs.evaluation import evaluate_with_per_user
    from spark_jobs.model_registry import client
    from spark_jobs.scoring import NativeModel

    settings = ctx.settings
    versions = run_versions(ctx)
    champion = champion_version(settings)
    labels = {v: f"{tags.get('kind')} v{v}" for v, tags in versions.items()}
    if champion and champion not in labels:
        labels[champion] = f"champion v{champion}"
    models = {}
    for version, label in labels.items():
        loaded = load_ranker(settings, version, preferred="native")
        models[label] = NativeModel(loaded.kind, loaded.native, version)
    evaluation = evaluate_with_per_user(
        holdout(ctx), models, settings.promotion_metric, blend=[labels[v] for v in versions]
    )
    results = evaluation.results
    mlflow_client = client(settings)
    for version, label in labels.items():
        for metric, value in results[label].items():
            mlflow_client.set_model_version_tag(
                settings.ranker_model_name, version, holdout_tag(ctx.cutoffs.holdout, metric), str(value)
            )
    per_user = evaluation.per_user.rename(columns={label: per_user_column(v) for v, label in labels.items()})
    _log_step_run(
        ctx,
        "evaluate",
        {f"holdout.{label}.{m}": v for label, r in results.items() for m, v in r.items()},
        report=results,
        texts={PER_USER_ARTIFACT: per_user.to_csv(index=False)},
    )
    return {"holdout_as_of": str(ctx.cutoffs.holdout), "results": results}


def step_promote(ctx: BatchContext) -> dict[str, Any]:
    """The gate: the best of this date's versions becomes challenger, and champion only if its paired
    per-user gain over the current champion (first model: popularity) on the same holdout is above
    `promotion_min_gain` with confidence, over enough users (spark_jobs.model_registry.gate)."""
    from feature_store.registry import champion_version
    from spark_jobs.model_registry import GateRule, apply_gate, gate

    settings, metric = ctx.settings, ctx.settings.promotion_metric
    tag = holdout_tag(ctx.cutoffs.holdout, metric)
    versions = run_versions(ctx)
    champion = champion_version(settings)
    if not versions:
        raise BatchStepError(
            f"no model version registered for run date {ctx.run_date}: run train_xgboost / train_lightgbm first"
        )
    needed = [per_user_column(v) for v in versions] + [per_user_column(champion) if champion else "popular"]
    per_user = evaluation_per_user(ctx)
    if (
        any(tag not in tags for tags in versions.values())
        or per_user is None
        or any(c not in per_user for c in needed)
    ):
        step_evaluate(ctx)
        versions, per_user = run_versions(ctx), evaluation_per_user(ctx)
    best = max(versions, key=lambda v: float(versions[v][tag]))
    if best == champion:
        return {"version": best, "promoted": True, "reason": "already champion"}
    baseline, label = (
        (per_user_column(champion), f"champion v{champion}") if champion else ("popular", "popularity")
    )
    decision = apply_gate(
        settings,
        best,
        gate(per_user[per_user_column(best)], per_user[baseline], label, GateRule.from_settings(settings)),
    )
    return {
        "version": best,
        "promoted": decision.promote,
        "decision": decision.decision,
        "reason": decision.reason,
        "evidence": decision.evidence.as_dict(),
    }


def step_score(ctx: BatchContext) -> dict[str, Any]:
    from feature_store.registry import NoChampion, load_ranker
    from spark_jobs.scoring import (
        NO_MODEL_VERSION,
        NativeModel,
        fused_source_scores,
        score_inputs,
        top_n_scores,
    )
    from spark_jobs.training_set import at, ranker_inputs

    settings, as_of = ctx.settings, ctx.cutoffs.serve
    candidates = ctx.read(CANDIDATES)
    try:
        champion = load_ranker(settings, preferred="native")
        model = NativeModel(champion.kind, champion.native, champion.version)
        inputs = ranker_inputs(
            candidates, ctx.read(USER_FEATURES), ctx.read(ITEM_FEATURES), as_of, realtime_at(ctx, as_of)
        )
        scored = score_inputs(inputs, model)
        version = champion.version
    except NoChampion:
        log.warning(
            "no champion yet: batch scores fall back to reciprocal-rank fusion of the candidate sources"
        )
        scored, version = fused_source_scores(at(candidates, as_of)), NO_MODEL_VERSION
    rows = replace_where(
        ctx, BATCH_SCORES, top_n_scores(scored, settings.batch_top_n, as_of, version), as_of_condition(as_of)
    )
    return {"as_of": str(as_of), "rows": rows, "model_version": version}


def step_publish(ctx: BatchContext) -> dict[str, Any]:
    from spark_jobs.candidates import history_before, popularity
    from spark_jobs.publish import PublishTarget, batch_content, batch_version, publish_batch

    settings, as_of = ctx.settings, ctx.cutoffs.serve
    scores = ctx.read(BATCH_SCORES).where(F.col("as_of") == F.lit(as_of))
    first = scores.select("model_version").first()
    if first is None:
        raise BatchStepError(f"gold/batch_scores has nothing for as_of {as_of}: run the step `score` first")
    interactions = ctx.read(INTERACTIONS)
    popular_items = (
        popularity(
            history_before(interactions, as_of),
            as_of,
            settings.popular_window_days,
            settings.popular_half_life_days,
        )
        .orderBy(F.col("score").desc(), F.col("item_id"))
        .limit(settings.batch_top_n)
        .collect()
    )
    content = batch_content(
        scores,
        ctx.read(CANDIDATES),
        ctx.read(USER_FEATURES),
        ctx.read(ITEM_FEATURES),
        ctx.read(ITEM_SIMILAR),
        interactions,
        [(r.item_id, r.score) for r in popular_items],
        as_of,
    )
    now = ctx.clock()
    target = PublishTarget(
        ctx.redis_url(),
        settings.redis_key_prefix,
        batch_version(as_of, int(now)),
        settings.publish_pending_ttl_s,
    )
    meta = {
        "as_of": str(as_of),
        "model_name": settings.ranker_model_name,
        "model_version": first.model_version,
        "published_at": int(now),
        "version": target.version,
    }
    return publish_batch(target, content, meta, now, settings.publish_keep_versions, settings.publish_grace_s)


def step_expire(ctx: BatchContext) -> dict[str, Any]:
    import redis

    from spark_jobs.publish import expire_old_versions

    client = redis.Redis.from_url(ctx.redis_url())
    try:
        keys = RedisKeys(ctx.settings.redis_key_prefix)
        return {
            "expired": expire_old_versions(
                client, keys, ctx.settings.publish_keep_versions, ctx.settings.publish_grace_s
            )
        }
    finally:
        client.close()


STEP_BODIES: dict[str, Callable[[BatchContext], dict[str, Any]]] = {
    "features": step_features,
    "candidates": step_candidates,
    "training_set": step_training_set,
    "train_xgboost": lambda ctx: step_train(ctx, "xgboost"),
    "train_lightgbm": lambda ctx: step_train(ctx, "lightgbm"),
    "evaluate": step_evaluate,
    "promote": step_promote,
    "score": step_score,
    "publish": step_publish,
    "expire": step_expire,
}
# The declared order (feature_store.nightly), one body each.
STEPS: dict[str, Callable[[BatchContext], dict[str, Any]]] = {
    name: STEP_BODIES[name] for name in step_names()
}


# -- MLflow bookkeeping of steps ---------------------------------------------------------------------


def _log_step_run(
    ctx: BatchContext,
    step: str,
    metrics: dict[str, float],
    report: dict | None = None,
    params: dict | None = None,
    texts: dict[str, str] | None = None,
) -> None:
    import mlflow

    from spark_jobs.model_registry import configure_mlflow, log_evaluation_report, mlflow_key

    configure_mlflow(ctx.settings)
    with mlflow.start_run(run_name=f"{step}-{ctx.run_date}"):
        mlflow.set_tags(
            {"step": step, "run_date": str(ctx.run_date), "holdout_as_of": str(ctx.cutoffs.holdout)}
        )
        mlflow.log_metrics({mlflow_key(k): float(v) for k, v in metrics.items()})
        if params:
            mlflow.log_params(params)
        if report is not None:
            log_evaluation_report(report, EVAL_K)
        for name, text in (texts or {}).items():
            mlflow.log_text(text, name)


def evaluation_per_user(ctx: BatchContext):
    """The per-user table of this run date's newest evaluate run for the current holdout, or None."""
    import io

    import mlflow
    import pandas as pd

    from spark_jobs.model_registry import client, configure_mlflow

    configure_mlflow(ctx.settings)
    runs = mlflow.search_runs(
        experiment_names=[ctx.settings.mlflow_experiment],
        filter_string=f"tags.step = 'evaluate' and tags.run_date = '{ctx.run_date}' and tags.holdout_as_of = '{ctx.cutoffs.holdout}'",
        order_by=["start_time DESC"],
        max_results=1,
    )
    if runs.empty:
        return None
    run_id = runs.iloc[0]["run_id"]
    # an evaluate run logged before per-user tables existed has none: the caller evaluates again
    if PER_USER_ARTIFACT not in {a.path for a in client(ctx.settings).list_artifacts(run_id)}:
        return None
    return pd.read_csv(
        io.StringIO(mlflow.artifacts.load_text(f"runs:/{run_id}/{PER_USER_ARTIFACT}")), dtype={"user_id": str}
    )


# -- entry points --------------------------------------------------------------------------------------


def run_step(ctx: BatchContext, name: str) -> dict[str, Any]:
    if name not in STEPS:
        raise BatchStepError(f"unknown step {name!r}; steps: {', '.join(STEPS)}")
    started = time.perf_counter()
    # steps hand data over through Delta tables only
    with job_cache(ctx.spark):
        result = STEPS[name](ctx)
    log.info("step %s for %s done in %.1f s", name, ctx.run_date, time.perf_counter() - started)
    return {**result, "seconds": round(time.perf_counter() - started, 2)}


def run_batch(
    spark: SparkSession,
    settings: Settings,
    run_date: date,
    redis_url: Callable[[], str],
    on_step: Callable[[str, dict[str, Any]], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Every step in order for `run_date`; returns each step's report. `redis_url` is asked only by
    the steps that write Redis (the composition root knows the embedded redis-server)."""
    ctx = BatchContext(spark, settings, run_date, redis_url=redis_url)
    reports = {}
    for name in STEPS:
        reports[name] = run_step(ctx, name)
        if on_step:
            on_step(name, reports[name])
    return reports

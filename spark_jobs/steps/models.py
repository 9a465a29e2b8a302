"""The nightly's model steps: train each ranker on the training set (registered with its holdout
metrics), evaluate every model of the run date, the champion and the baselines on one holdout, and
promote through the gate on the paired per-user evidence the evaluation logged."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from feature_store.tables import CANDIDATES, INTERACTIONS, ITEM_FEATURES, TRAINING_SET, USER_FEATURES
from spark_jobs.model_registry import (
    PER_USER_ARTIFACT,
    evaluation_per_user,
    holdout_tag,
    log_step_run,
    per_user_column,
    run_versions,
)
from spark_jobs.steps.context import EVAL_K, BatchContext, BatchStepError
from spark_jobs.steps.data import realtime_at


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


def step_train(ctx: BatchContext, kind: str) -> dict[str, Any]:
    from spark_jobs.evaluation import BASELINE_SOURCES, evaluate_models
    from spark_jobs.model_registry import log_ranker_run
    from spark_jobs.rankers.common import RankerParams, collect_queries, early_stopped, split_validation
    from spark_jobs.rankers.export import export_ranker
    from spark_jobs.scoring import NativeModel
    from spark_jobs.training_set import at

    done = [v for v, tags in run_versions(ctx.settings, ctx.run_date).items() if tags.get("kind") == kind]
    if done:
        return {"kind": kind, "version": done[0], "skipped": "already registered for this run date"}
    settings, cut = ctx.settings, ctx.cutoffs
    examples = at(ctx.read(TRAINING_SET), cut.train).cache()
    if examples.limit(1).count() == 0:
        raise BatchStepError(
            f"no training examples for as_of {cut.train}: the training set needs candidates and events in "
            f"[{cut.train}, {cut.holdout}); run the steps `candidates` and `training_set` (or use a later --date)"
        )
    params = RankerParams.from_settings(settings.ranker)
    train_part, validation_part = split_validation(examples, params.seed)
    if kind == "xgboost":
        from spark_jobs.rankers.xgboost_ranker import train_xgboost as train
    else:
        from spark_jobs.rankers.lightgbm_ranker import train_lightgbm as train
    validation = collect_queries(validation_part)
    ranker = early_stopped(train(train_part, params), validation)
    results = evaluate_models(
        holdout(ctx), {kind: NativeModel(kind, ranker.native_bytes())}, sources=BASELINE_SOURCES[:2]
    )
    tags = {"as_of": str(cut.train), "run_date": str(ctx.run_date), "holdout_as_of": str(cut.holdout)}
    with tempfile.TemporaryDirectory() as tmp:
        meta = export_ranker(
            ranker,
            validation,
            settings.ranker.compress_tolerance,
            Path(tmp),
            extra_meta={
                "trained_as_of": str(cut.train),
                "holdout_as_of": str(cut.holdout),
                "holdout": results[kind],
                **ranker.extra,
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
        **ranker.extra,
    }


def step_evaluate(ctx: BatchContext) -> dict[str, Any]:
    """Compare every model of this run date, the champion and the baselines on the same holdout; the
    promotion metric of every holdout user and model goes to the run's `holdout_per_user.csv` (for
    the gate's paired comparison: computed here once, read by `promote`)."""
    from feature_store.registry import champion_version, load_ranker
    from spark_jobs.evaluation import evaluate_with_per_user
    from spark_jobs.model_registry import client
    from spark_jobs.scoring import registered_model

    settings = ctx.settings
    versions = run_versions(ctx.settings, ctx.run_date)
    champion = champion_version(settings)
    labels = {v: f"{tags.get('kind')} v{v}" for v, tags in versions.items()}
    if champion and champion not in labels:
        labels[champion] = f"champion v{champion}"
    models = {}
    for version, label in labels.items():
        loaded = load_ranker(settings, version, preferred="native")
        models[label] = registered_model(loaded)
    evaluation = evaluate_with_per_user(
        holdout(ctx), models, settings.promotion.metric, blend=[labels[v] for v in versions]
    )
    results = evaluation.results
    mlflow_client = client(settings)
    for version, label in labels.items():
        for metric, value in results[label].items():
            mlflow_client.set_model_version_tag(
                settings.ranker.model_name, version, holdout_tag(ctx.cutoffs.holdout, metric), str(value)
            )
    per_user = evaluation.per_user.rename(columns={label: per_user_column(v) for v, label in labels.items()})
    log_step_run(
        settings,
        "evaluate",
        ctx.run_date,
        ctx.cutoffs.holdout,
        {f"holdout.{label}.{m}": v for label, r in results.items() for m, v in r.items()},
        report=results,
        texts={PER_USER_ARTIFACT: per_user.to_csv(index=False)},
        k=EVAL_K,
    )
    return {"holdout_as_of": str(ctx.cutoffs.holdout), "results": results}


def step_promote(ctx: BatchContext) -> dict[str, Any]:
    """The gate: the best of this date's versions becomes challenger, and champion only if its paired
    per-user gain over the current champion (first model: popularity) on the same holdout is above
    `promotion_min_gain` with confidence, over enough users (spark_jobs.model_registry.gate)."""
    from feature_store.registry import champion_version
    from spark_jobs.model_registry import apply_gate, gate

    settings, metric = ctx.settings, ctx.settings.promotion.metric
    tag = holdout_tag(ctx.cutoffs.holdout, metric)
    versions = run_versions(ctx.settings, ctx.run_date)
    champion = champion_version(settings)
    if not versions:
        raise BatchStepError(
            f"no model version registered for run date {ctx.run_date}: run train_xgboost / train_lightgbm first"
        )
    needed = [per_user_column(v) for v in versions] + [per_user_column(champion) if champion else "popular"]
    per_user = evaluation_per_user(ctx.settings, ctx.run_date, ctx.cutoffs.holdout)
    missing = sorted(per_user_column(v) for v, tags in versions.items() if tag not in tags)
    if per_user is not None:
        missing += [c for c in needed if c not in per_user]
    if missing or per_user is None:
        raise BatchStepError(
            f"run date {ctx.run_date} has no evaluation on the holdout of {ctx.cutoffs.holdout} that covers "
            f"{', '.join(missing) or 'its versions'}: run the step `evaluate` first"
        )
    best = max(versions, key=lambda v: float(versions[v][tag]))
    if best == champion:
        return {"version": best, "promoted": True, "reason": "already champion"}
    baseline, label = (
        (per_user_column(champion), f"champion v{champion}") if champion else ("popular", "popularity")
    )
    decision = apply_gate(
        settings,
        best,
        gate(per_user[per_user_column(best)], per_user[baseline], label, settings.promotion),
    )
    return {
        "version": best,
        "promoted": decision.promote,
        "decision": decision.decision,
        "reason": decision.reason,
        "evidence": decision.evidence.as_dict(),
    }

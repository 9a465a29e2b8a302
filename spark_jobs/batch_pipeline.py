"""The nightly batch pipeline: one day of events in, a promoted ranker and a published batch out.

The steps, what each reads and writes and what makes it idempotent for a run date D are declared once
in feature_store.nightly (`NIGHTLY_STEPS`); this module holds one body per declared step (`STEPS`, in
the declared order; the bodies live in spark_jobs.steps by concern). Each reads its inputs from Delta tables and MLflow and writes its outputs there,
never handing data over in memory. h = `Settings.batch.label_horizon_days`; the holdout starts H =
`Settings.batch.holdout_days` (default h) before D and the training cut-off h before that. Entry points:
`run_step` (`lambdarec batch step`, and `lambdarec/batch_task.py`, what the Airflow DAG's
SparkSubmitOperator launches), `run_batch` (all steps, `lambdarec batch run`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import date
from typing import Any

from pyspark.sql import SparkSession

from feature_store.nightly import step_names
from feature_store.settings import Settings
from spark_jobs.session import job_cache
from spark_jobs.steps.context import BatchContext, BatchStepError
from spark_jobs.steps.data import step_candidates, step_features, step_training_set
from spark_jobs.steps.models import step_evaluate, step_promote, step_train
from spark_jobs.steps.serving import step_expire, step_publish, step_score

log = logging.getLogger("lambdarec.batch")

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

"""Wiring shared by the lambdarec DAG files: owner, retry policy, tags, the nightly steps and how one
step is launched on Spark.

Imported by the DAG files in this folder (the folder is on sys.path while Airflow parses it) and by
their tests; `.airflowignore` keeps Airflow from parsing it as a DAG file. Parse-time cheap: it imports
only the standard library and the step declarations of feature_store.nightly (standard library only;
the Spark provider's operator inside `spark_step`), never pyspark, MLflow or lambdarec's layers, so its
pure helpers are testable without Airflow.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

from feature_store import nightly

OWNER = "lambdarec"
SPARK_CONN_ID = "spark_default"

# The nightly batch steps as feature_store.nightly declares them, in the order one day runs them, and
# each step with the steps it waits for (the two rankers train side by side on the same training set).
NIGHTLY_STEPS: tuple[str, ...] = nightly.step_names()
NIGHTLY_UPSTREAM: dict[str, tuple[str, ...]] = nightly.upstream()

# The day a nightly run computes: the end of its data interval. A daily run covers the events of
# [start, end) and produces features, models and recommendations "as of" 00:00 UTC of `end`, so a
# rerun or backfill of the same interval rewrites the same partitions (never the wall clock).
PIPELINE_DATE = "{{ data_interval_end | ds }}"

# lambdarec/batch_task.py next to this folder (the repo layout; production images keep it): one step of
# spark_jobs/batch_pipeline.py with the composition root's Spark session and Redis URL.
BATCH_TASK_APP = str(Path(__file__).resolve().parent.parent / "lambdarec" / "batch_task.py")


def default_args(retries: int = 2, retry_delay: timedelta = timedelta(minutes=5)) -> dict:
    """Owner and retry policy every lambdarec task starts from."""
    return {
        "owner": OWNER,
        "retries": retries,
        "retry_delay": retry_delay,
        "retry_exponential_backoff": True,
    }


def module_doc(module_docstring: str | None) -> str:
    """The DAG's `doc_md`: its module docstring, shown on the DAG's page in the UI."""
    return (module_docstring or "").strip()


def spark_step(step: str, date: str = PIPELINE_DATE, task_id: str | None = None, **operator_kwargs):
    """A SparkSubmitOperator running one step of spark_jobs/batch_pipeline.py for one day.

    The master comes from the `spark_default` connection (AIRFLOW_CONN_SPARK_DEFAULT, built from
    LAMBDAREC_SPARK_MASTER by `lambdarec.airflow_local`); each step overwrites exactly its day's
    partitions, so a retry or rerun is idempotent.
    """
    from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

    return SparkSubmitOperator(
        task_id=task_id or step,
        conn_id=SPARK_CONN_ID,
        application=BATCH_TASK_APP,
        application_args=[step, "--date", date],
        name=f"lambdarec-{step}",
        execution_timeout=timedelta(hours=3),
        **operator_kwargs,
    )


def wire_nightly(tasks: dict) -> None:
    """Set the dependencies of NIGHTLY_UPSTREAM between already created tasks (one per step)."""
    for step, upstream in NIGHTLY_UPSTREAM.items():
        for parent in upstream:
            tasks[parent] >> tasks[step]


def backfill_runs(start: str, end: str, max_days: int = 366) -> list[dict[str, str]]:
    """One lambdarec_nightly run per pipeline date in [start, end] (inclusive), oldest first.

    A manual run whose logical date is midnight of day D gets the data interval [D-1, D), so its
    pipeline date (the interval's end) is D: the same partitions the scheduled run for D writes.
    """
    first, last = date.fromisoformat(start), date.fromisoformat(end)
    if last < first:
        raise ValueError(f"backfill end {end} is before its start {start}")
    count = (last - first).days + 1
    if count > max_days:
        raise ValueError(f"backfill of {count} days is longer than {max_days}; split it into smaller ranges")
    runs = []
    for offset in range(count):
        day = (first + timedelta(days=offset)).isoformat()
        runs.append({"logical_date": f"{day}T00:00:00+00:00", "trigger_run_id": f"backfill__{day}"})
    return runs

"""
### lambdarec_backfill

Reruns the nightly batch pipeline for every day of a range, oldest first.

Trigger it with the params `start` and `end` (pipeline dates, `YYYY-MM-DD`, both included). For each
day it triggers one `lambdarec_nightly` run keyed on that day's data interval and waits for it, one
day at a time, so each day's `promote` gate compares against the champion the previous day left.
Every nightly step overwrites exactly its day's partitions, so a backfill over days that already ran
replaces them instead of adding to them. The runs show up as `backfill__<date>` in lambdarec_nightly.
"""

from __future__ import annotations

import pendulum
from _lambdarec import backfill_runs, default_args, module_doc
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import Param, dag, task


@dag(
    dag_id="lambdarec_backfill",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(retries=0),
    tags=["lambdarec", "batch", "backfill"],
    params={
        "start": Param(type="string", format="date", description="First pipeline date (YYYY-MM-DD)."),
        "end": Param(type="string", format="date", description="Last pipeline date, included (YYYY-MM-DD)."),
    },
    doc_md=module_doc(__doc__),
)
def lambdarec_backfill():
    @task(retries=0)
    def pipeline_days(params: dict | None = None) -> list[dict[str, str]]:
        """The nightly runs to make: one logical date and run id per day (small values only)."""
        return backfill_runs(params["start"], params["end"])

    TriggerDagRunOperator.partial(
        task_id="run_nightly",
        trigger_dag_id="lambdarec_nightly",
        wait_for_completion=True,
        reset_dag_run=True,
        poke_interval=15,
        allowed_states=["success"],
        failed_states=["failed"],
        # One day at a time, in map-index (= date) order.
        max_active_tis_per_dag=1,
    ).expand_kwargs(pipeline_days())


lambdarec_backfill()

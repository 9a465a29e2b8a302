"""
### lambdarec_nightly

The batch layer, once a day: turns the day's events into fresh features, candidates, two rankers,
a (maybe) new champion and published recommendations.

`features → candidates → training_set → train_xgboost ‖ train_lightgbm → evaluate → promote → score →
publish → expire`

- Each task is one step of `spark_jobs/batch_pipeline.py` (`lambdarec/batch_task.py`), launched with `spark-submit` through the
  `spark_default` connection (its master is `LAMBDAREC_SPARK_MASTER`: `local[*]` on a laptop,
  `spark://…` or `k8s://…` in production).
- The run is keyed on its data interval: the step date is the interval's end (features and models
  "as of" 00:00 UTC that day), so a retry, a rerun or a backfill rewrites the same partitions.
- `promote` moves the `champion` alias only when the new model beats the champion on the holdout
  with evidence (a paired bootstrap interval above the margin, enough users);
  `publish` flips the Redis batch pointer atomically; `expire` drops old batch versions.
- State is passed through Delta tables and MLflow, keyed on the date; nothing but small values
  goes through XCom.
"""

from __future__ import annotations

import pendulum
from _lambdarec import NIGHTLY_STEPS, default_args, module_doc, spark_step, wire_nightly
from airflow.sdk import CronDataIntervalTimetable, dag


@dag(
    dag_id="lambdarec_nightly",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    tags=["lambdarec", "batch", "spark"],
    doc_md=module_doc(__doc__),
)
def lambdarec_nightly():
    wire_nightly({step: spark_step(step) for step in NIGHTLY_STEPS})


lambdarec_nightly()

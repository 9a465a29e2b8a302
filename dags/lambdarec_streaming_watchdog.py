"""
### lambdarec_streaming_watchdog

Keeps the speed layer alive: every 5 minutes it checks the streaming job and restarts it from its
checkpoint when it is down or stuck.

- `check_stream`: is the job's process alive (`lambdarec stream status`), and how long has the oldest
  event on the bus that no streaming query committed been waiting? The verdict (`healthy`, `down`,
  `stuck`), its reason and the job's own freshness (lag p99) are this task's XCom, visible in the UI.
- `stream_healthy` or `restart_stream` runs depending on the verdict; the restart is
  `lambdarec stream stop` + `lambdarec stream start --background` locally, or
  `LAMBDAREC_STREAM_RESTART_COMMAND` (e.g. `kubectl rollout restart` in production); the job resumes
  from its Spark checkpoint (nothing lost, nothing counted twice).
- A job stuck longer than `LAMBDAREC_STREAM_MAX_STALENESS_S` (default 120 s) counts as stuck; an idle
  job with nothing to read is healthy.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from _lambdarec import default_args, module_doc
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import CronTriggerTimetable, dag, task


@dag(
    dag_id="lambdarec_streaming_watchdog",
    schedule=CronTriggerTimetable("*/5 * * * *", timezone="UTC"),
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(minutes=10),
    # The next run comes in 5 minutes: a retry would only overlap it.
    default_args=default_args(retries=0),
    tags=["lambdarec", "speed", "watchdog"],
    doc_md=module_doc(__doc__),
)
def lambdarec_streaming_watchdog():
    @task
    def check_stream() -> dict:
        """The verdict on the streaming job (a few small values, never data)."""
        from feature_store.settings import load_settings
        from lambdarec.composition import redis_client
        from lambdarec.watchdog import check_stream as check_streaming_job

        settings = load_settings()
        return check_streaming_job(settings, redis_client(settings)).as_dict()

    @task.branch
    def decide(health: dict) -> str:
        return "restart_stream" if health["state"] != "healthy" else "stream_healthy"

    @task
    def restart_stream(health: dict) -> str:
        import logging

        from feature_store.settings import load_settings
        from lambdarec.watchdog import restart_stream as restart_streaming_job

        logging.getLogger(__name__).warning(
            "restarting the streaming job (%s: %s)", health["state"], health["reason"]
        )
        return restart_streaming_job(load_settings())

    health = check_stream()
    decide(health) >> [restart_stream(health), EmptyOperator(task_id="stream_healthy")]


lambdarec_streaming_watchdog()

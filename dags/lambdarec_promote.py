"""
### lambdarec_promote

Promotes a registered ranker version to `champion` by hand, judged like the nightly promotion.

Trigger it with the params `version` (a registered version of the ranker), and optionally `force` and
`reason`.

- `validate`: evaluates the version and the current champion on the current holdout (the newest run
  date's) with the batch layer's evaluation, and applies the same gate as the nightly `promote` step:
  the bootstrap interval of the per-user `LAMBDAREC_PROMOTION_METRIC` gain over the champion (first
  model: popularity) lies above `LAMBDAREC_PROMOTION_MIN_GAIN`, over at least
  `LAMBDAREC_PROMOTION_MIN_USERS` users. The verdict is this task's XCom.
- `move_champion`: moves the `champion` alias (serving and batch scoring follow it) only if the
  version passed; with `force` it moves it anyway and records `reason` on the version in MLflow
  (a forced promotion without a reason fails). A version that did not pass fails this task, with the
  gate's reason in its log.
"""

from __future__ import annotations

import pendulum
from _lambdarec import default_args, module_doc
from airflow.sdk import Param, dag, task


@dag(
    dag_id="lambdarec_promote",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    # A promotion is a decision: never repeat it automatically.
    default_args=default_args(retries=0),
    tags=["lambdarec", "models", "promotion"],
    params={
        "version": Param(
            type="string", minLength=1, description="Registered version of the ranker to promote."
        ),
        "force": Param(False, type="boolean", description="Promote even if it does not pass the gate."),
        "reason": Param("", type="string", description="Why (required with force; recorded in MLflow)."),
    },
    doc_md=module_doc(__doc__),
)
def lambdarec_promote():
    @task
    def validate(params: dict | None = None) -> dict:
        """The gate's verdict on the version, on the current holdout (small values only)."""
        from feature_store.settings import load_settings
        from lambdarec.composition import spark_session
        from lambdarec.promotion import validate_version

        settings = load_settings()
        spark = spark_session(settings)
        try:
            return validate_version(spark, settings, str(params["version"])).as_dict()
        finally:
            spark.stop()

    @task
    def move_champion(check: dict, params: dict | None = None) -> str:
        from feature_store.settings import load_settings
        from lambdarec.promotion import promote_version

        return promote_version(
            load_settings(), check, force=bool(params["force"]), reason=str(params["reason"])
        )

    move_champion(validate())


lambdarec_promote()

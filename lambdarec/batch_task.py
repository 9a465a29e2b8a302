"""One step of the nightly batch pipeline as a Spark application: what each task of the Airflow DAG
`lambdarec_nightly` launches with spark-submit (`lambdarec/batch_task.py <step> --date D`), also
`python -m lambdarec.batch_task <step> --date D`. A thin entry point: arguments, settings, the
composition root's Spark session and Redis URL, then `spark_jobs.batch_pipeline.run_step`.
"""

from __future__ import annotations

import argparse
import logging
from datetime import date


def main(argv: list[str] | None = None) -> None:
    from spark_jobs.batch_pipeline import STEPS, run_batch, run_step
    from spark_jobs.steps.context import BatchContext

    parser = argparse.ArgumentParser(
        prog="lambdarec.batch_task", description="Run one step of the nightly batch pipeline."
    )
    parser.add_argument("step", choices=[*STEPS, "all"])
    parser.add_argument(
        "--date",
        required=True,
        type=date.fromisoformat,
        help="run date D (YYYY-MM-DD): data before 00:00 UTC of D",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from feature_store.settings import load_settings
    from lambdarec.composition import redis_url, spark_session

    settings = load_settings()
    spark = spark_session(settings)
    if args.step == "all":
        print(run_batch(spark, settings, args.date, redis_url=lambda: redis_url(settings)))
    else:
        print(
            run_step(
                BatchContext(spark, settings, args.date, redis_url=lambda: redis_url(settings)), args.step
            )
        )


if __name__ == "__main__":
    main()

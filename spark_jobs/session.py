"""The one Spark session factory: Delta Lake configured from the project's JAR cache (and Hadoop's S3A
connector when the tables live on s3a://, `spark_jobs.s3a`).

Every job, the streaming job and the tests get their session here, so the master URL, Delta
configuration and local defaults are set in one place. Sessions never download anything: the Delta
JARs are resolved once by `spark_jobs.jars` (make setup) into `Settings.jars_dir`.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from feature_store.settings import Settings
from spark_jobs.s3a import s3a_spark_conf

log = logging.getLogger(__name__)

# dev.ludovic.netlib's JNI classes: what MLlib (ALS's normal equations, dense linear algebra) runs on
# when libblas.so.3 / liblapack.so.3 load; otherwise it falls back to Java kernels (VectorBLAS, F2j).
NATIVE_BLAS = {"blas": "dev.ludovic.netlib.blas.JNIBLAS", "lapack": "dev.ludovic.netlib.lapack.JNILAPACK"}


class DeltaJarsMissing(RuntimeError):
    """The Delta Lake JARs are not in the project's cache."""


def delta_jar_paths(jars_dir: Path) -> list[Path]:
    jars = sorted(jars_dir.glob("*.jar"))
    if not any("delta-spark" in j.name for j in jars):
        raise DeltaJarsMissing(
            f"No Delta Lake JARs in {jars_dir}. Run `make setup` (or `python -m spark_jobs.jars`) once "
            "with Maven Central reachable; later runs work offline."
        )
    return jars


def spark_conf(settings: Settings, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The Spark configuration lambdarec runs with (pure: settings in, conf out)."""
    conf = {
        "spark.master": settings.spark.master,
        "spark.app.name": settings.spark.app_name,
        "spark.jars": ",".join(str(p) for p in delta_jar_paths(settings.jars_dir)),
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.sql.shuffle.partitions": str(settings.spark.shuffle_partitions),
        "spark.default.parallelism": str(max(2, settings.spark.shuffle_partitions)),
        "spark.sql.session.timeZone": "UTC",
        "spark.driver.memory": settings.spark.driver_memory,
        "spark.ui.enabled": str(settings.spark.ui_enabled).lower(),
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.adaptive.enabled": "true",
        "spark.databricks.delta.schema.autoMerge.enabled": "false",
        # Delta rebuilds a table's snapshot with 50 tasks by default, on every read and write: on small
        # local tables that dominated batch steps (3 replaceWhere writes + reads: 796 tasks -> 222, 7x faster).
        "spark.databricks.delta.snapshotPartitions": str(max(1, settings.spark.shuffle_partitions)),
        # Local runs: no derby/metastore litter in the working directory.
        "spark.sql.warehouse.dir": str(settings.data_dir / "spark-warehouse"),
        "spark.driver.extraJavaOptions": f"-Dderby.system.home={settings.data_dir / 'derby'}",
        # xgboost.spark barrier stages: fail fast instead of retrying for ~10 minutes when slots are short.
        "spark.scheduler.barrier.maxConcurrentTasksCheck.interval": "1s",
        "spark.scheduler.barrier.maxConcurrentTasksCheck.maxFailures": "3",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        # A JSON event with a repeated key keeps the last value, as Python's json (the API's and the
        # speed layer's rules) does; Spark's default makes try_parse_json return null (quarantined).
        "spark.sql.variant.allowDuplicateKeys": "true",
    }
    if settings.tables_on_s3a:
        conf.update(s3a_spark_conf(settings))
    conf.update(settings.spark.conf)
    conf.update(extra or {})
    return conf


def build_spark(settings: Settings, extra_conf: Mapping[str, str] | None = None):
    """Get or create the SparkSession for these settings."""
    from pyspark.sql import SparkSession

    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYARROW_IGNORE_TIMEZONE", "1")
    # Python workers (UDFs, Python data sources, xgboost.spark) must run this interpreter, with the
    # project's packages; Spark's default is whatever `python3` is first on PATH.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    builder = SparkSession.builder
    for key, value in spark_conf(settings, extra_conf).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    log_linear_algebra(spark)
    return spark


def linear_algebra(spark) -> dict[str, str]:
    """Class names of the BLAS and LAPACK implementations MLlib picked in this driver JVM."""
    netlib = spark.sparkContext._jvm.dev.ludovic.netlib
    return {
        "blas": netlib.blas.BLAS.getInstance().getClass().getName(),
        "lapack": netlib.lapack.LAPACK.getInstance().getClass().getName(),
    }


def log_linear_algebra(spark) -> dict[str, str]:
    """Log which BLAS/LAPACK MLlib runs on; a warning when they are not the native (OpenBLAS) ones."""
    loaded = linear_algebra(spark)
    if loaded == NATIVE_BLAS:
        log.info("MLlib linear algebra: native %s, %s", loaded["blas"], loaded["lapack"])
    else:
        log.warning(
            "MLlib linear algebra is not native (%s, %s): ALS runs slower Java kernels. "
            "Run `make setup` (infra/local/install-blas.sh installs OpenBLAS).",
            loaded["blas"],
            loaded["lapack"],
        )
    return loaded


@contextmanager
def job_cache(spark) -> Iterator[None]:
    """What a job caches dies with it: the session's cache is cleared however the job ends, so it does
    not pin the storage memory the next job in the same session (a batch step, a test) needs."""
    try:
        yield
    finally:
        spark.catalog.clearCache()

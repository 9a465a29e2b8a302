"""Resolve Spark's extra JARs once from Maven Central into the project's cache (`make setup`): Delta
Lake, and Spark's Kafka source (`LAMBDAREC_EVENT_BUS=kafka`).

Spark's own Ivy resolver does the work (same coordinates `delta.configure_spark_with_delta_pip` or
`--packages` would use); afterwards the JARs are copied to `Settings.jars_dir` and every session loads
them with `spark.jars`, so nothing is downloaded again and later runs work offline.
"""

from __future__ import annotations

import re
import shutil
import sys
from importlib.metadata import version
from pathlib import Path

from feature_store.settings import Settings, load_settings


def delta_coordinates() -> str:
    import pyspark

    spark_major_minor = ".".join(pyspark.__version__.split(".")[:2])
    return f"io.delta:delta-spark_{spark_major_minor}_2.13:{version('delta-spark')}"


def kafka_source_coordinates() -> str:
    """Spark's Kafka source of the installed Spark (it brings kafka-clients, the token provider and
    commons-pool2)."""
    import pyspark

    return f"org.apache.spark:spark-sql-kafka-0-10_2.13:{pyspark.__version__}"


def spark_packages() -> dict[str, str]:
    """What the cache must hold: a file-name fragment of each package's main JAR -> its coordinates."""
    return {"delta-spark_": delta_coordinates(), "spark-sql-kafka-0-10_": kafka_source_coordinates()}


def missing_packages(jar_names: list[str], packages: dict[str, str]) -> list[str]:
    """Coordinates of the packages none of whose main JAR is among `jar_names`."""
    return [coords for marker, coords in packages.items() if not any(marker in name for name in jar_names)]


def artifact_name(jar_file: str, ivy: bool = False) -> str:
    """`parquet-column-1.17.0.jar` -> `parquet-column`; with `ivy`, the `<org>_` prefix Ivy adds goes too."""
    base = jar_file.split("_", 1)[1] if ivy else jar_file
    match = re.match(r"^(.*?)-\d[\w.\-]*\.jar$", base)
    return match.group(1) if match else base.removesuffix(".jar")


def jars_to_keep(resolved: list[str], spark_jars: list[str]) -> list[str]:
    """Resolved JARs minus those Spark already ships (its newer copies win; two on one classpath clash)."""
    provided = {artifact_name(j) for j in spark_jars}
    return [j for j in resolved if artifact_name(j, ivy=True) not in provided]


def resolve_spark_jars(settings: Settings) -> list[Path]:
    """Download the packages (and their dependencies) missing from `settings.jars_dir`; no-op when
    all are there."""
    from spark_jobs.session import delta_jar_paths

    missing = missing_packages([p.name for p in settings.jars_dir.glob("*.jar")], spark_packages())
    if not missing:
        return delta_jar_paths(settings.jars_dir)
    import os

    from pyspark.sql import SparkSession

    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    ivy_dir = settings.jars_dir.parent / "ivy"
    spark = (
        SparkSession.builder.master("local[1]")
        .appName("lambdarec-resolve-jars")
        .config("spark.jars.packages", ",".join(missing))
        .config("spark.jars.ivy", str(ivy_dir))
        .config("spark.ui.enabled", "false")
        .getOrCreate()
    )
    spark.stop()
    resolved = sorted((ivy_dir / "jars").glob("*.jar"))
    if not resolved:
        raise RuntimeError(f"Ivy resolved no JARs into {ivy_dir / 'jars'}")
    import pyspark

    spark_jars = [p.name for p in (Path(pyspark.__file__).parent / "jars").glob("*.jar")]
    settings.jars_dir.mkdir(parents=True, exist_ok=True)
    for name in jars_to_keep([j.name for j in resolved], spark_jars):
        shutil.copy2(ivy_dir / "jars" / name, settings.jars_dir / name)
    return delta_jar_paths(settings.jars_dir)


def main() -> int:
    settings = load_settings()
    try:
        jars = resolve_spark_jars(settings)
    except Exception as exc:  # the JVM dies with JAVA_GATEWAY_EXITED when Maven Central is unreachable
        print(
            f"Could not resolve {', '.join(spark_packages().values())} from Maven Central: {exc}\n"
            "lambdarec needs Maven Central once to fill its JAR cache "
            f"({settings.jars_dir}); check the network or copy the JARs there by hand.",
            file=sys.stderr,
        )
        return 1
    print(
        f"Spark JARs (Delta Lake, Kafka source) ready in {settings.jars_dir}: {', '.join(j.name for j in jars)}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

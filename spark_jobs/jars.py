"""Resolve Spark's extra JARs once from Maven Central into the project's cache (`make setup`): Delta
Lake, and Spark's Kafka source (`LAMBDAREC_EVENT_BUS=kafka`), into `Settings.jars_dir`; Hadoop's S3A
connector (tables on `s3a://`) into `<jars_dir>/s3a`.

Spark's own Ivy resolver does the work (same coordinates `delta.configure_spark_with_delta_pip` or
`--packages` would use), one Ivy folder per group so a group's folder receives only its own JARs;
afterwards every session loads Delta and Kafka with `spark.jars`, and sessions on s3a:// tables put the
S3A JARs on their class path (`spark_jobs.s3a`), so nothing is downloaded again and later runs work offline.
"""

from __future__ import annotations

import re
import shutil
import sys
from importlib.metadata import version
from pathlib import Path
from typing import NamedTuple

from feature_store.settings import Settings, load_settings
from spark_jobs.s3a import s3a_jars_dir


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


def spark_hadoop_version(spark_jars: list[str]) -> str:
    """The Hadoop version Spark ships, from its client JAR's name (`hadoop-client-api-3.5.0.jar`)."""
    for name in spark_jars:
        match = re.fullmatch(r"hadoop-client-api-(\d[\w.\-]*)\.jar", name)
        if match:
            return match.group(1)
    raise RuntimeError("no hadoop-client-api JAR among Spark's JARs: cannot tell which hadoop-aws matches")


def s3a_packages(hadoop_version: str) -> dict[str, str]:
    """Hadoop's S3A connector of exactly Spark's Hadoop version (another one fails on missing or changed
    internal classes); its POM brings the AWS SDK v2 bundle it was built against."""
    return {"hadoop-aws-": f"org.apache.hadoop:hadoop-aws:{hadoop_version}"}


class JarGroup(NamedTuple):
    """JARs resolved together: `packages` (see `spark_packages`) into `target`, through `ivy_dir`."""

    what: str
    packages: dict[str, str]
    target: Path
    ivy_dir: Path


def jar_groups(settings: Settings, spark_jars: list[str]) -> list[JarGroup]:
    cache = settings.jars_dir.parent
    return [
        JarGroup("Delta Lake, Kafka source", spark_packages(), settings.jars_dir, cache / "ivy"),
        JarGroup(
            "S3A connector",
            s3a_packages(spark_hadoop_version(spark_jars)),
            s3a_jars_dir(settings.jars_dir),
            cache / "ivy-s3a",
        ),
    ]


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


def spark_jar_names() -> list[str]:
    import pyspark

    return [p.name for p in (Path(pyspark.__file__).parent / "jars").glob("*.jar")]


def ivy_resolve(packages: list[str], ivy_dir: Path) -> None:
    """Spark's Ivy resolves `packages` (and their dependencies) into `<ivy_dir>/jars`. It does so while
    the JVM starts, once per JVM: each group runs this in a fresh process (`resolve_group`)."""
    import os

    from pyspark.sql import SparkSession

    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    spark = (
        SparkSession.builder.master("local[1]")
        .appName("lambdarec-resolve-jars")
        .config("spark.jars.packages", ",".join(packages))
        .config("spark.jars.ivy", str(ivy_dir))
        .config("spark.ui.enabled", "false")
        .getOrCreate()
    )
    spark.stop()


def resolve_group(group: JarGroup, spark_jars: list[str]) -> list[Path]:
    """Download the group's packages (and their dependencies) missing from its target folder into it;
    no-op when all are there. Returns the folder's JARs."""
    import multiprocessing

    missing = missing_packages([p.name for p in group.target.glob("*.jar")], group.packages)
    if missing:
        process = multiprocessing.get_context("spawn").Process(
            target=ivy_resolve, args=(missing, group.ivy_dir)
        )
        process.start()
        process.join()
        if process.exitcode != 0:
            raise RuntimeError(f"resolving {', '.join(missing)} failed (exit code {process.exitcode})")
        resolved = sorted((group.ivy_dir / "jars").glob("*.jar"))
        if not resolved:
            raise RuntimeError(f"Ivy resolved no JARs into {group.ivy_dir / 'jars'}")
        group.target.mkdir(parents=True, exist_ok=True)
        for name in jars_to_keep([j.name for j in resolved], spark_jars):
            shutil.copy2(group.ivy_dir / "jars" / name, group.target / name)
    return sorted(group.target.glob("*.jar"))


def resolve_spark_jars(settings: Settings) -> dict[str, list[Path]]:
    """Every group's JARs, resolved where missing; checked as sessions check them."""
    from spark_jobs.s3a import s3a_jar_paths
    from spark_jobs.session import delta_jar_paths

    spark_jars = spark_jar_names()
    resolved = {group.what: resolve_group(group, spark_jars) for group in jar_groups(settings, spark_jars)}
    delta_jar_paths(settings.jars_dir)
    s3a_jar_paths(settings.jars_dir)
    return resolved


def main() -> int:
    settings = load_settings()
    try:
        resolved = resolve_spark_jars(settings)
    except Exception as exc:  # the JVM dies with JAVA_GATEWAY_EXITED when Maven Central is unreachable
        print(
            f"Could not resolve Spark's extra JARs from Maven Central: {exc}\n"
            "lambdarec needs Maven Central once to fill its JAR cache "
            f"({settings.jars_dir}); check the network or copy the JARs there by hand.",
            file=sys.stderr,
        )
        return 1
    for what, jars in resolved.items():
        size_mb = sum(j.stat().st_size for j in jars) / 2**20
        print(f"{what} ready ({len(jars)} JARs, {size_mb:.0f} MB): {', '.join(j.name for j in jars)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

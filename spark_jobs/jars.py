"""Resolve the Delta Lake JARs once from Maven Central into the project's cache (`make setup`).

Spark's own Ivy resolver does the work (same coordinates `delta.configure_spark_with_delta_pip` would
use); afterwards the JARs are copied to `Settings.jars_dir` and every session loads them with
`spark.jars`, so nothing is downloaded again and later runs work offline.
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


def artifact_name(jar_file: str, ivy: bool = False) -> str:
    """`parquet-column-1.17.0.jar` -> `parquet-column`; with `ivy`, the `<org>_` prefix Ivy adds goes too."""
    base = jar_file.split("_", 1)[1] if ivy else jar_file
    match = re.match(r"^(.*?)-\d[\w.\-]*\.jar$", base)
    return match.group(1) if match else base.removesuffix(".jar")


def jars_to_keep(resolved: list[str], spark_jars: list[str]) -> list[str]:
    """Resolved JARs minus those Spark already ships (its newer copies win; two on one classpath clash)."""
    provided = {artifact_name(j) for j in spark_jars}
    return [j for j in resolved if artifact_name(j, ivy=True) not in provided]


def resolve_delta_jars(settings: Settings) -> list[Path]:
    """Download the Delta JARs (and their dependencies) into `settings.jars_dir`; no-op when present."""
    from spark_jobs.session import DeltaJarsMissing, delta_jar_paths

    try:
        return delta_jar_paths(settings.jars_dir)
    except DeltaJarsMissing:
        pass
    import os

    from pyspark.sql import SparkSession

    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    ivy_dir = settings.jars_dir.parent / "ivy"
    spark = (
        SparkSession.builder.master("local[1]")
        .appName("lambdarec-resolve-jars")
        .config("spark.jars.packages", delta_coordinates())
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
        jars = resolve_delta_jars(settings)
    except Exception as exc:  # the JVM dies with JAVA_GATEWAY_EXITED when Maven Central is unreachable
        print(
            f"Could not resolve the Delta Lake JARs {delta_coordinates()} from Maven Central: {exc}\n"
            "lambdarec needs Maven Central once to fill its JAR cache "
            f"({settings.jars_dir}); check the network or copy the JARs there by hand.",
            file=sys.stderr,
        )
        return 1
    print(f"Delta Lake JARs ready in {settings.jars_dir}: {', '.join(j.name for j in jars)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

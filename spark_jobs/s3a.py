"""Delta tables on S3-compatible storage: Hadoop's S3A connector, configured from `Settings.s3`.

`spark_jobs.session.spark_conf` adds `s3a_spark_conf` to every session when the tables live on
`s3a://` (`Settings.tables_on_s3a`); nothing here is loaded otherwise. The connector's JARs
(hadoop-aws matching Spark's Hadoop client, and the AWS SDK bundle it needs) are resolved once by
`spark_jobs.jars` (make setup) into `<jars_dir>/s3a`, a folder of their own: the SDK bundle is ~650 MB,
so they go on the driver's and executors' class path by reference (nothing is copied per session, as
`spark.jars` would do for every executor), and sessions whose tables are local never see them.
"""

from __future__ import annotations

from pathlib import Path

from feature_store.settings import S3Settings, Settings


class S3AJarsMissing(RuntimeError):
    """The tables are on s3a:// but the S3A connector's JARs are not in the project's cache."""


def s3a_jars_dir(jars_dir: Path) -> Path:
    return jars_dir / "s3a"


def s3a_jar_paths(jars_dir: Path) -> list[Path]:
    folder = s3a_jars_dir(jars_dir)
    jars = sorted(folder.glob("*.jar"))
    if not any(j.name.startswith("org.apache.hadoop_hadoop-aws-") for j in jars):
        raise S3AJarsMissing(
            f"The Delta tables are on s3a://, but Hadoop's S3A connector (hadoop-aws and the AWS SDK bundle) "
            f"is not in {folder}. Run `make setup` (or `python -m spark_jobs.jars`) once with Maven Central "
            "reachable; later runs work offline."
        )
    return jars


def s3a_hadoop_conf(s3: S3Settings) -> dict[str, str]:
    """The Hadoop configuration of S3A for these settings (keys without Spark's `spark.hadoop.` prefix);
    unset settings leave S3A's defaults."""
    conf: dict[str, str] = {"fs.s3a.path.style.access": str(s3.path_style_access).lower()}
    if s3.endpoint:
        conf["fs.s3a.endpoint"] = s3.endpoint
        # The scheme of the endpoint decides TLS; S3A reads it from this key when the URL has none.
        conf["fs.s3a.connection.ssl.enabled"] = str(s3.endpoint.startswith("https://")).lower()
    if s3.region:
        conf["fs.s3a.endpoint.region"] = s3.region
    if s3.access_key_id:
        conf["fs.s3a.access.key"] = s3.access_key_id
    if s3.secret_access_key:
        conf["fs.s3a.secret.key"] = s3.secret_access_key
    return conf


# Hadoop keys that carry credentials: kept out of files written for spark-submit (the job's own session
# sets them from the settings in its environment), and redacted by Spark in its UI and logs.
SECRET_HADOOP_KEYS = ("fs.s3a.access.key", "fs.s3a.secret.key")


def s3a_classpath_conf(jars_dir: Path) -> dict[str, str]:
    """The S3A JARs on the driver's and executors' class path. A JVM setting: it must be in the conf the
    driver starts with (a session builder before the JVM starts, or spark-defaults.conf for spark-submit);
    executors find the JARs at the same path (the project's image, or this machine's local cluster)."""
    classpath = ":".join(str(p) for p in s3a_jar_paths(jars_dir))
    return {"spark.driver.extraClassPath": classpath, "spark.executor.extraClassPath": classpath}


def s3a_spark_conf(settings: Settings) -> dict[str, str]:
    """What a session needs for tables on s3a://: the connector's class path and its configuration."""
    return {
        **s3a_classpath_conf(settings.jars_dir),
        **{f"spark.hadoop.{key}": value for key, value in s3a_hadoop_conf(settings.s3).items()},
    }

"""Delta tables on s3a://: the S3A configuration every session gets from the settings, the JAR group
`make setup` resolves for it, and the local endpoint's settings (pure functions, no services)."""

from __future__ import annotations

from pathlib import Path

import pytest

from feature_store.settings import S3Settings, Settings
from lambdarec.s3_server import bucket_of, local_s3_environment
from spark_jobs.jars import jar_groups, missing_packages, s3a_packages, spark_hadoop_version
from spark_jobs.s3a import S3AJarsMissing, s3a_hadoop_conf, s3a_jar_paths
from spark_jobs.session import spark_conf


def jar_cache(tmp_path: Path, *, s3a: bool) -> Path:
    jars = tmp_path / "jars"
    (jars / "s3a").mkdir(parents=True)
    (jars / "io.delta_delta-spark_4.2_2.13-4.4.0.jar").write_bytes(b"")
    if s3a:
        for name in ("org.apache.hadoop_hadoop-aws-3.5.0.jar", "software.amazon.awssdk_bundle-2.35.4.jar"):
            (jars / "s3a" / name).write_bytes(b"")
    return jars


def test_hadoop_conf_of_an_s3_compatible_endpoint():
    s3 = S3Settings(
        endpoint="http://127.0.0.1:9000",
        region="us-east-1",
        path_style_access=True,
        access_key_id="id",
        secret_access_key="secret",
    )
    assert s3a_hadoop_conf(s3) == {
        "fs.s3a.path.style.access": "true",
        "fs.s3a.endpoint": "http://127.0.0.1:9000",
        "fs.s3a.connection.ssl.enabled": "false",
        "fs.s3a.endpoint.region": "us-east-1",
        "fs.s3a.access.key": "id",
        "fs.s3a.secret.key": "secret",
    }


def test_hadoop_conf_on_aws_leaves_endpoint_and_credentials_to_s3a():
    assert s3a_hadoop_conf(S3Settings()) == {"fs.s3a.path.style.access": "false"}
    assert s3a_hadoop_conf(S3Settings(endpoint="https://s3.eu-west-1.amazonaws.com")) == {
        "fs.s3a.path.style.access": "false",
        "fs.s3a.endpoint": "https://s3.eu-west-1.amazonaws.com",
        "fs.s3a.connection.ssl.enabled": "true",
    }


def test_sessions_on_s3a_tables_carry_the_connector(tmp_path):
    jars = jar_cache(tmp_path, s3a=True)
    settings = Settings(
        data_dir=tmp_path,
        jars_dir=jars,
        tables_uri="s3a://lake/lr",
        s3_endpoint="http://minio:9000",
        s3_path_style_access=True,
    )
    conf = spark_conf(settings)
    classpath = f"{jars / 's3a' / 'org.apache.hadoop_hadoop-aws-3.5.0.jar'}:{jars / 's3a' / 'software.amazon.awssdk_bundle-2.35.4.jar'}"
    s3a_keys = {k: v for k, v in conf.items() if "s3a" in k or "extraClassPath" in k}
    assert s3a_keys == {
        "spark.driver.extraClassPath": classpath,
        "spark.executor.extraClassPath": classpath,
        "spark.hadoop.fs.s3a.path.style.access": "true",
        "spark.hadoop.fs.s3a.endpoint": "http://minio:9000",
        "spark.hadoop.fs.s3a.connection.ssl.enabled": "false",
    }
    # The bundle is ~650 MB: by class path reference, never shipped through spark.jars.
    assert conf["spark.jars"] == str(jars / "io.delta_delta-spark_4.2_2.13-4.4.0.jar")


def test_sessions_on_local_tables_never_see_the_connector(tmp_path):
    settings = Settings(data_dir=tmp_path, jars_dir=jar_cache(tmp_path, s3a=True), s3_endpoint="http://x:1")
    conf = spark_conf(settings)
    assert [k for k in conf if "s3a" in k or "extraClassPath" in k] == []


def test_s3a_tables_without_the_connector_say_how_to_get_it(tmp_path):
    jars = jar_cache(tmp_path, s3a=False)
    with pytest.raises(S3AJarsMissing, match=r"Run `make setup` \(or `python -m spark_jobs.jars`\)"):
        spark_conf(Settings(data_dir=tmp_path, jars_dir=jars, tables_uri="s3a://lake/lr"))
    with pytest.raises(S3AJarsMissing, match=str(jars / "s3a")):
        s3a_jar_paths(jars)


def test_hadoop_aws_matches_the_hadoop_spark_ships():
    spark_jars = ["guava-33.6.0-jre.jar", "hadoop-client-api-3.5.0.jar", "hadoop-client-runtime-3.5.0.jar"]
    assert spark_hadoop_version(spark_jars) == "3.5.0"
    assert s3a_packages("3.5.0") == {"hadoop-aws-": "org.apache.hadoop:hadoop-aws:3.5.0"}
    with pytest.raises(RuntimeError, match="no hadoop-client-api JAR"):
        spark_hadoop_version(["guava-33.6.0-jre.jar"])


def test_each_jar_group_resolves_into_its_own_folders(tmp_path):
    settings = Settings(data_dir=tmp_path, jars_dir=tmp_path / "cache" / "jars")
    groups = jar_groups(settings, ["hadoop-client-api-3.5.0.jar"])
    assert [(g.what, g.target, g.ivy_dir) for g in groups] == [
        ("Delta Lake, Kafka source", tmp_path / "cache" / "jars", tmp_path / "cache" / "ivy"),
        ("S3A connector", tmp_path / "cache" / "jars" / "s3a", tmp_path / "cache" / "ivy-s3a"),
    ]
    s3a = groups[1].packages
    assert missing_packages(["org.apache.hadoop_hadoop-aws-3.5.0.jar"], s3a) == []
    assert missing_packages(["software.amazon.awssdk_bundle-2.35.4.jar"], s3a) == [
        "org.apache.hadoop:hadoop-aws:3.5.0"
    ]


def test_the_local_endpoint_settings_load_as_settings(monkeypatch, tmp_path):
    assert bucket_of("s3a://lambdarec/delta") == "lambdarec"
    with pytest.raises(ValueError, match="not an s3a:// URI with a bucket: 's3://lambdarec/delta'"):
        bucket_of("s3://lambdarec/delta")
    for name, value in local_s3_environment("http://127.0.0.1:4566", "s3a://lambdarec/delta").items():
        monkeypatch.setenv(name, value)
    settings = Settings(data_dir=tmp_path)
    assert (
        settings.tables_on_s3a
        and settings.table_path("bronze/events") == "s3a://lambdarec/delta/bronze/events"
    )
    assert s3a_hadoop_conf(settings.s3) == {
        "fs.s3a.path.style.access": "true",
        "fs.s3a.endpoint": "http://127.0.0.1:4566",
        "fs.s3a.connection.ssl.enabled": "false",
        "fs.s3a.endpoint.region": "us-east-1",
        "fs.s3a.access.key": "lambdarec-local",
        "fs.s3a.secret.key": "lambdarec-local",
    }

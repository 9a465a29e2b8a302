from feature_store.settings import Settings
from spark_jobs.jars import artifact_name, jars_to_keep


def test_data_dir_moves_all_state(monkeypatch, tmp_path):
    monkeypatch.setenv("LAMBDAREC_DATA_DIR", str(tmp_path))
    s = Settings()
    assert s.data_dir == tmp_path
    assert s.table_path("bronze/events") == f"{tmp_path}/delta/bronze/events"
    assert s.tracking_uri == f"sqlite:///{tmp_path}/mlflow.db"
    assert s.artifact_root == f"{tmp_path}/mlartifacts"
    assert s.checkpoints_dir == tmp_path / "checkpoints"
    assert s.redis_dir == tmp_path / "redis"


def test_tables_uri_overrides_the_local_root(monkeypatch):
    monkeypatch.setenv("LAMBDAREC_TABLES_URI", "s3a://bucket/lr/")
    assert Settings().table_path("silver/interactions") == "s3a://bucket/lr/silver/interactions"


def test_spark_conf_from_env(monkeypatch):
    monkeypatch.setenv("LAMBDAREC_SPARK_MASTER", "spark://head:7077")
    monkeypatch.setenv("LAMBDAREC_SPARK_CONF", '{"spark.executor.memory": "4g"}')
    s = Settings()
    assert (s.spark.master, s.spark.conf) == ("spark://head:7077", {"spark.executor.memory": "4g"})


def test_artifact_names_strip_org_and_version():
    assert artifact_name("parquet-column-1.17.0.jar") == "parquet-column"
    assert artifact_name("org.apache.parquet_parquet-column-1.16.0.jar", ivy=True) == "parquet-column"
    assert artifact_name("io.delta_delta-spark_4.2_2.13-4.4.0.jar", ivy=True) == "delta-spark_4.2_2.13"
    assert artifact_name("commons-pool_commons-pool-1.6.jar", ivy=True) == "commons-pool"


def test_jars_spark_ships_are_not_kept():
    resolved = [
        "io.delta_delta-spark_4.2_2.13-4.4.0.jar",
        "org.slf4j_slf4j-api-2.0.13.jar",
        "io.delta_delta-storage-4.4.0.jar",
    ]
    assert jars_to_keep(resolved, ["slf4j-api-2.0.17.jar", "spark-core_2.13-4.2.0.jar"]) == [
        "io.delta_delta-spark_4.2_2.13-4.4.0.jar",
        "io.delta_delta-storage-4.4.0.jar",
    ]

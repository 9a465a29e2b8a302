"""Shared fixtures: one local Spark session with Delta per test run, one real redis-server per run,
and settings whose data directory is a fresh temporary folder (nothing touches the repo's data/)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from feature_store.settings import Settings, project_root


@pytest.fixture(scope="session")
def base_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("lambdarec-data")


@pytest.fixture(scope="session")
def settings(base_data_dir: Path) -> Settings:
    """Settings of the test run: embedded defaults, a temporary data dir, small Spark."""
    return Settings(
        data_dir=base_data_dir,
        jars_dir=project_root() / ".cache" / "jars",
        spark_master="local[2]",
        spark_shuffle_partitions=2,
        # the long tests run whole nightlies in this one session: ~1.3 GB of old generation at peak
        spark_driver_memory="4g",
        # one ALS grid point (no tuning fits) unless a test asks for a grid
        als_ranks=(32,),
        als_reg_params=(0.05,),
        als_alphas=(10.0,),
        als_max_iters=(10,),
    )


@pytest.fixture(scope="session")
def spark(settings: Settings):
    """The one Spark session of the run (Delta configured from the project's JAR cache). Its JVM also
    starts with Hadoop's S3A connector on the class path (a JVM setting, fixed at start), so the tests of
    tables on s3a:// (tests/integration/test_s3a_tables.py) share it; on local tables it is never used."""
    from spark_jobs.s3a import s3a_classpath_conf
    from spark_jobs.session import build_spark

    os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"
    session = build_spark(settings, s3a_classpath_conf(settings.jars_dir))
    yield session
    session.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory):
    """A real redis-server on a free loopback port for the whole run."""
    from lambdarec.redis_server import EmbeddedRedis

    server = EmbeddedRedis(directory=tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_client(redis_server):
    """A client on a flushed database of the run's redis-server."""
    import redis

    client = redis.Redis.from_url(redis_server.url)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory):
    """A real Redis Cluster of three masters (Debian's redis-server in cluster mode) on loopback for
    the whole run, started and stopped by lambdarec.redis_server like `infra/local/redis-cluster.sh`."""
    from lambdarec.redis_server import EmbeddedRedisCluster

    cluster = EmbeddedRedisCluster(directory=tmp_path_factory.mktemp("redis-cluster")).start()
    yield cluster
    cluster.stop()


@pytest.fixture
def cluster_client(redis_cluster):
    """A cluster client on the run's Redis Cluster, every master flushed."""
    from feature_store.redis_cluster import open_redis

    client = open_redis(redis_cluster.url, cluster=True)
    client.flushall()
    yield client
    client.close()


@pytest.fixture(scope="session")
def local_nightly(spark, settings: Settings, redis_server, tmp_path_factory: pytest.TempPathFactory):
    """One finished small nightly for the run (tests/nightly.py): its settings, output and reports."""
    from tests.nightly import nightly_redis_url, run_local_nightly

    return run_local_nightly(
        spark, settings, nightly_redis_url(redis_server.url), tmp_path_factory.mktemp("nightly")
    )


@pytest.fixture
def nightly_redis(local_nightly):
    """A client on the shared nightly's Redis database (its keys, and those of runs on its settings)."""
    import redis

    client = redis.Redis.from_url(local_nightly.settings.redis.url)
    yield client
    client.close()


@pytest.fixture
def table_settings(settings: Settings, tmp_path: Path) -> Settings:
    """Settings whose Delta tables live in a fresh folder for one test (same Spark session)."""
    return settings.updated(tables_uri=str(tmp_path / "delta"), data_dir=tmp_path)


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory):
    """A real single-node Kafka broker for the run, started and stopped with the project's scripts
    (infra/local/start-kafka.sh / stop-kafka.sh) in a data directory of its own; yields its settings
    (data_dir, kafka_bootstrap_servers)."""
    import subprocess

    data_dir = tmp_path_factory.mktemp("kafka")
    env = {**os.environ, "LAMBDAREC_DATA_DIR": str(data_dir)}
    scripts = project_root() / "infra" / "local"
    started = subprocess.run(
        [str(scripts / "start-kafka.sh")], env=env, capture_output=True, text=True, timeout=300
    )
    assert started.returncode == 0, started.stdout + started.stderr
    bootstrap = started.stdout.strip().splitlines()[-1]
    yield Settings(data_dir=data_dir, kafka_bootstrap_servers=bootstrap)
    stopped = subprocess.run(
        [str(scripts / "stop-kafka.sh")], env=env, capture_output=True, text=True, timeout=120
    )
    assert stopped.returncode == 0 and "stopped kafka" in stopped.stdout, stopped.stdout + stopped.stderr

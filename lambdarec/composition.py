"""The composition root: builds the real objects (Spark session, Redis client) from settings (MLflow's
come from feature_store.registry). Entry points (CLI, DAG tasks, FastAPI lifespan) call these and nothing else; layers are
imported lazily so `lambdarec serve` never starts a JVM.
"""

from __future__ import annotations

from feature_store.settings import Settings


def redis_url(settings: Settings) -> str:
    """The online store's URL: the configured one, or the data directory's private redis-server (a
    private 3-master Redis Cluster with LAMBDAREC_REDIS_CLUSTER=true)."""
    if settings.redis.url:
        return settings.redis.url
    if settings.redis.cluster:
        from lambdarec.redis_server import shared_cluster_url

        return shared_cluster_url(settings.run_dir, settings.redis_cluster_dir, settings.redis.server_bin)
    from lambdarec.redis_server import shared_redis_url

    return shared_redis_url(settings.run_dir, settings.redis_dir, settings.redis.server_bin)


def redis_client(settings: Settings):
    """A redis-py client of the online store (a cluster client on a Redis Cluster)."""
    from feature_store.redis_cluster import open_redis

    return open_redis(redis_url(settings), settings.redis.cluster)


def kafka_bootstrap(settings: Settings) -> str:
    """The Kafka brokers: the configured ones, or the data directory's local broker while it runs."""
    if settings.kafka.bootstrap_servers:
        return settings.kafka.bootstrap_servers
    from lambdarec.kafka_broker import running_bootstrap

    bootstrap = running_bootstrap(settings)
    if bootstrap is None:
        raise ValueError(
            "LAMBDAREC_EVENT_BUS=kafka, but LAMBDAREC_KAFKA_BOOTSTRAP_SERVERS is empty and no local broker runs: "
            "start one with infra/local/start-kafka.sh (`lambdarec kafka start`) or name your brokers"
        )
    return bootstrap


def bus_settings(settings: Settings) -> Settings:
    """The settings with the Kafka bootstrap resolved when the bus is Kafka (processes the CLI starts,
    the API and the streaming job, then find the same brokers)."""
    if settings.bus.kind != "kafka" or settings.kafka.bootstrap_servers:
        return settings
    return settings.updated(kafka_bootstrap_servers=kafka_bootstrap(settings))


def event_publisher(settings: Settings):
    """The publisher of the configured bus, for synchronous callers (`lambdarec events publish`)."""
    from feature_store.event_bus import open_publisher

    if settings.bus.kind == "kafka":
        return open_publisher(settings, kafka_bootstrap=kafka_bootstrap(settings))
    return open_publisher(settings, redis_client=redis_client(settings))


def spark_session(settings: Settings):
    from spark_jobs.session import build_spark

    return build_spark(settings)


def api_app(switches=None):
    """The API for the environment's settings: `lambdarec serve`'s app, also the factory each of
    its worker processes calls (`lambdarec.composition:api_app`); `switches` (serving.tuning.ServingSwitches)
    default to every optimization on."""
    import sys

    # MLflow probes `import pyspark` when the model registry client loads; the API process has no
    # use for Spark, so the probe finds nothing and the process stays free of pyspark.
    sys.modules.setdefault("pyspark", None)  # type: ignore[arg-type]
    from feature_store.settings import load_settings
    from serving.app import create_app

    settings = bus_settings(load_settings())
    from serving.tuning import ServingSwitches

    return create_app(settings, redis_url=redis_url(settings), switches=switches or ServingSwitches())

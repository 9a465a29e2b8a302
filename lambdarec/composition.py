"""The composition root: builds the real objects (Spark session, Redis client, MLflow client) from
settings. Entry points (CLI, DAG tasks, FastAPI lifespan) call these and nothing else; layers are
imported lazily so `lambdarec serve` never starts a JVM.
"""

from __future__ import annotations

from feature_store.settings import Settings


def redis_url(settings: Settings) -> str:
    """The online store's URL: the configured one, or the data directory's private redis-server."""
    if settings.redis_url:
        return settings.redis_url
    from lambdarec.redis_server import shared_redis_url

    return shared_redis_url(settings.run_dir, settings.redis_dir, settings.redis_server_bin)


def redis_client(settings: Settings):
    import redis

    return redis.Redis.from_url(redis_url(settings))


def spark_session(settings: Settings):
    from spark_jobs.session import build_spark

    return build_spark(settings)


def configure_mlflow(settings: Settings) -> None:
    """Point MLflow tracking and registry at the settings' stores (never the working directory)."""
    import mlflow

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.registry_uri)

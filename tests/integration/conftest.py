"""Fixtures of the serving-layer integration tests (tests/integration/test_api_*.py): a real MLflow
(SQLite in a temp dir) with tiny trained rankers logged in the MODEL_FILES layout, and writers of the
online store's batch and speed keys encoded exactly as the producers do (codecs + RedisKeys)."""

from __future__ import annotations

from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import msgpack
import pytest

from feature_store.codecs import encode_feature_rows, encode_features, encode_ids, encode_recs
from feature_store.redis_keys import RedisKeys
from feature_store.settings import Settings


def train_tiny_ranker(directory: Path, seed: int, kind: str) -> Path:
    """A 15-tree ranker on random vectors, exported with the batch layer's exporter (MODEL_FILES)."""
    from lambdarec.testing import train_ranker_files

    return train_ranker_files(directory, seed=seed, trees=15, leaves=7, kind=kind)


def _log_ranker(settings: Settings, directory: Path, champion: bool = True) -> str:
    """Log and register the files with the batch layer's MLflow code, optionally make the version
    champion (spark_jobs.model_registry via lambdarec.testing: one implementation for all)."""
    from lambdarec.testing import register_ranker_files

    return register_ranker_files(settings, directory, champion)


def _set_champion(settings: Settings, version: str) -> None:
    """Move the champion alias the way `lambdarec models promote` does."""
    from spark_jobs.model_registry import set_champion

    set_champion(settings, version)


@pytest.fixture(scope="session")
def ranker_dirs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two tiny rankers (files only), a LightGBM and an XGBoost one, trained once per run."""
    root = tmp_path_factory.mktemp("rankers")
    return [train_tiny_ranker(root / kind, seed, kind) for seed, kind in ((1, "lightgbm"), (2, "xgboost"))]


@pytest.fixture(scope="session")
def empty_registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One MLflow SQLite store with no model, shared by the tests that register none (creating an
    MLflow database costs seconds)."""
    return tmp_path_factory.mktemp("empty-registry")


@pytest.fixture
def serving_settings(tmp_path: Path, redis_server, empty_registry: Path) -> Settings:
    """Settings of one API test: the run's redis-server and a real MLflow registry without models."""
    return Settings(
        data_dir=tmp_path,
        redis_url=redis_server.url,
        mlflow_tracking_uri=f"sqlite:///{empty_registry / 'mlflow.db'}",
        mlflow_artifact_root=str(empty_registry / "mlartifacts"),
        model_poll_interval_s=3600,  # tests call watcher.check() themselves
        serving_redis_budget_s=0.5,
    )


@pytest.fixture
def model_settings(serving_settings: Settings, tmp_path: Path) -> Settings:
    """`serving_settings` with an MLflow registry of its own, for tests that register rankers."""
    return serving_settings.updated(
        mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        mlflow_artifact_root=str(tmp_path / "mlartifacts"),
    )


@dataclass
class OnlineStoreWriter:
    """Writes batch and speed keys the way the producers do (codecs + RedisKeys)."""

    client: object
    keys: RedisKeys

    def publish_batch(
        self,
        version: str,
        *,
        users: dict,
        items: dict,
        similar: dict | None = None,
        popular: list | None = None,
    ) -> None:
        """users: user_id -> {"recs": [(item, score, source)], "features": [..], "affinity": {..}, "seen": [..],
        "genres": {genre: share}, "pool": [[POOL_INPUTS values] per batch rec]}; items: item_id -> {"features": [..], "category": str, "genres": [..]}."""
        k, pipe = self.keys, self.client.pipeline(transaction=False)
        for user_id, user in users.items():
            pipe.set(k.user_recs(version, user_id), encode_recs(user.get("recs", [])))
            if "features" in user:
                pipe.set(k.user_features(version, user_id), encode_features(user["features"]))
            pipe.set(k.user_category_affinity(version, user_id), msgpack.packb(user.get("affinity", {})))
            pipe.set(k.user_history(version, user_id), encode_ids(user.get("seen", [])))
            if "genres" in user:
                pipe.set(k.user_genre_profile(version, user_id), msgpack.packb(user["genres"]))
            if "pool" in user:
                pipe.set(k.user_pool_inputs(version, user_id), encode_feature_rows(user["pool"]))
        for item_id, item in items.items():
            pipe.set(k.item_features(version, item_id), encode_features(item["features"]))
            pipe.hset(k.item_categories(version), item_id, item["category"])
            if item.get("genres"):
                pipe.set(k.item_genres(version, item_id), encode_ids(item["genres"]))
        for item_id, neighbours in (similar or {}).items():
            pipe.set(k.item_similar(version, item_id), encode_recs(neighbours))
        pipe.set(k.popular(version), encode_recs(popular or []))
        pipe.hset(k.batch_meta(version), mapping={"as_of": "2026-01-01", "published_at": "0"})
        pipe.zadd(k.batch_versions, {version: 1})
        pipe.set(k.batch_pointer, version)  # the flip, last
        pipe.execute()

    def user_event(
        self, user_id: str, item_id: str, event_type: str, ts_ms: int, category: str | None = None
    ) -> None:
        """What the speed layer writes for one event: recent items (+ meta) and session counters."""
        k, pipe = self.keys, self.client.pipeline(transaction=False)
        pipe.zadd(k.recent_items(user_id), {item_id: ts_ms})
        pipe.hset(k.recent_meta(user_id), item_id, event_type)
        pipe.hincrby(k.session_counters(user_id), f"type:{event_type}", 1)
        if category:
            pipe.hincrby(k.session_counters(user_id), f"cat:{category}", 1)
        pipe.execute()

    def covisit(self, item_id: str, neighbours: dict[str, float]) -> None:
        self.client.zadd(self.keys.covisit(item_id), neighbours)

    def trending(self, window: str, weights: dict[str, float]) -> None:
        self.client.zadd(self.keys.trending(window), weights)


@pytest.fixture
def store_writer(redis_client) -> OnlineStoreWriter:
    return OnlineStoreWriter(redis_client, RedisKeys())


def _run_speed_layer(client, settings: Settings, batch_id: int) -> int:
    """Apply everything on the event bus to the speed keys exactly as one micro-batch of the
    streaming job does (its pure planning functions, the published catalog's categories and its
    idempotent Redis apply: per shard on one Redis, per slot on a cluster), without Spark.
    Returns how many events were applied."""
    from datetime import timedelta

    from feature_store.event_bus import entry_payload, entry_time_ms
    from feature_store.events import EventTypes
    from spark_jobs.streaming.redis_apply import apply_batch, apply_batch_by_slot, catalog_categories
    from spark_jobs.streaming.speed_features import (
        items_without_category,
        shard_ops,
        slot_ops,
        speed_params,
        trending_ops,
        validate_entries,
        with_catalog_categories,
    )

    keys = RedisKeys(settings.redis.key_prefix)
    entries = [
        (eid.decode(), entry_time_ms(eid), entry_payload(fields))
        for eid, fields in client.xrange(settings.bus.stream)
    ]
    good, _ = validate_entries(
        entries,
        future_tolerance=timedelta(minutes=settings.batch.future_tolerance_minutes),
        event_types=EventTypes(),
    )
    events = [speed for speed, _ in good]
    events = with_catalog_categories(events, catalog_categories(client, keys, items_without_category(events)))
    params = speed_params(settings)
    if settings.redis.cluster:
        apply, users = apply_batch_by_slot, slot_ops(keys, params, events)
    else:
        apply, users = apply_batch, shard_ops(keys, params, events)
    apply(client, keys, params, "test", batch_id, users, trending_ops(keys, params, events))
    return len(events)


@pytest.fixture
def log_ranker():
    """log_ranker(settings, files_dir, champion=True) -> registered version."""
    return _log_ranker


@pytest.fixture
def set_champion():
    """set_champion(settings, version): move the champion alias."""
    return _set_champion


@pytest.fixture
def run_speed_layer():
    """run_speed_layer(client, settings, batch_id) -> events applied (the streaming job's micro-batch, no Spark)."""
    return _run_speed_layer


@asynccontextmanager
async def _running(app):
    """The app with its lifespan (startup, shutdown), behind an in-process httpx client."""
    import httpx

    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as client:
            yield client


@pytest.fixture
def running():
    """`async with running(app) as api:` runs the app's lifespan around an httpx AsyncClient."""
    return _running

"""Atomic publish of a batch to Redis, in the layout of docs/redis-key-layout.md (feature_store.redis_keys).

Protocol (`publish_batch`):
1. Write every key of a new version `<p>:b:<v>:...` — per-user recs (with each nightly source's
   score of every item, `rec_entries`), features (USER_INPUTS order),
   category affinity, genre profile and seen items; per-item features (ITEM_INPUTS order), genres and
   similar items; the
   categories hash, the popular list and the meta hash. Nothing points at `<v>` yet, so readers cannot
   see any of it. Every key gets the pending TTL (`publish_pending_ttl_s`) in the same pipeline that
   writes it, so a publish that dies half-way leaves nothing behind for good.
2. Flip: one MULTI/EXEC (watching the pointer) sets `<p>:batch:current` to `<v>` — unless the
   current version is of a later `as_of`: a backfill of older days never takes serving back in time
   (its keys then simply expire). Then `<v>` joins `<p>:batch:versions` and its keys are made
   permanent (PERSIST). A reader resolves the pointer once per request and reads only that version's
   keys, so it sees the old batch or the new one, never a mix. The transaction holds the pointer
   alone, so it is one hash slot on a Redis Cluster too; a publish that dies after it leaves the new
   version current with its keys still on the pending TTL, as a death before PERSIST always did.
3. Expire (`expire_old_versions`, also its own pipeline step): versions beyond the newest
   `keep` get a TTL of `grace_s` on each of their keys (`EXPIRE ... NX`, so a rerun does not extend it)
   and leave the versions set. The grace lets a request that resolved the old pointer finish;
   the kept versions are what a rollback flips back to (`rollback_pointer`).

Writing from Spark: per-user and per-item keys are written by the executors, one `foreachPartition`
per key kind with pipelined SETs in chunks, so the write scales with the executors and the driver never
holds the batch (`toLocalIterator` would stream every row through the driver's one connection). A
retried task rewrites the same keys with the same values. Only the small, global keys (meta, popular,
categories) are written from the driver. Called by spark_jobs.steps.serving (steps `publish`, `expire`).

Why one module: the write, the flip and the expiry are one protocol over one key layout; each step's
guarantee depends on the others' (pending TTL, PERSIST after the flip, NX expiry), so they are read together.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import msgpack
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from feature_store.codecs import encode_feature_rows, encode_features, encode_ids, encode_recs
from feature_store.ranking import CANDIDATE_SOURCES, ITEM_INPUTS, NIGHTLY_INPUTS, POOL_INPUTS, USER_INPUTS
from feature_store.redis_cluster import open_redis
from feature_store.redis_keys import RedisKeys
from spark_jobs.candidates import history_before
from spark_jobs.training_set import at, candidate_scores

log = logging.getLogger(__name__)

PIPELINE_CHUNK = 1000
BATCH_SOURCE = "batch"
POPULAR_SOURCE = "popular"
MAX_SEEN_ITEMS = 1000


@dataclass(frozen=True)
class PublishTarget:
    """Where and how to publish: picklable, so Spark tasks get it in their closure."""

    redis_url: str
    key_prefix: str
    version: str
    pending_ttl_s: int = 2 * 24 * 3600  # until the flip makes the keys permanent
    cluster: bool = False  # redis_url names a node of a Redis Cluster (settings.redis.cluster)

    @property
    def keys(self) -> RedisKeys:
        return RedisKeys(self.key_prefix)


def batch_version(as_of: date, published_at_s: int) -> str:
    """A version name unique per publish: `<as_of yyyymmdd>-<publish epoch seconds>`."""
    return f"{as_of:%Y%m%d}-{published_at_s}"


def feature_values(features: Mapping[str, float] | None, names: Sequence[str]) -> list[float | None]:
    """A gold features map in the contract's order; missing names (and nulls) become None -> NaN."""
    features = features or {}
    return [
        None
        if features.get(n) is None or (isinstance(features.get(n), float) and math.isnan(features[n]))
        else features[n]
        for n in names
    ]


# -- what one row of each kind becomes (pure: row in, (key, value) out) -----------------------------


def rec_entries(items) -> list[tuple[str, float, str]]:
    """The recs value: every item as `(item_id, ranker score, "batch")` best first, then each nightly
    source's input for it as `(item_id, 1/rank, source)`, so serving gives the ranker the same
    per-source inputs (`cand_<source>`) as training did."""
    batch = [(r["item_id"], r["score"], BATCH_SOURCE) for r in items]
    per_source = [
        (r["item_id"], r[f"cand_{s}"], s)
        for s in CANDIDATE_SOURCES
        for r in items
        if r[f"cand_{s}"] is not None
    ]
    return batch + per_source


def pool_rows(items) -> list[list[float | None]]:
    """The pool scorers' inputs (POOL_INPUTS) of each item, in the recs' order."""
    return [[r[name] for name in POOL_INPUTS] for r in items]


def encode_user_recs(keys: RedisKeys, version: str, row) -> tuple[str, bytes]:
    return keys.user_recs(version, row["user_id"]), encode_recs(rec_entries(row["items"]))


def encode_user_pool(keys: RedisKeys, version: str, row) -> tuple[str, bytes]:
    return keys.user_pool_inputs(version, row["user_id"]), encode_feature_rows(pool_rows(row["items"]))


def encode_user_features(keys: RedisKeys, version: str, row) -> tuple[str, bytes]:
    return keys.user_features(version, row["user_id"]), encode_features(
        feature_values(row["features"], USER_INPUTS)
    )


def encode_user_affinity(keys: RedisKeys, version: str, row) -> tuple[str, bytes]:
    affinity = {str(k): float(v) for k, v in (row["category_affinity"] or {}).items()}
    return keys.user_category_affinity(version, row["user_id"]), msgpack.packb(affinity, use_bin_type=True)


def encode_user_genres(keys: RedisKeys, version: str, row) -> tuple[str, bytes]:
    profile = {str(k): float(v) for k, v in (row["genre_profile"] or {}).items()}
    return keys.user_genre_profile(version, row["user_id"]), msgpack.packb(profile, use_bin_type=True)


def encode_user_seen(keys: RedisKeys, version: str, row) -> tuple[str, bytes]:
    return keys.user_history(version, row["user_id"]), encode_ids(row["items"])


def encode_item_features(keys: RedisKeys, version: str, row) -> tuple[str, bytes]:
    return keys.item_features(version, row["item_id"]), encode_features(
        feature_values(row["features"], ITEM_INPUTS)
    )


def encode_item_genres(keys: RedisKeys, version: str, row) -> tuple[str, bytes]:
    return keys.item_genres(version, row["item_id"]), encode_ids(row["genres"])


def encode_item_similar(keys: RedisKeys, version: str, row) -> tuple[str, bytes]:
    return keys.item_similar(version, row["item_id"]), encode_recs(
        (r["item_id"], r["score"], "covisit") for r in row["items"]
    )


Encoder = Callable[[RedisKeys, str, Any], tuple[str, bytes]]


def write_partition(target: PublishTarget, encode: Encoder, written) -> Callable[[Iterator[Any]], None]:
    """A foreachPartition function: encode each row and SET it, pipelined in chunks; counts into the
    accumulator `written`."""

    def write(rows: Iterator[Any]) -> None:
        client = open_redis(target.redis_url, target.cluster)
        keys = target.keys
        try:
            pipe = client.pipeline(transaction=False)
            pending = 0
            for row in rows:
                key, value = encode(keys, target.version, row)
                pipe.set(key, value, ex=target.pending_ttl_s)
                pending += 1
                if pending == PIPELINE_CHUNK:
                    pipe.execute()
                    pending = 0
                    written.add(PIPELINE_CHUNK)
            if pending:
                pipe.execute()
                written.add(pending)
        finally:
            client.close()

    return write


# -- what is published, as DataFrames (pure transforms of the Delta tables) -------------------------


def _scored_lists(df: DataFrame, key: str, item: str, limit: int | None = None) -> DataFrame:
    ordered = F.array_sort(F.collect_list(F.struct("rank", F.col(item).alias("item_id"), "score")))
    items = F.transform(ordered, lambda s: F.struct(s["item_id"].alias("item_id"), s["score"].alias("score")))
    if limit:
        items = F.slice(items, 1, limit)
    return df.groupBy(key).agg(items.alias("items"))


def user_recs(batch_scores: DataFrame, candidates: DataFrame, as_of: date) -> DataFrame:
    """(user_id, items [(item_id, score, NIGHTLY_INPUTS...)] best first) of the batch: the ranker's
    score and the item's nightly inputs (training_set.candidate_scores; null: missing)."""
    per_source = candidate_scores(at(candidates, as_of)).drop("sources")
    scored = at(batch_scores, as_of).join(per_source, ["user_id", "item_id"], "left")
    fields = ["rank", "item_id", "score", *NIGHTLY_INPUTS]
    ordered = F.array_sort(F.collect_list(F.struct(*fields)))
    items = F.transform(ordered, lambda s: F.struct(*[s[f].alias(f) for f in fields[1:]]))
    return scored.groupBy("user_id").agg(items.alias("items"))


def item_similar_lists(item_similar: DataFrame, as_of: date) -> DataFrame:
    """(item_id, items [(item_id, score)] best first) from gold/item_similar."""
    return _scored_lists(at(item_similar, as_of), "item_id", "similar_item_id")


def user_seen(interactions: DataFrame, as_of: date, limit: int = MAX_SEEN_ITEMS) -> DataFrame:
    """(user_id, items): the items each user touched before as_of, latest first, at most `limit`."""
    last = history_before(interactions, as_of).groupBy("user_id", "item_id").agg(F.max("ts").alias("last_ts"))
    order = Window.partitionBy("user_id").orderBy(F.col("last_ts").desc(), F.col("item_id"))
    latest = last.withColumn("rank", F.row_number().over(order)).where(F.col("rank") <= limit)
    return latest.groupBy("user_id").agg(
        F.transform(F.array_sort(F.collect_list(F.struct("rank", "item_id"))), lambda s: s["item_id"]).alias(
            "items"
        )
    )


@dataclass(frozen=True)
class BatchContent:
    """Everything one batch version holds, before encoding."""

    recs: DataFrame  # user_id, items
    user_features: DataFrame  # user_id, features, category_affinity, genre_profile
    seen: DataFrame  # user_id, items
    item_features: DataFrame  # item_id, category, features, genres
    similar: DataFrame  # item_id, items
    popular: list[tuple[str, float]]


def batch_content(
    batch_scores: DataFrame,
    candidates: DataFrame,
    user_features: DataFrame,
    item_features: DataFrame,
    item_similar: DataFrame,
    interactions: DataFrame,
    popular: Iterable[tuple[str, float]],
    as_of: date,
) -> BatchContent:
    return BatchContent(
        recs=user_recs(batch_scores, candidates, as_of),
        user_features=at(user_features, as_of).select(
            "user_id", "features", "category_affinity", "genre_profile"
        ),
        seen=user_seen(interactions, as_of),
        item_features=at(item_features, as_of).select("item_id", "category", "features", "genres"),
        similar=item_similar_lists(item_similar, as_of),
        popular=list(popular),
    )


# -- the protocol ----------------------------------------------------------------------------------


def write_version(target: PublishTarget, content: BatchContent, meta: Mapping[str, Any]) -> dict[str, int]:
    """Step 1: every key of `target.version` (nothing points at it yet). Returns counts per kind."""
    kinds: list[tuple[str, DataFrame, Encoder]] = [
        ("recs", content.recs, encode_user_recs),
        ("user_pool", content.recs, encode_user_pool),
        ("user_features", content.user_features, encode_user_features),
        ("user_affinity", content.user_features, encode_user_affinity),
        ("user_genres", content.user_features, encode_user_genres),
        ("seen", content.seen, encode_user_seen),
        ("item_features", content.item_features, encode_item_features),
        ("item_genres", content.item_features.where(F.size("genres") > 0), encode_item_genres),
        ("similar", content.similar, encode_item_similar),
    ]
    counts = {}
    for name, frame, encode in kinds:
        written = frame.sparkSession.sparkContext.accumulator(0)
        frame.foreachPartition(write_partition(target, encode, written))
        counts[name] = written.value
    categories = (
        (row.item_id, row.category)
        for row in content.item_features.select("item_id", "category")
        .where(F.col("category").isNotNull())
        .toLocalIterator()
    )
    client = open_redis(target.redis_url, target.cluster)
    try:
        counts["categories"] = write_batch_globals(
            client,
            target.keys,
            target.version,
            target.pending_ttl_s,
            categories,
            content.popular,
            meta,
            counts,
        )
    finally:
        client.close()
    return counts


def write_batch_globals(
    client,
    keys: RedisKeys,
    version: str,
    ttl: int,
    categories: Iterable[tuple[str, str]],
    popular: Iterable[tuple[str, float]],
    meta: Mapping[str, Any],
    counts: Mapping[str, int],
) -> int:
    """The version's small global keys, written from the driver with the pending TTL: the categories
    hash (item, category), the popular list and the meta hash (with the per-kind `counts`). Returns
    the categories written."""
    pipe = client.pipeline(transaction=False)
    pending = 0
    for item_id, category in categories:
        pipe.hset(keys.item_categories(version), item_id, category)
        pending += 1
        if pending % PIPELINE_CHUNK == 0:
            pipe.expire(keys.item_categories(version), ttl)
            pipe.execute()
    pipe.expire(keys.item_categories(version), ttl)
    pipe.set(
        keys.popular(version),
        encode_recs((item, score, POPULAR_SOURCE) for item, score in popular),
        ex=ttl,
    )
    pipe.hset(
        keys.batch_meta(version),
        mapping={**{k: str(v) for k, v in meta.items()}, **{f"count_{k}": v for k, v in counts.items()}},
    )
    pipe.expire(keys.batch_meta(version), ttl)
    pipe.execute()
    return pending


def flip_pointer(client, keys: RedisKeys, version: str, as_of: str, published_at_s: float) -> bool:
    """Step 2: one transaction makes `version` current, unless the current version's `as_of` is later
    than `as_of` (ISO dates): then nothing changes and the answer is False. Then `version` is recorded
    among the published versions. The pointer is watched, so a concurrent flip makes this one check
    again; a version's meta never changes once written, so it is read outside the transaction (on a
    cluster it lives in another slot)."""
    from redis.exceptions import WatchError

    while True:
        with client.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(keys.batch_pointer)
                current = pipe.get(keys.batch_pointer)
                current_as_of = client.hget(keys.batch_meta(current.decode()), "as_of") if current else None
                if current_as_of is not None and current_as_of.decode() > as_of:
                    pipe.unwatch()
                    return False
                pipe.multi()
                pipe.set(keys.batch_pointer, version)
                pipe.execute()
                break
            except WatchError:
                continue
    client.zadd(keys.batch_versions, {version: published_at_s})
    return True


def persist_version(client, keys: RedisKeys, version: str) -> int:
    """After the flip: the current version's keys lose their pending TTL. Returns keys persisted."""
    persisted = 0
    pipe = client.pipeline(transaction=False)
    for key in client.scan_iter(match=keys.batch_namespace_pattern(version), count=1000):
        pipe.persist(key)
        if len(pipe) >= PIPELINE_CHUNK:
            persisted += sum(pipe.execute())
    persisted += sum(pipe.execute())
    return persisted


def expire_old_versions(client, keys: RedisKeys, keep: int, grace_s: int) -> list[str]:
    """Step 3: give every key of versions older than the newest `keep` a TTL of `grace_s` (never the
    current one), then drop them from the versions set. Returns the expired versions."""
    current = client.get(keys.batch_pointer)
    current = current.decode() if current else None
    versions = [v.decode() for v in client.zrange(keys.batch_versions, 0, -1)]  # oldest first
    old = [v for v in versions[: max(0, len(versions) - keep)] if v != current]
    for version in old:
        pipe = client.pipeline(transaction=False)
        for key in client.scan_iter(match=keys.batch_namespace_pattern(version), count=1000):
            pipe.expire(key, grace_s, nx=True)
            if len(pipe) >= PIPELINE_CHUNK:
                pipe.execute()
        pipe.execute()
        client.zrem(keys.batch_versions, version)
    return old


def rollback_pointer(client, keys: RedisKeys) -> str:
    """Flip the pointer back to the newest kept version older than the current one."""
    current = client.get(keys.batch_pointer)
    versions = [v.decode() for v in client.zrange(keys.batch_versions, 0, -1)]
    if current is None or current.decode() not in versions or versions.index(current.decode()) == 0:
        raise LookupError("no earlier published batch version is kept to roll back to")
    previous = versions[versions.index(current.decode()) - 1]
    client.set(keys.batch_pointer, previous)
    return previous


def publish_batch(
    target: PublishTarget,
    content: BatchContent,
    meta: Mapping[str, Any],
    published_at_s: float,
    keep: int,
    grace_s: int,
) -> dict[str, Any]:
    """Write the version, flip the pointer, expire old versions (see the module docstring). `meta`
    holds the batch's `as_of` (ISO date). `current` in the answer is False when a later as_of is
    being served (a backfill): the version was written but not flipped to, and its keys expire."""
    counts = write_version(target, content, meta)
    client = open_redis(target.redis_url, target.cluster)
    try:
        current = flip_pointer(client, target.keys, target.version, str(meta["as_of"]), published_at_s)
        if current:
            persist_version(client, target.keys, target.version)
        else:
            log.warning(
                "batch %s not made current: a later as_of is being served (backfill); its keys expire",
                target.version,
            )
        expired = expire_old_versions(client, target.keys, keep, grace_s)
    finally:
        client.close()
    return {"version": target.version, "current": current, "counts": counts, "expired": expired}

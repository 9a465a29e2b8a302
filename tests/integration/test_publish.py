"""Batch publish against a real redis-server: exact key contents, the pointer flip is atomic for a
reader polling during publish, old versions expire (with grace) and can be rolled back to."""

import math
import threading
import time
from datetime import date

import msgpack
import pytest

from feature_store.codecs import decode_feature_rows, decode_features, decode_ids, decode_recs
from feature_store.ranking import ITEM_INPUTS, POOL_INPUTS, USER_INPUTS
from feature_store.redis_keys import RedisKeys
from spark_jobs.publish import (
    PublishTarget,
    batch_content,
    batch_version,
    expire_old_versions,
    publish_batch,
    rollback_pointer,
)
from tests.batch_models_data import interaction, interactions_df, item_features_df, user_features_df

pytestmark = pytest.mark.integration

A, B = date(2024, 5, 1), date(2024, 5, 2)
KEYS = RedisKeys("lr")
PENDING_TTL = 3600


def scores_df(spark, as_of: date, users: int, label: float):
    """Every user gets items i0..i2 with scores label + 0.1 * (3 - rank): a batch identifiable by its scores."""
    rows = [
        (as_of, f"u{u}", f"i{r}", label + 0.1 * (3 - r), r + 1, ["als"], "7")
        for u in range(users)
        for r in range(3)
    ]
    return spark.createDataFrame(
        rows,
        "as_of date, user_id string, item_id string, score double, rank int, sources array<string>, model_version string",
    )


def content(spark, as_of: date, users: int, label: float):
    day = as_of.isoformat()
    user_features = user_features_df(
        spark,
        [
            (
                day,
                f"u{u}",
                {"user_events_7d": float(u), "user_lifetime_events": label},
                {"cat1": 0.75, "cat2": 0.25},
                {"g1": 0.5, "g2": 0.5},
            )
            for u in range(users)
        ],
    )
    # i0 has no genres: it gets no genres key
    item_features = item_features_df(
        spark,
        [
            (day, f"i{i}", f"cat{i % 2 + 1}", {"item_events_7d": label + i}, ["g1", "g3"][:i])
            for i in range(3)
        ],
    )
    similar = spark.createDataFrame(
        [(as_of, "i0", "i1", 0.5, 1), (as_of, "i0", "i2", 0.25, 2), (as_of, "i1", "i0", 0.5, 1)],
        "as_of date, item_id string, similar_item_id string, score double, rank int",
    )
    history = interactions_df(
        spark,
        [
            interaction("u0", "i9", "2024-04-20 10:00"),
            interaction("u0", "i8", "2024-04-21 10:00"),
            interaction("u1", "i9", "2024-04-22 10:00"),
            interaction("u0", "i7", "2024-05-05 10:00"),  # after both batches' as_of
        ],
    )
    # the nightly sources' lists: u1's i0 came from als and popular, i1 from als only, i2 from no source;
    # two pool scorers saw the pool (ease100's best was not positive: no relative score)
    candidates = spark.createDataFrame(
        [(as_of, "als", f"u{u}", "i0", 0.75, 1) for u in range(users)]
        + [(as_of, "popular", f"u{u}", "i0", 12.0, 1) for u in range(users)]
        + [(as_of, "als", f"u{u}", "i1", 0.5, 2) for u in range(users)]
        + [(as_of, "rp3beta", f"u{u}", "i0", 1.0, 1) for u in range(users)]
        + [(as_of, "rp3beta", f"u{u}", "i1", 0.5, 2) for u in range(users)]
        + [(as_of, "ease100", f"u{u}", "i1", None, 1) for u in range(users)],
        "as_of date, source string, user_id string, item_id string, score double, rank int",
    )
    return batch_content(
        scores_df(spark, as_of, users, label),
        candidates,
        user_features,
        item_features,
        similar,
        history,
        [("i1", 9.0), ("i0", 4.0)],
        as_of,
    )


def publish(
    redis_server, spark, as_of, users, label, published_at, keep=3, grace=600, batch=None, cluster=False
):
    target = PublishTarget(
        redis_server.url, "lr", batch_version(as_of, published_at), pending_ttl_s=PENDING_TTL, cluster=cluster
    )
    meta = {
        "as_of": as_of.isoformat(),
        "model_name": "lambdarec-ranker",
        "model_version": "7",
        "label": label,
    }
    return publish_batch(
        target, batch or content(spark, as_of, users, label), meta, published_at, keep=keep, grace_s=grace
    )


def version_ttls(redis_client, version: str) -> set[int]:
    return {redis_client.ttl(k) for k in redis_client.scan_iter(match=KEYS.batch_namespace_pattern(version))}


def test_published_keys_hold_exactly_the_batch(spark, redis_server, redis_client):
    result = publish(redis_server, spark, A, users=2, label=1.0, published_at=1000)
    version = "20240501-1000"
    assert result == {
        "version": version,
        "current": True,
        "counts": {
            "recs": 2,
            "user_pool": 2,
            "user_features": 2,
            "user_affinity": 2,
            "user_genres": 2,
            "seen": 2,
            "item_features": 3,
            "item_genres": 2,
            "similar": 2,
            "categories": 3,
        },
        "expired": [],
    }
    assert redis_client.get(KEYS.batch_pointer) == version.encode()
    assert [tuple(r) for r in decode_recs(redis_client.get(KEYS.user_recs(version, "u1")))] == [
        ("i0", pytest.approx(1.3), "batch"),
        ("i1", pytest.approx(1.2), "batch"),
        ("i2", pytest.approx(1.1), "batch"),
        ("i0", 1.0, "als"),  # each nightly source's input: 1 / the item's rank in its list
        ("i1", 0.5, "als"),
        ("i0", 1.0, "popular"),
    ]
    # the pool scorers' inputs, one row per rec in the recs' order (i0, i1, i2), NaN: missing
    pool = decode_feature_rows(redis_client.get(KEYS.user_pool_inputs(version, "u1")), len(POOL_INPUTS))
    expected_pool = {
        (0, "pool_rp3beta_score"): 1.0,
        (0, "pool_rp3beta_rank"): 1.0,
        (1, "pool_rp3beta_score"): 0.5,
        (1, "pool_rp3beta_rank"): 0.5,
        (1, "pool_ease100_rank"): 1.0,
    }
    assert [[None if math.isnan(v) else v for v in row] for row in pool.tolist()] == [
        [expected_pool.get((r, name)) for name in POOL_INPUTS] for r in range(3)
    ]
    features = decode_features(redis_client.get(KEYS.user_features(version, "u1")), len(USER_INPUTS))
    expected = {"user_events_7d": 1.0, "user_lifetime_events": 1.0}
    assert [None if math.isnan(v) else v for v in features.tolist()] == [expected.get(n) for n in USER_INPUTS]
    assert msgpack.unpackb(redis_client.get(KEYS.user_category_affinity(version, "u0"))) == {
        "cat1": 0.75,
        "cat2": 0.25,
    }
    assert msgpack.unpackb(redis_client.get(KEYS.user_genre_profile(version, "u0"))) == {"g1": 0.5, "g2": 0.5}
    assert [decode_ids(redis_client.get(KEYS.item_genres(version, f"i{i}"))) for i in (1, 2)] == [
        ["g1"],
        ["g1", "g3"],
    ]
    assert redis_client.get(KEYS.item_genres(version, "i0")) is None
    assert decode_ids(redis_client.get(KEYS.user_history(version, "u0"))) == [
        "i8",
        "i9",
    ]  # latest first, none after as_of
    assert redis_client.get(KEYS.user_history(version, "u5")) is None
    item = decode_features(redis_client.get(KEYS.item_features(version, "i2")), len(ITEM_INPUTS))
    assert [None if math.isnan(v) else v for v in item.tolist()] == [
        3.0 if n == "item_events_7d" else None for n in ITEM_INPUTS
    ]
    assert [tuple(r) for r in decode_recs(redis_client.get(KEYS.item_similar(version, "i0")))] == [
        ("i1", 0.5, "covisit"),
        ("i2", 0.25, "covisit"),
    ]
    assert redis_client.hgetall(KEYS.item_categories(version)) == {
        b"i0": b"cat1",
        b"i1": b"cat2",
        b"i2": b"cat1",
    }
    assert [tuple(r) for r in decode_recs(redis_client.get(KEYS.popular(version)))] == [
        ("i1", 9.0, "popular"),
        ("i0", 4.0, "popular"),
    ]
    meta = redis_client.hgetall(KEYS.batch_meta(version))
    assert (meta[b"as_of"], meta[b"model_version"], meta[b"count_recs"]) == (b"2024-05-01", b"7", b"2")
    assert redis_client.ttl(KEYS.user_recs(version, "u1")) == -1


def test_a_reader_polling_during_publish_sees_the_old_or_the_new_batch_never_a_mix(
    spark, redis_server, redis_client
):
    users = 3000
    publish(redis_server, spark, A, users=users, label=1.0, published_at=1000)
    probe = [f"u{u}" for u in range(0, users, 300)]
    seen_versions: list[str] = []
    problems: list[str] = []
    stop = threading.Event()

    def read_batch():
        import redis

        reader = redis.Redis.from_url(redis_server.url)
        while not stop.is_set():
            version = reader.get(KEYS.batch_pointer).decode()  # resolve the pointer once per "request"
            pipe = reader.pipeline(transaction=False)
            pipe.hget(KEYS.batch_meta(version), "label")
            for user in probe:
                pipe.get(KEYS.user_recs(version, user))
                pipe.get(KEYS.user_features(version, user))
            label, *values = pipe.execute()
            recs, feats = values[0::2], values[1::2]
            if label is None or any(v is None for v in values):
                problems.append(f"{version}: incomplete")
                continue
            top_scores = {round(decode_recs(r)[0].score, 6) for r in recs}
            lifetimes = {float(decode_features(f)[USER_INPUTS.index("user_lifetime_events")]) for f in feats}
            expected = float(label)
            if top_scores != {round(expected + 0.3, 6)} or lifetimes != {expected}:
                problems.append(f"{version}: mixed {top_scores} {lifetimes}")
            seen_versions.append(version)
        reader.close()

    thread = threading.Thread(target=read_batch, daemon=True)
    thread.start()
    publish(redis_server, spark, B, users=users, label=2.0, published_at=2000)
    deadline = time.monotonic() + 30
    while "20240502-2000" not in seen_versions and time.monotonic() < deadline:
        thread.join(0.05)
    stop.set()
    thread.join(10)
    assert problems == []
    assert seen_versions[0] == "20240501-1000" and seen_versions[-1] == "20240502-2000"
    assert set(seen_versions) == {"20240501-1000", "20240502-2000"}
    # once the new version was seen, the old one never came back
    first_new = seen_versions.index("20240502-2000")
    assert set(seen_versions[first_new:]) == {"20240502-2000"}


def test_old_versions_expire_after_the_newest_kept_and_rollback_flips_back(spark, redis_server, redis_client):
    for n in range(4):
        publish(redis_server, spark, A, users=2, label=1.0, published_at=1000 + n, keep=2, grace=300)
    versions = [f"20240501-{1000 + n}" for n in range(4)]
    assert [v.decode() for v in redis_client.zrange(KEYS.batch_versions, 0, -1)] == versions[2:]
    for old in versions[:2]:
        ttls = {redis_client.ttl(k) for k in redis_client.scan_iter(match=KEYS.batch_namespace_pattern(old))}
        assert ttls and all(0 < t <= 300 for t in ttls)
    for kept in versions[2:]:
        assert {
            redis_client.ttl(k) for k in redis_client.scan_iter(match=KEYS.batch_namespace_pattern(kept))
        } == {-1}
    # a rerun of expiry changes nothing (NX keeps the first TTL; nothing more to expire)
    assert expire_old_versions(redis_client, KEYS, keep=2, grace_s=9999) == []
    assert (
        max(
            redis_client.ttl(k)
            for k in redis_client.scan_iter(match=KEYS.batch_namespace_pattern(versions[0]))
        )
        <= 300
    )
    assert rollback_pointer(redis_client, KEYS) == versions[2]
    assert redis_client.get(KEYS.batch_pointer) == versions[2].encode()
    with pytest.raises(LookupError):
        rollback_pointer(redis_client, KEYS)


def test_a_backfill_of_earlier_days_leaves_serving_on_the_latest_batch(spark, redis_server, redis_client):
    day = date(2024, 5, 10)
    latest = publish(redis_server, spark, day, users=2, label=5.0, published_at=5000, keep=1)
    backfills = [
        publish(redis_server, spark, date(2024, 5, d), users=2, label=float(d), published_at=6000 + d, keep=1)
        for d in (7, 8, 9)
    ]
    assert latest["current"] is True
    assert [(b["version"], b["current"], b["expired"]) for b in backfills] == [
        ("20240507-6007", False, []),
        ("20240508-6008", False, []),
        ("20240509-6009", False, []),
    ]
    assert redis_client.get(KEYS.batch_pointer) == b"20240510-5000"
    assert [v.decode() for v in redis_client.zrange(KEYS.batch_versions, 0, -1)] == ["20240510-5000"]
    assert version_ttls(redis_client, "20240510-5000") == {-1}
    for backfill in backfills:  # written, never served, and gone within the pending TTL
        ttls = version_ttls(redis_client, backfill["version"])
        assert ttls and all(0 < t <= PENDING_TTL for t in ttls)
    # the same day again (a rerun) still becomes current
    assert publish(redis_server, spark, day, users=2, label=5.0, published_at=7000, keep=1)["current"] is True
    assert redis_client.get(KEYS.batch_pointer) == b"20240510-7000"


def test_a_publish_that_fails_half_way_leaves_no_key_without_a_ttl(spark, redis_server, redis_client):
    from dataclasses import replace

    from pyspark.sql import functions as F

    publish(redis_server, spark, A, users=2, label=1.0, published_at=1000)
    good = content(spark, B, users=2, label=2.0)
    broken = replace(
        good, similar=good.similar.withColumn("items", F.when(F.lit(True), F.raise_error(F.lit("disk gone"))))
    )
    with pytest.raises(Exception, match="disk gone"):
        publish(redis_server, spark, B, users=2, label=2.0, published_at=2000, batch=broken)

    half_written = version_ttls(redis_client, "20240502-2000")
    assert redis_client.exists(KEYS.user_recs("20240502-2000", "u1")) == 1  # it got part of the way
    assert half_written and all(0 < t <= PENDING_TTL for t in half_written)
    assert redis_client.get(KEYS.batch_pointer) == b"20240501-1000"
    assert version_ttls(redis_client, "20240501-1000") == {-1}


def test_the_publish_protocol_on_a_redis_cluster(spark, redis_cluster, cluster_client):
    """The same protocol on three masters: the executors' writes, the flip, persist, expiry and the
    backfill rule, with a reader polling through the cluster during the second publish."""
    first = publish(redis_cluster, spark, A, users=300, label=1.0, published_at=1000, keep=1, cluster=True)
    probe = [f"u{u}" for u in range(0, 300, 30)]
    seen: list[tuple[str, bool]] = []  # (version, every probed key of that version complete and unmixed)
    stop = threading.Event()

    def read_batch():
        from feature_store.redis_cluster import open_redis

        reader = open_redis(redis_cluster.url, cluster=True)
        while not stop.is_set():
            version = reader.get(KEYS.batch_pointer).decode()
            label = reader.hget(KEYS.batch_meta(version), "label")
            recs = reader.mget_nonatomic([KEYS.user_recs(version, u) for u in probe])  # users on every master
            ok = label is not None and all(
                r is not None and round(decode_recs(r)[0].score, 6) == round(float(label) + 0.3, 6)
                for r in recs
            )
            seen.append((version, ok))
        reader.close()

    thread = threading.Thread(target=read_batch, daemon=True)
    thread.start()
    second = publish(redis_cluster, spark, B, users=300, label=2.0, published_at=2000, keep=1, cluster=True)
    deadline = time.monotonic() + 30
    while ("20240502-2000", True) not in seen and time.monotonic() < deadline:
        thread.join(0.05)
    stop.set()
    thread.join(10)
    backfill = publish(redis_cluster, spark, A, users=2, label=3.0, published_at=3000, keep=1, cluster=True)

    assert (first["current"], first["counts"]["recs"], first["counts"]["item_features"]) == (True, 300, 3)
    assert (second["current"], second["expired"]) == (True, ["20240501-1000"])
    assert {ok for _, ok in seen} == {True}
    assert seen[0][0] == "20240501-1000" and seen[-1][0] == "20240502-2000"
    assert (backfill["current"], backfill["expired"]) == (False, [])  # an earlier as_of: not flipped to
    assert cluster_client.get(KEYS.batch_pointer) == b"20240502-2000"
    assert [v.decode() for v in cluster_client.zrange(KEYS.batch_versions, 0, -1)] == ["20240502-2000"]
    assert [tuple(r) for r in decode_recs(cluster_client.get(KEYS.user_recs("20240502-2000", "u1")))][:3] == [
        ("i0", pytest.approx(2.3), "batch"),
        ("i1", pytest.approx(2.2), "batch"),
        ("i2", pytest.approx(2.1), "batch"),
    ]
    ttls = {
        name: {cluster_client.ttl(k) for k in cluster_client.scan_iter(match=KEYS.batch_namespace_pattern(v))}
        for name, v in (("old", "20240501-1000"), ("current", "20240502-2000"), ("backfill", "20240501-3000"))
    }
    assert ttls["current"] == {-1}
    assert ttls["old"] and all(0 < t <= 600 for t in ttls["old"])  # the grace of the expired version
    assert ttls["backfill"] and all(600 < t <= PENDING_TTL for t in ttls["backfill"])  # still pending

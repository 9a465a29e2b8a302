"""The nightly's serving steps: batch scores by the champion (or fused sources without one), their
atomic publish to Redis, and the expiry of published versions past their grace."""

from __future__ import annotations

import logging
from typing import Any

from pyspark.sql import functions as F

from feature_store.redis_keys import RedisKeys
from feature_store.tables import (
    BATCH_SCORES,
    CANDIDATES,
    INTERACTIONS,
    ITEM_FEATURES,
    ITEM_SIMILAR,
    USER_FEATURES,
)
from spark_jobs.delta_io import as_of_condition
from spark_jobs.steps.context import BatchContext, BatchStepError
from spark_jobs.steps.data import realtime_at

log = logging.getLogger("lambdarec.batch")


def step_score(ctx: BatchContext) -> dict[str, Any]:
    from feature_store.registry import NoChampion, load_ranker
    from spark_jobs.scoring import (
        NO_MODEL_VERSION,
        fused_source_scores,
        registered_model,
        score_inputs,
        top_n_scores,
    )
    from spark_jobs.training_set import at, ranker_inputs

    settings, as_of = ctx.settings, ctx.cutoffs.serve
    candidates = ctx.read(CANDIDATES)
    try:
        champion = load_ranker(settings, preferred="native")
        model = registered_model(champion)
        inputs = ranker_inputs(
            candidates, ctx.read(USER_FEATURES), ctx.read(ITEM_FEATURES), as_of, realtime_at(ctx, as_of)
        )
        scored = score_inputs(inputs, model)
        version = champion.version
    except NoChampion:
        log.warning(
            "no champion yet: batch scores fall back to reciprocal-rank fusion of the candidate sources"
        )
        scored, version = fused_source_scores(at(candidates, as_of)), NO_MODEL_VERSION
    rows = ctx.replace_where(
        BATCH_SCORES, top_n_scores(scored, settings.batch.top_n, as_of, version), as_of_condition(as_of)
    )
    return {"as_of": str(as_of), "rows": rows, "model_version": version}


def step_publish(ctx: BatchContext) -> dict[str, Any]:
    from spark_jobs.candidates import history_before, popularity
    from spark_jobs.publish import PublishTarget, batch_content, batch_version, publish_batch

    settings, as_of = ctx.settings, ctx.cutoffs.serve
    scores = ctx.read(BATCH_SCORES).where(F.col("as_of") == F.lit(as_of))
    first = scores.select("model_version").first()
    if first is None:
        raise BatchStepError(f"gold/batch_scores has nothing for as_of {as_of}: run the step `score` first")
    interactions = ctx.read(INTERACTIONS)
    popular_items = (
        popularity(
            history_before(interactions, as_of),
            as_of,
            settings.candidates.popular_window_days,
            settings.candidates.popular_half_life_days,
        )
        .orderBy(F.col("score").desc(), F.col("item_id"))
        .limit(settings.batch.top_n)
        .collect()
    )
    content = batch_content(
        scores,
        ctx.read(CANDIDATES),
        ctx.read(USER_FEATURES),
        ctx.read(ITEM_FEATURES),
        ctx.read(ITEM_SIMILAR),
        interactions,
        [(r.item_id, r.score) for r in popular_items],
        as_of,
    )
    now = ctx.clock()
    target = PublishTarget(
        ctx.redis_url(),
        settings.redis.key_prefix,
        batch_version(as_of, int(now)),
        settings.publish.pending_ttl_s,
        settings.redis.cluster,
    )
    meta = {
        "as_of": str(as_of),
        "model_name": settings.ranker.model_name,
        "model_version": first.model_version,
        "published_at": int(now),
        "version": target.version,
    }
    return publish_batch(target, content, meta, now, settings.publish.keep_versions, settings.publish.grace_s)


def step_expire(ctx: BatchContext) -> dict[str, Any]:
    from feature_store.redis_cluster import open_redis
    from spark_jobs.publish import expire_old_versions

    client = open_redis(ctx.redis_url(), ctx.settings.redis.cluster)
    try:
        keys = RedisKeys(ctx.settings.redis.key_prefix)
        return {
            "expired": expire_old_versions(
                client, keys, ctx.settings.publish.keep_versions, ctx.settings.publish.grace_s
            )
        }
    finally:
        client.close()

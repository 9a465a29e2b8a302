"""The real-time ranker inputs (feature_store.realtime) rebuilt point in time by Spark, for training.

For moments (user_id, t_ms) these pure transforms compute, from the interactions up to t only, what
the speed layer had in Redis at t: the user's session, their recent items (the seeds), real-time
co-visitation, and the seeds' batch similar lists. `realtime_inputs` joins them onto candidates
(user_id, t_ms, item_id) as the REALTIME_INPUTS columns. The semantics are written once, in
`feature_store.realtime` (its `reference_features` is the oracle the tests compare with).

Called by `spark_jobs.training_set` (request-time examples, and the ranker inputs of a nightly cut-off).
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from feature_store.realtime import REALTIME_INPUTS, RECENCY_DECAY, RealtimeParams

RT_SESSION_EVENTS, RT_CATEGORY_SHARE, RT_COVISIT, RT_SIMILAR, RT_RECENCY_COVISIT, RT_RECENCY_SIMILAR = (
    REALTIME_INPUTS
)


def event_time_ms(ts: Column) -> Column:
    return (F.unix_micros(ts) / 1000).cast("long")


def timed_events(interactions: DataFrame) -> DataFrame:
    """(event_id, user_id, item_id, event_type, ts_ms) of interaction rows."""
    return interactions.select(
        "event_id", "user_id", "item_id", "event_type", event_time_ms(F.col("ts")).alias("ts_ms")
    )


def with_sessions(events: DataFrame, params: RealtimeParams) -> DataFrame:
    """`timed_events` with `seq` (each user's processing order: event time, then event id) and
    `session_no` (a gap longer than the session gap starts the next session)."""
    order = Window.partitionBy("user_id").orderBy("ts_ms", "event_id")
    previous = F.lag("ts_ms").over(order)
    started = (previous.isNull() | (F.col("ts_ms") - previous > F.lit(params.session_gap_ms))).cast("int")
    return (
        events.withColumn("seq", F.row_number().over(order))
        .withColumn("_started", started)
        .withColumn(
            "session_no",
            F.sum("_started").over(order.rowsBetween(Window.unboundedPreceding, Window.currentRow)),
        )
        .drop("_started")
    )


def sessions_at(
    events: DataFrame, moments: DataFrame, categories: DataFrame, params: RealtimeParams
) -> tuple[DataFrame, DataFrame]:
    """(user_id, t_ms, rt_session_events) and (user_id, t_ms, category, share) of the user's session at t
    (`events` from `with_sessions`; `categories`: item_id, category)."""
    upto = moments.join(events.select("user_id", "ts_ms", "seq", "session_no"), "user_id").where(
        F.col("ts_ms") <= F.col("t_ms")
    )
    last = upto.groupBy("user_id", "t_ms").agg(F.max(F.struct("seq", "ts_ms", "session_no")).alias("last"))
    alive = last.where(F.col("last.ts_ms") > F.col("t_ms") - F.lit(params.ttl_ms)).select(
        "user_id", "t_ms", F.col("last.seq").alias("last_seq"), F.col("last.session_no").alias("session_no")
    )
    members = (
        alive.join(
            events.select("user_id", "session_no", F.col("seq").alias("m_seq"), "item_id"),
            ["user_id", "session_no"],
        )
        .where(F.col("m_seq") <= F.col("last_seq"))
        .join(categories, "item_id", "left")
    )
    counts = members.groupBy("user_id", "t_ms").agg(F.count("*").cast("double").alias(RT_SESSION_EVENTS))
    per_category = (
        members.where(F.col("category").isNotNull())
        .groupBy("user_id", "t_ms", "category")
        .agg(F.count("*").alias("n"))
    )
    shares = per_category.withColumn(
        "share", F.col("n") / F.sum("n").over(Window.partitionBy("user_id", "t_ms"))
    ).select("user_id", "t_ms", "category", "share")
    return counts, shares


def seeds_at(events: DataFrame, moments: DataFrame, params: RealtimeParams) -> DataFrame:
    """(user_id, t_ms, seed, position): the user's newest `params.seeds` distinct items in
    (t - ttl, t], position 0 the newest."""
    window = moments.join(events.select("user_id", "item_id", "ts_ms"), "user_id").where(
        (F.col("ts_ms") <= F.col("t_ms")) & (F.col("ts_ms") > F.col("t_ms") - F.lit(params.ttl_ms))
    )
    latest = window.groupBy("user_id", "t_ms", "item_id").agg(F.max("ts_ms").alias("last_ts"))
    order = Window.partitionBy("user_id", "t_ms").orderBy(F.col("last_ts").desc(), F.col("item_id").desc())
    return (
        latest.withColumn("_r", F.row_number().over(order))
        .where(F.col("_r") <= params.seeds)
        .select("user_id", "t_ms", F.col("item_id").alias("seed"), (F.col("_r") - 1).alias("position"))
    )


def covisit_pairs(events: DataFrame, params: RealtimeParams) -> DataFrame:
    """(item_id, partner_id, ts_ms): the speed layer's co-visitation increments, both directions
    (`events` from `with_sessions`)."""
    positive = (
        F.col("event_type").isin(*sorted(params.positive_types)) if params.positive_types else F.lit(False)
    )
    new = events.where(positive).select("user_id", "event_id", "item_id", "ts_ms", "seq")
    before = events.select(
        "user_id",
        F.col("item_id").alias("o_item"),
        F.col("ts_ms").alias("o_ts"),
        F.col("seq").alias("o_seq"),
        F.col("event_type").alias("o_type"),
    )
    near = new.join(before, "user_id").where(
        (F.col("o_seq") < F.col("seq")) & (F.col("o_ts") >= F.col("ts_ms") - F.lit(params.session_gap_ms))
    )
    latest = (
        near.groupBy("user_id", "event_id", "item_id", "ts_ms", "o_item")
        .agg(F.max(F.struct("o_seq", "o_ts", "o_type")).alias("o"))
        .select(
            "event_id",
            "item_id",
            "ts_ms",
            "o_item",
            F.col("o.o_ts").alias("o_ts"),
            F.col("o.o_type").alias("o_type"),
        )
    )
    o_positive = (
        F.col("o_type").isin(*sorted(params.positive_types)) if params.positive_types else F.lit(False)
    )
    seen = latest.where((F.col("o_item") == F.col("item_id")) & o_positive).select("event_id").distinct()
    order = Window.partitionBy("event_id").orderBy(F.col("o_ts").desc(), F.col("o_item").desc())
    partners = (
        latest.join(seen, "event_id", "left_anti")
        .withColumn("_r", F.row_number().over(order))
        .where(
            (F.col("_r") <= params.covisit_session_items) & (F.col("o_item") != F.col("item_id")) & o_positive
        )
    )
    forward = partners.select("item_id", F.col("o_item").alias("partner_id"), "ts_ms")
    backward = partners.select(
        F.col("o_item").alias("item_id"), F.col("item_id").alias("partner_id"), "ts_ms"
    )
    return forward.unionByName(backward)


def covisit_at(pairs: DataFrame, seeds: DataFrame, params: RealtimeParams) -> DataFrame:
    """(user_id, t_ms, item_id, rt_recent_covisit, rt_recency_covisit): over the seeds, the counts of
    items among each seed's top `params.neighbours` real-time co-visited items at t, summed as they
    are and weighted by the seed's recency over its top count (feature_store.realtime)."""
    counted = (
        seeds.join(pairs.withColumnRenamed("item_id", "seed").withColumnRenamed("ts_ms", "p_ts"), "seed")
        .where((F.col("p_ts") <= F.col("t_ms")) & (F.col("p_ts") > F.col("t_ms") - F.lit(params.ttl_ms)))
        .groupBy("user_id", "t_ms", "seed", "position", "partner_id")
        .agg(F.count("*").cast("double").alias("w"))
    )
    per_seed = Window.partitionBy("user_id", "t_ms", "seed")
    order = per_seed.orderBy(F.col("w").desc(), F.col("partner_id").desc())
    top = counted.withColumn("_r", F.row_number().over(order)).where(F.col("_r") <= params.neighbours)
    return (
        top.withColumn("_best", F.max("w").over(per_seed))
        .groupBy("user_id", "t_ms", F.col("partner_id").alias("item_id"))
        .agg(F.sum("w").alias(RT_COVISIT), F.sum(by_recency("w")).alias(RT_RECENCY_COVISIT))
    )


def similar_at(similar: DataFrame, seeds: DataFrame, params: RealtimeParams) -> DataFrame:
    """(user_id, t_ms, item_id, rt_recent_similar, rt_recency_similar) from one cut-off's
    `gold/item_similar` rows: over the seeds, the scores of each seed's first `params.neighbours`
    similar items, summed as they are and weighted by the seed's recency over its best score
    (feature_store.realtime; a seed whose best score is not positive adds nothing to the latter)."""
    firsts = (
        similar.where(F.col("rank") <= params.neighbours)
        .select(F.col("item_id").alias("seed"), F.col("similar_item_id").alias("item_id"), "score")
        .withColumn("_best", F.max("score").over(Window.partitionBy("seed")))
    )
    return (
        seeds.join(firsts, "seed")
        .groupBy("user_id", "t_ms", "item_id")
        .agg(F.sum("score").alias(RT_SIMILAR), F.sum(by_recency("score")).alias(RT_RECENCY_SIMILAR))
    )


def by_recency(score: str) -> Column:
    """One neighbour's part of a recency-weighted input (feature_store.realtime
    `from_neighbour_lists_by_recency`): RECENCY_DECAY^position x score / the seed's best (`_best`),
    0 when the seed's best is not positive."""
    weighted = F.pow(F.lit(RECENCY_DECAY), F.col("position")) * F.col(score) / F.col("_best")
    return F.when(F.col("_best") > 0, weighted).otherwise(F.lit(0.0))


@dataclass(frozen=True)
class RealtimeState:
    """Everything `realtime_inputs` joins, for one set of moments."""

    sessions: DataFrame
    shares: DataFrame
    seeds: DataFrame
    covisit: DataFrame
    similar: DataFrame


def realtime_state(
    interactions: DataFrame,
    moments: DataFrame,
    categories: DataFrame,
    similar: DataFrame,
    params: RealtimeParams,
) -> RealtimeState:
    """The speed layer's view at each moment (user_id, t_ms), from `interactions` (silver rows; only
    those up to each t are used), `categories` (item_id, category) and one cut-off's item_similar rows."""
    events = with_sessions(timed_events(interactions), params)
    sessions, shares = sessions_at(events, moments, categories, params)
    seeds = seeds_at(events, moments, params)
    return RealtimeState(
        sessions,
        shares,
        seeds,
        covisit_at(covisit_pairs(events, params), seeds, params),
        similar_at(similar, seeds, params),
    )


def realtime_inputs(candidates: DataFrame, state: RealtimeState, categories: DataFrame) -> DataFrame:
    """`candidates` (user_id, t_ms, item_id, ...) with the REALTIME_INPUTS columns (0 where none)."""
    keys = ["user_id", "t_ms"]
    joined = (
        candidates.join(categories, "item_id", "left")
        .join(state.sessions, keys, "left")
        .join(state.shares, [*keys, "category"], "left")
        .join(state.covisit, [*keys, "item_id"], "left")
        .join(state.similar, [*keys, "item_id"], "left")
    )
    return joined.select(
        *candidates.columns,
        F.coalesce(F.col(RT_SESSION_EVENTS), F.lit(0.0)).alias(RT_SESSION_EVENTS),
        F.coalesce(F.col("share"), F.lit(0.0)).alias(RT_CATEGORY_SHARE),
        F.coalesce(F.col(RT_COVISIT), F.lit(0.0)).alias(RT_COVISIT),
        F.coalesce(F.col(RT_SIMILAR), F.lit(0.0)).alias(RT_SIMILAR),
        F.coalesce(F.col(RT_RECENCY_COVISIT), F.lit(0.0)).alias(RT_RECENCY_COVISIT),
        F.coalesce(F.col(RT_RECENCY_SIMILAR), F.lit(0.0)).alias(RT_RECENCY_SIMILAR),
    )

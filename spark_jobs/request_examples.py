"""Ranker training examples taken at request time, point in time.

The nightly cut-off examples (`training_set.build_training_set`) ask "what will the user do in the next
week" at midnight, with no real-time input: a ranker trained on them cannot learn what the speed layer
knows. Here a training example is a moment t at which the user could have asked inside the training
window: one of their events (a request in the middle of a session), or 1 ms before the first event of
one of their sessions (a user opening the app, whose state is still the previous session's; without
these, the ranker never sees a request that its real-time inputs say little about, and ranks such
requests worse than the hand priors):

- candidates = what serving would have proposed at t: the nightly candidates of the user (cut-off
  `as_of`, the last nightly before t) plus the real-time sources computed from the events up to t
  (co-visitation neighbours and batch similar items of the user's recent items), minus what serving
  excludes (the user's history before the nightly and their recent items);
- inputs = the gold features of `as_of`, the nightly per-source scores, and the real-time inputs at t
  (`spark_jobs.realtime_features`, the definitions of `feature_store.realtime`);
- label = the user's positive events in (t, t + horizon], graded by the strongest event's weight; the
  next item (the first the user turned to) can be graded higher (`with_next_item_relevance`).

A moment is a query: its rows carry `user_id` = `<user_id>@<t_ms>` in the training set, so the rankers
group them per moment. Called by `spark_jobs.steps.data` (step `training_set`, and the real-time
inputs of the holdout and scoring cut-offs through `realtime_at_cutoff`).
"""

from __future__ import annotations

import functools
from datetime import date

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from feature_store.realtime import REALTIME_INPUTS, RealtimeParams
from feature_store.tables import TRAINING_SET
from spark_jobs.candidates import cutoff_timestamp, history_before, interactions_between, seen_items
from spark_jobs.realtime_features import (
    RealtimeState,
    event_time_ms,
    realtime_inputs,
    realtime_state,
    timed_events,
    with_sessions,
)
from spark_jobs.training_set import (
    at,
    candidate_scores,
    feature_vector,
    gold_at,
    labelled_candidates,
    relevance_of_weight,
    sampled_examples,
)

QUERY_SEPARATOR = "@"
WITHOUT_SPEED = "without_speed"  # the last part of the query id of a moment asked without the speed layer


def asking_user(query_id: Column) -> Column:
    """The user who asks a query: `<user_id>` of a moment's `<user_id>@<t_ms>[@without_speed]`, or the
    query id itself when it is a plain user id (a nightly cut-off example)."""
    moment = f"{QUERY_SEPARATOR}[0-9]+({QUERY_SEPARATOR}{WITHOUT_SPEED})?$"
    return F.regexp_replace(query_id, moment, "")


def epoch_ms(as_of: date) -> int:
    return int(cutoff_timestamp(as_of).timestamp() * 1000)


def reach(interactions: DataFrame, as_of: date, params: RealtimeParams) -> DataFrame:
    """The interactions a moment at or after `as_of` can depend on: from one ttl and one session gap
    before it (recent items and co-visitation look back one ttl, a co-visitation pair one gap more).
    Bounds the work to the window instead of the whole history; exact unless a session runs longer
    than the ttl."""
    since = F.lit(epoch_ms(as_of) - params.ttl_ms - params.session_gap_ms)
    return interactions.where(event_time_ms(F.col("ts")) >= since)


def session_starts(interactions: DataFrame, start: date, end: date, params: RealtimeParams) -> DataFrame:
    """(user_id, t_ms): 1 ms before the first event of each session (`with_sessions`) that starts in
    [start, end), the instant a user opening the app asks (their state is still the previous
    session's). Reading from one gap before `start` is exact: an event after `start` whose
    predecessor is earlier than that is more than one gap after it."""
    event_ms = event_time_ms(F.col("ts"))
    since = F.lit(epoch_ms(start) - params.session_gap_ms)
    window = interactions.where((event_ms >= since) & (event_ms < F.lit(epoch_ms(end))))
    firsts = (
        with_sessions(timed_events(window), params)
        .groupBy("user_id", "session_no")
        .agg(F.min("ts_ms").alias("first_ms"))
    )
    return firsts.where(F.col("first_ms") > F.lit(epoch_ms(start))).select(
        "user_id", (F.col("first_ms") - 1).alias("t_ms")
    )


def sample_moments(
    interactions: DataFrame,
    start: date,
    end: date,
    horizon_ms: int,
    per_user: int,
    seed: int = 0,
    sessions: RealtimeParams | None = None,
) -> DataFrame:
    """(user_id, t_ms): at most `per_user` of each user's moments in [start, end) whose label window
    (t, t + horizon] ends before `end`, chosen by a seeded hash (reruns pick the same). The moments
    are the user's event times and, with `sessions` (whose session gap counts), their `session_starts`."""
    events = timed_events(interactions_between(interactions, start, end)).select(
        "user_id", F.col("ts_ms").alias("t_ms")
    )
    if sessions is not None:
        events = events.unionByName(session_starts(interactions, start, end, sessions))
    moments = events.where(F.col("t_ms") + F.lit(horizon_ms) < F.lit(epoch_ms(end))).distinct()
    order = Window.partitionBy("user_id").orderBy(F.xxhash64(F.lit(seed), "user_id", "t_ms"), "t_ms")
    return (
        moments.withColumn("_r", F.row_number().over(order))
        .where(F.col("_r") <= per_user)
        .select("user_id", "t_ms")
    )


def moment_labels(interactions: DataFrame, moments: DataFrame, horizon_ms: int) -> DataFrame:
    """(user_id, t_ms, item_id, relevance, first_ms) of the user's positive events in (t, t + horizon]:
    the grade of the strongest, and when the first of them happened."""
    positive = interactions.where((F.col("label") == 1) & (F.col("weight") > 0)).select(
        "user_id", "item_id", "weight", event_time_ms(F.col("ts")).alias("ts_ms")
    )
    after = moments.join(positive, "user_id").where(
        (F.col("ts_ms") > F.col("t_ms")) & (F.col("ts_ms") <= F.col("t_ms") + F.lit(horizon_ms))
    )
    return after.groupBy("user_id", "t_ms", "item_id").agg(
        relevance_of_weight(F.max("weight")).alias("relevance"), F.min("ts_ms").alias("first_ms")
    )


def with_next_item_relevance(labelled: DataFrame, relevance: int) -> DataFrame:
    """Raise the label of each query's next item (the labelled candidate the user turned to first
    after t; ties by item id) to `relevance` when its grade is lower. A request asks "what next":
    the horizon alone labels the tenth item of a session like the first. 0 leaves every label as it
    is."""
    if relevance <= 0:
        return labelled
    order = Window.partitionBy("user_id").orderBy(F.col("first_ms").asc_nulls_last(), "item_id")
    is_next = (F.row_number().over(order) == 1) & (F.col("relevance") > 0)
    return labelled.withColumn(
        "relevance",
        F.when(is_next, F.greatest("relevance", F.lit(float(relevance)))).otherwise(F.col("relevance")),
    )


def moment_candidates(
    candidates: DataFrame, state: RealtimeState, moments: DataFrame, interactions: DataFrame, as_of: date
) -> DataFrame:
    """(user_id, t_ms, item_id, cand_<source>..., sources): the nightly candidates of `as_of` and the
    real-time neighbours at t, minus the history before `as_of` and the recent items at t."""
    nightly = candidate_scores(at(candidates, as_of))
    proposed = (
        moments.join(nightly.select("user_id", "item_id"), "user_id")
        .unionByName(state.covisit.select("user_id", "t_ms", "item_id"))
        .unionByName(state.similar.select("user_id", "t_ms", "item_id"))
        .distinct()
    )
    recent = state.seeds.select("user_id", "t_ms", F.col("seed").alias("item_id"))
    fresh = proposed.join(
        seen_items(history_before(interactions, as_of)), ["user_id", "item_id"], "left_anti"
    ).join(recent, ["user_id", "t_ms", "item_id"], "left_anti")
    return fresh.join(nightly, ["user_id", "item_id"], "left").withColumn(
        "sources", F.coalesce(F.col("sources"), F.array().cast("array<string>"))
    )


def request_time_inputs(
    candidates: DataFrame,
    user_features: DataFrame,
    item_features: DataFrame,
    item_similar: DataFrame,
    interactions: DataFrame,
    moments: DataFrame,
    as_of: date,
    params: RealtimeParams,
    without_speed: bool = False,
) -> DataFrame:
    """(user_id, t_ms, item_id, features, sources) for every candidate of every moment (RANKER_FEATURES
    order; the batch parts as of `as_of`, the real-time parts at t). `without_speed`: as serving asks
    when the speed layer holds nothing for the user (down, or the state expired): the nightly
    candidates only, every real-time input 0; the recent items stay excluded, as the product backend
    passes what the user just consumed."""
    users, items = gold_at(user_features, item_features, as_of)
    categories = items.select("item_id", "category")
    state = realtime_state(
        reach(interactions, as_of, params), moments, categories, at(item_similar, as_of), params
    )
    pool = moment_candidates(candidates, state, moments, interactions, as_of)
    if without_speed:
        pool = pool.where(F.size("sources") > 0)
        realtime = pool.select("*", *[F.lit(0.0).alias(name) for name in REALTIME_INPUTS])
    else:
        realtime = realtime_inputs(pool, state, categories)
    joined = realtime.join(users, "user_id", "left").join(items, "item_id", "left")
    return joined.select(
        "user_id", "t_ms", "item_id", feature_vector(joined, True).alias("features"), "sources"
    )


def build_request_time_set(
    candidates: DataFrame,
    user_features: DataFrame,
    item_features: DataFrame,
    item_similar: DataFrame,
    interactions: DataFrame,
    as_of: date,
    end: date,
    params: RealtimeParams,
    *,
    horizon_ms: int,
    moments_per_user: int,
    max_negatives: int,
    session_start_moments: bool = True,
    moments_without_speed_per_user: int = 0,
    next_item_relevance: int = 0,
    seed: int = 0,
) -> DataFrame:
    """The `gold/training_set` partition of cut-off `as_of`: request-time examples at moments in
    [as_of, end), one query per moment (see the module docstring); with
    `moments_without_speed_per_user`, that many more moments per user asked `without_speed` (query
    ids end in `@without_speed`); with `next_item_relevance`, see `with_next_item_relevance`."""
    sessions = params if session_start_moments else None
    asked = [(moments_per_user, seed, False, [])]
    if moments_without_speed_per_user:
        asked.append((moments_without_speed_per_user, seed + 1, True, [F.lit(WITHOUT_SPEED)]))
    inputs, labels = [], []
    for per_user, sample_seed, without_speed, suffix in asked:
        moments = sample_moments(
            interactions, as_of, end, horizon_ms, per_user, sample_seed, sessions
        ).cache()
        query = F.concat_ws(QUERY_SEPARATOR, F.col("user_id"), F.col("t_ms").cast("string"), *suffix)
        inputs.append(
            request_time_inputs(
                candidates,
                user_features,
                item_features,
                item_similar,
                interactions,
                moments,
                as_of,
                params,
                without_speed,
            ).select(query.alias("user_id"), "item_id", "features", "sources")
        )
        labels.append(
            moment_labels(interactions, moments, horizon_ms).select(
                query.alias("user_id"), "item_id", "relevance", "first_ms"
            )
        )
    labelled = labelled_candidates(
        functools.reduce(DataFrame.unionByName, inputs), functools.reduce(DataFrame.unionByName, labels)
    )
    examples = sampled_examples(with_next_item_relevance(labelled, next_item_relevance), max_negatives, seed)
    return examples.select(F.lit(as_of).cast("date").alias("as_of"), "*").select(*TRAINING_SET.columns)


def realtime_at_cutoff(
    candidates: DataFrame,
    item_features: DataFrame,
    item_similar: DataFrame,
    interactions: DataFrame,
    as_of: date,
    params: RealtimeParams,
) -> DataFrame:
    """(user_id, item_id, REALTIME_INPUTS...) of cut-off `as_of`'s candidates at the cut-off itself
    (events strictly before 00:00 UTC of `as_of`): what a request at midnight would have seen."""
    t_ms = epoch_ms(as_of) - 1
    pool = at(candidates, as_of).select("user_id", "item_id").distinct().withColumn("t_ms", F.lit(t_ms))
    moments = pool.select("user_id", "t_ms").distinct()
    categories = at(item_features, as_of).select("item_id", "category")
    state = realtime_state(
        reach(history_before(interactions, as_of), as_of, params),
        moments,
        categories,
        at(item_similar, as_of),
        params,
    )
    return realtime_inputs(pool, state, categories).drop("t_ms")

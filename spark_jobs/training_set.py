"""The ranker's inputs and the training set, point-in-time correct.

A cut-off T (00:00 UTC of a date) splits time: the ranker's inputs for T come only from tables computed
from events strictly before T (gold user/item features with `as_of = T`, `gold/candidates` with
`as_of = T`), and its labels only from silver interactions in [T, T + horizon).

- `ranker_inputs`: candidates of all sources x gold features -> the vector in
  `feature_store.ranking.RANKER_FEATURES` order (missing = NaN). Training, evaluation and batch scoring
  all call it, so the three cannot disagree about a feature.
- `graded_labels`: relevance per (user, item) from the event weights of the label window.
- `training_examples` / `build_training_set`: candidates x labels with every positive and a
  deterministic sample of the candidates the user did not touch (hard negatives: a source proposed
  them), for users with at least one of each (others carry no ranking signal).

Called by `spark_jobs.steps.data` (step `training_set`), `spark_jobs.evaluation` and
`spark_jobs.scoring`.
"""

from __future__ import annotations

from datetime import date, timedelta

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from feature_store.genres import GENRE_INPUTS
from feature_store.ranking import (
    CANDIDATE_SOURCES,
    ITEM_INPUTS,
    MAX_RELEVANCE,
    NIGHTLY_INPUTS,
    POOL_SCORERS,
    POOL_VIEWS,
    RANKER_FEATURES,
    REALTIME_INPUTS,
    USER_INPUTS,
    pool_input,
)
from feature_store.tables import TRAINING_SET
from spark_jobs.candidates import interactions_between

MISSING = float("nan")


def _or_missing(column):
    return F.coalesce(column.cast("double"), F.lit(MISSING))


def at(table: DataFrame, as_of: date) -> DataFrame:
    """The rows of a gold table computed for cut-off `as_of`: the only partition a cut-off may read."""
    return table.where(F.col("as_of") == F.lit(as_of).cast("date"))


def candidate_scores(candidates: DataFrame) -> DataFrame:
    """(user_id, item_id, NIGHTLY_INPUTS..., sources): one row per proposed item; `cand_<source>` = 1 /
    its rank in each source's list, `pool_<scorer>_score` and `_rank` = each pool scorer's relative
    score and 1 / its rank in the pool, null where missing (feature_store.ranking: why a rank, not the
    source's score); `sources`: the proposing sources only."""
    source = F.col("source")
    return candidates.groupBy("user_id", "item_id").agg(
        *[F.max(F.when(source == s, 1.0 / F.col("rank"))).alias(f"cand_{s}") for s in CANDIDATE_SOURCES],
        *[
            F.max(F.when(source == s, F.col("score") if view == "score" else 1.0 / F.col("rank"))).alias(
                pool_input(s, view)
            )
            for s in POOL_SCORERS
            for view in POOL_VIEWS
        ],
        F.array_sort(F.collect_set(F.when(source.isin(*CANDIDATE_SOURCES), source))).alias("sources"),
    )


def genre_columns(profile: Column, genres: Column) -> list[Column]:
    """GENRE_INPUTS of a user's `profile` (map) and a candidate's `genres` (array), as
    feature_store.genres.genre_inputs defines them (null: missing)."""
    shares = F.transform(genres, lambda g: F.coalesce(profile[g], F.lit(0.0)))
    total = F.aggregate(shares, F.lit(0.0), lambda acc, x: acc + x)
    count = F.size(shares).cast("double")
    norm = F.sqrt(F.aggregate(F.map_values(profile), F.lit(0.0), lambda acc, x: acc + x * x))
    present = (F.coalesce(F.size(profile), F.lit(0)) > 0) & (F.coalesce(F.size(genres), F.lit(0)) > 0)
    values = [total / (norm * F.sqrt(count)), F.array_max(shares), total / count]
    assert len(values) == len(GENRE_INPUTS)
    return [F.when(present, v) for v in values]


def feature_vector(joined: DataFrame, realtime: bool) -> Column:
    """The RANKER_FEATURES array of rows holding `uf` (user features map), `itf` (item features map),
    `aff` (category affinity map), `category`, `gp` (genre profile map), `genres`, `cand_<source>` and,
    when `realtime`, the REALTIME_INPUTS columns (else those are missing: NaN)."""
    vector = (
        [_or_missing(F.col("uf")[name]) for name in USER_INPUTS]
        + [_or_missing(F.col("itf")[name]) for name in ITEM_INPUTS]
        + [_or_missing(F.col("aff")[F.col("category")])]
        + [_or_missing(c) for c in genre_columns(F.col("gp"), F.col("genres"))]
        + [_or_missing(F.col(name)) for name in NIGHTLY_INPUTS]
        + [_or_missing(F.col(name)) if realtime else F.lit(MISSING) for name in REALTIME_INPUTS]
    )
    assert len(vector) == len(RANKER_FEATURES)
    return F.array(*vector)


def gold_at(user_features: DataFrame, item_features: DataFrame, as_of: date) -> tuple[DataFrame, DataFrame]:
    """(user_id, uf, aff, gp) and (item_id, category, itf, genres) of cut-off `as_of`."""
    users = at(user_features, as_of).select(
        "user_id",
        F.col("features").alias("uf"),
        F.col("category_affinity").alias("aff"),
        F.col("genre_profile").alias("gp"),
    )
    items = at(item_features, as_of).select("item_id", "category", F.col("features").alias("itf"), "genres")
    return users, items


def ranker_inputs(
    candidates: DataFrame,
    user_features: DataFrame,
    item_features: DataFrame,
    as_of: date,
    realtime: DataFrame | None = None,
) -> DataFrame:
    """(user_id, item_id, features, sources) for every candidate of cut-off `as_of`.

    `features` follows RANKER_FEATURES: the user's gold features (USER_INPUTS), the item's (ITEM_INPUTS),
    the user's affinity for the item's category, the genre inputs, each source's score, then the real-time inputs at the
    cut-off from `realtime` (user_id, item_id, REALTIME_INPUTS...: `request_examples.realtime_at_cutoff`);
    NaN where missing."""
    users, items = gold_at(user_features, item_features, as_of)
    joined = (
        candidate_scores(at(candidates, as_of)).join(users, "user_id", "left").join(items, "item_id", "left")
    )
    if realtime is not None:
        joined = joined.join(realtime, ["user_id", "item_id"], "left")
    return joined.select(
        "user_id", "item_id", feature_vector(joined, realtime is not None).alias("features"), "sources"
    )


def graded_labels(interactions: DataFrame, as_of: date, horizon_days: int) -> DataFrame:
    """(user_id, item_id, relevance) of the positive interactions in [as_of, as_of + horizon).

    relevance = the strongest positive event's weight rounded up and capped at MAX_RELEVANCE
    (view 1 < click 2 < ... < purchase 8; a 5-star rating with threshold 3.5 weighs 2.5 -> 3)."""
    window = interactions_between(interactions, as_of, as_of + timedelta(days=horizon_days)).where(
        (F.col("label") == 1) & (F.col("weight") > 0)
    )
    return window.groupBy("user_id", "item_id").agg(relevance_of_weight(F.max("weight")).alias("relevance"))


def relevance_of_weight(weight: Column) -> Column:
    """The strongest positive event's weight rounded up and capped at MAX_RELEVANCE (a label's grade)."""
    return F.least(F.ceil(weight), F.lit(MAX_RELEVANCE)).cast("double")


def training_examples(inputs: DataFrame, labels: DataFrame, max_negatives: int, seed: int = 0) -> DataFrame:
    """Labelled candidates: all positives plus at most `max_negatives` unlabelled candidates per user
    (chosen by a seeded hash, so reruns pick the same), for users with >= 1 positive and >= 1 negative."""
    return sampled_examples(labelled_candidates(inputs, labels), max_negatives, seed)


def labelled_candidates(inputs: DataFrame, labels: DataFrame) -> DataFrame:
    """Every candidate with its label's columns; `relevance` 0 where the user did not touch it."""
    return inputs.join(labels, ["user_id", "item_id"], "left").withColumn(
        "relevance", F.coalesce(F.col("relevance"), F.lit(0.0))
    )


def sampled_examples(labelled: DataFrame, max_negatives: int, seed: int = 0) -> DataFrame:
    """`training_examples` of candidates labelled already (`labelled_candidates`)."""
    pick = Window.partitionBy("user_id", F.col("relevance") > 0).orderBy(
        F.xxhash64(F.lit(seed), "user_id", "item_id"), "item_id"
    )
    per_user = Window.partitionBy("user_id")
    return (
        labelled.withColumn("_pick", F.row_number().over(pick))
        .where((F.col("relevance") > 0) | (F.col("_pick") <= max_negatives))
        .withColumn("_pos", F.sum((F.col("relevance") > 0).cast("int")).over(per_user))
        .withColumn("_n", F.count("*").over(per_user))
        .where((F.col("_pos") > 0) & (F.col("_pos") < F.col("_n")))
        .select("user_id", "item_id", "features", "relevance")
    )


def build_training_set(
    candidates: DataFrame,
    user_features: DataFrame,
    item_features: DataFrame,
    interactions: DataFrame,
    as_of: date,
    horizon_days: int,
    max_negatives: int,
    seed: int = 0,
) -> DataFrame:
    """The `gold/training_set` partition of cut-off `as_of` (see the module docstring)."""
    inputs = ranker_inputs(candidates, user_features, item_features, as_of)
    examples = training_examples(
        inputs, graded_labels(interactions, as_of, horizon_days), max_negatives, seed
    )
    return examples.select(F.lit(as_of).cast("date").alias("as_of"), "*").select(*TRAINING_SET.columns)

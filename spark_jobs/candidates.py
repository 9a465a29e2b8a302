"""Candidate generation: which items each user's ranker gets to look at, from four sources.

- `als`: Spark MLlib ALS on implicit feedback (sum of the event contract's weights per user x item),
  top items by factor dot product, items the user already had left out.
- `covisit`: items that co-occur within one session and time window (`covisit_similar`, cosine of
  session counts), expanded from the user's most recent items.
- `popular`: trending popularity (event weights in a window, exponentially decayed), the fallback for
  users the other sources know little about.
- `ease`: EASE (Steck 2019), a closed-form linear item-to-item model: scores = X . B over the user's
  items, B from the item x item Gram matrix XtX (built by Spark, inverted with numpy on the driver).
  Only the `ease_max_items` most popular items get EASE columns (the inverse is cubic in items).
- pool scorers (not sources: feature_store.ranking.POOL_SCORERS): EASE at three regularisations and
  RP3beta score every candidate the four sources proposed (over the `pool_max_items` items with the most
  users), so the ranker sees each item-to-item view of the whole pool, not only of a source's own list.

Every function is a pure DataFrame transform with the cut-off `as_of` and its parameters as arguments:
the history it sees is `interactions` strictly before `as_of`. `spark_jobs.steps.data` (step
`candidates`) reads silver interactions, calls `build_candidates` for each cut-off and writes each source
to its own `gold/candidates` partition (as_of, source) plus `gold/item_similar`. `next_items` is
what candidates are supposed to find (their recall is spark_jobs.evaluation.candidate_pool_recall).

Why one module: the four sources share the history, seen-items and rank rules and `build_candidates`
composes them; split by source, each file would re-import the same half of this one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from feature_store.ranking import CANDIDATE_SOURCES, POOL_SCORERS
from feature_store.settings import CandidateSettings
from feature_store.tables import CANDIDATES, ITEM_SIMILAR
from spark_jobs.frames import union_all

ALS_SOURCE, COVISIT_SOURCE, POPULAR_SOURCE, EASE_SOURCE = CANDIDATE_SOURCES


@dataclass(frozen=True)
class CandidateParams:
    """Knobs of the four sources (from `Settings.candidates` via `from_settings`)."""

    sources: tuple[str, ...] = CANDIDATE_SOURCES  # the ones computed (an ablation may leave some out)
    per_source: int = 100
    als_rank: int = 32
    als_max_iter: int = 10
    als_reg_param: float = 0.05
    als_alpha: float = 10.0
    als_seed: int = 42
    covisit_window_minutes: int = 60
    covisit_max_span: int = 10
    covisit_neighbors: int = 50
    covisit_recent_items: int = 20
    popular_window_days: int = 30
    popular_half_life_days: float = 7.0
    ease_lambda: float = 500.0
    ease_max_items: int = 10_000
    pool_max_items: int = 5_000

    @classmethod
    def from_settings(cls, candidates: CandidateSettings, **overrides) -> CandidateParams:
        """The knobs as set (every one but ALS's has its name in CandidateSettings); ALS's start at the
        first value of their tuning grid (spark_jobs.als_tuning picks the best)."""
        values = {
            f.name: getattr(candidates, f.name)
            for f in fields(cls)
            if f.name in type(candidates).model_fields
        }
        values.update(
            als_rank=candidates.als_ranks[0],
            als_reg_param=candidates.als_reg_params[0],
            als_alpha=candidates.als_alphas[0],
            als_max_iter=candidates.als_max_iters[0],
        )
        values.update(overrides)
        return cls(**values)


def cutoff_timestamp(as_of: date) -> datetime:
    """00:00 UTC of `as_of`: the instant features and candidates of that date are computed at."""
    return datetime.combine(as_of, time(0), tzinfo=UTC)


def _ts_literal(moment: datetime) -> Column:
    return F.lit(moment.astimezone(UTC).replace(tzinfo=None)).cast("timestamp")


def history_before(interactions: DataFrame, as_of: date) -> DataFrame:
    """Interactions strictly before 00:00 UTC of `as_of`: everything a cut-off may see."""
    return interactions.where(F.col("ts") < _ts_literal(cutoff_timestamp(as_of)))


def interactions_between(interactions: DataFrame, start: date, end: date) -> DataFrame:
    """Interactions in [00:00 UTC of start, 00:00 UTC of end)."""
    return interactions.where(
        (F.col("ts") >= _ts_literal(cutoff_timestamp(start)))
        & (F.col("ts") < _ts_literal(cutoff_timestamp(end)))
    )


def active_users(interactions: DataFrame, as_of: date, days: int) -> DataFrame:
    """Users with an interaction in the `days` before `as_of` (the users batch candidates are made for)."""
    return (
        interactions_between(interactions, as_of - timedelta(days=days), as_of).select("user_id").distinct()
    )


def seen_items(history: DataFrame) -> DataFrame:
    """(user_id, item_id) of every item the user interacted with: never proposed to them again."""
    return history.select("user_id", "item_id").distinct()


def implicit_weights(history: DataFrame) -> DataFrame:
    """(user_id, item_id, weight): summed implicit-feedback weight, only pairs with a positive sum."""
    return (
        history.groupBy("user_id", "item_id").agg(F.sum("weight").alias("weight")).where(F.col("weight") > 0)
    )


def rank_top_n(scored: DataFrame, n: int, group: str = "user_id", item: str = "item_id") -> DataFrame:
    """Keep the n best-scored rows per group with rank 1..n (ties broken by item id, so reruns agree)."""
    order = Window.partitionBy(group).orderBy(F.col("score").desc(), F.col(item).asc())
    return scored.withColumn("rank", F.row_number().over(order)).where(F.col("rank") <= n)


def as_candidates(ranked: DataFrame, as_of: date, source: str) -> DataFrame:
    """A source's ranked (user_id, item_id, score, rank) in the `gold/candidates` column order."""
    return ranked.select(
        F.lit(as_of).cast("date").alias("as_of"),
        F.lit(source).alias("source"),
        "user_id",
        "item_id",
        F.col("score").cast("double").alias("score"),
        F.col("rank").cast("int").alias("rank"),
    ).select(*CANDIDATES.columns)


# -- popular ------------------------------------------------------------------------------------


def popularity(history: DataFrame, as_of: date, window_days: int, half_life_days: float) -> DataFrame:
    """(item_id, score): positive event weight in the `window_days` before `as_of`, each event decayed by
    0.5 ** (age in days / half-life), so rising items beat items that were big a month ago."""
    cutoff = _ts_literal(cutoff_timestamp(as_of))
    age_days = (F.unix_timestamp(cutoff) - F.unix_timestamp("ts")) / 86400.0
    recent = history.where(
        (F.col("ts") >= cutoff - F.expr(f"INTERVAL {int(window_days)} DAYS")) & (F.col("weight") > 0)
    )
    return recent.groupBy("item_id").agg(
        F.sum(F.col("weight") * F.pow(F.lit(0.5), age_days / F.lit(float(half_life_days)))).alias("score")
    )


def popular_candidates(popular: DataFrame, users: DataFrame, seen: DataFrame, n: int, pool: int) -> DataFrame:
    """Each user's n most popular unseen items from the `pool` most popular (a user who saw more than
    pool - n of them gets fewer)."""
    top = popular.orderBy(F.col("score").desc(), F.col("item_id").asc()).limit(pool)
    return rank_top_n(users.crossJoin(F.broadcast(top)).join(seen, ["user_id", "item_id"], "left_anti"), n)


# -- covisit ------------------------------------------------------------------------------------


def covisit_similar(history: DataFrame, window_minutes: int, max_span: int, neighbors: int) -> DataFrame:
    """(item_id, similar_item_id, score, rank): items seen together in a session at most `max_span`
    events and `window_minutes` apart. score = sessions with both / sqrt(sessions with each) (cosine)."""
    ordered = history.select("session_id", "item_id", "ts").withColumn(
        "pos", F.row_number().over(Window.partitionBy("session_id").orderBy("ts", "item_id"))
    )
    left = ordered.select(
        "session_id",
        F.col("item_id").alias("a"),
        F.col("ts").alias("ts_a"),
        F.explode(F.sequence(F.col("pos") + 1, F.col("pos") + max_span)).alias("pos"),
    )
    right = ordered.select("session_id", F.col("item_id").alias("b"), F.col("ts").alias("ts_b"), "pos")
    pairs = (
        left.join(right, ["session_id", "pos"])
        .where(
            (F.col("a") != F.col("b"))
            & (F.unix_timestamp("ts_b") - F.unix_timestamp("ts_a") <= window_minutes * 60)
        )
        .select("session_id", "a", "b")
    )
    both_ways = pairs.union(
        pairs.select("session_id", F.col("b").alias("a"), F.col("a").alias("b"))
    ).distinct()
    together = both_ways.groupBy("a", "b").agg(F.count("*").alias("both"))
    sessions_per_item = (
        history.select("session_id", "item_id").distinct().groupBy("item_id").agg(F.count("*").alias("n"))
    )
    na = sessions_per_item.select(F.col("item_id").alias("a"), F.col("n").alias("n_a"))
    nb = sessions_per_item.select(F.col("item_id").alias("b"), F.col("n").alias("n_b"))
    scored = (
        together.join(na, "a")
        .join(nb, "b")
        .select(
            F.col("a").alias("item_id"),
            F.col("b").alias("similar_item_id"),
            (F.col("both") / F.sqrt(F.col("n_a") * F.col("n_b"))).alias("score"),
        )
    )
    return rank_top_n(scored, neighbors, group="item_id", item="similar_item_id")


def as_item_similar(similar: DataFrame, as_of: date) -> DataFrame:
    """`covisit_similar` rows in the `gold/item_similar` column order."""
    return similar.select(
        F.lit(as_of).cast("date").alias("as_of"),
        "item_id",
        "similar_item_id",
        F.col("score").cast("double"),
        F.col("rank").cast("int"),
    ).select(*ITEM_SIMILAR.columns)


def recent_items(history: DataFrame, users: DataFrame, k: int) -> DataFrame:
    """(user_id, item_id, recency): each user's k most recently touched distinct items, 1 = latest."""
    last = history.join(users, "user_id").groupBy("user_id", "item_id").agg(F.max("ts").alias("last_ts"))
    order = Window.partitionBy("user_id").orderBy(F.col("last_ts").desc(), F.col("item_id").asc())
    return last.withColumn("recency", F.row_number().over(order)).where(F.col("recency") <= k).drop("last_ts")


def covisit_candidates(recent: DataFrame, similar: DataFrame, seen: DataFrame, n: int) -> DataFrame:
    """Each user's n unseen items with the highest summed similarity to their recent items."""
    expanded = recent.join(similar.select("item_id", "similar_item_id", "score"), "item_id").select(
        "user_id", F.col("similar_item_id").alias("item_id"), "score"
    )
    scored = expanded.groupBy("user_id", "item_id").agg(F.sum("score").alias("score"))
    return rank_top_n(scored.join(seen, ["user_id", "item_id"], "left_anti"), n)


# -- ALS ----------------------------------------------------------------------------------------


def index_ids(ids: DataFrame, column: str) -> DataFrame:
    """(column, idx): a dense int index per distinct id, in id order (ALS needs int ids)."""
    distinct = ids.select(column).distinct().orderBy(column)
    return (
        distinct.rdd.zipWithIndex()
        .map(lambda row_idx: (row_idx[0][0], int(row_idx[1])))
        .toDF(f"{column} string, idx int")
    )


def als_factors(weights: DataFrame, params: CandidateParams) -> tuple[DataFrame, DataFrame]:
    """Fit implicit ALS on (user_id, item_id, weight); returns (user_id, factors) and (item_id, factors)."""
    from pyspark.ml.recommendation import ALS

    users = index_ids(weights, "user_id")
    items = index_ids(weights, "item_id")
    indexed = (
        weights.join(users.withColumnRenamed("idx", "u"), "user_id")
        .join(items.withColumnRenamed("idx", "i"), "item_id")
        .select("u", "i", "weight")
    )
    blocks = max(2, weights.sparkSession.sparkContext.defaultParallelism)
    als = ALS(
        rank=params.als_rank,
        maxIter=params.als_max_iter,
        regParam=params.als_reg_param,
        implicitPrefs=True,
        alpha=params.als_alpha,
        userCol="u",
        itemCol="i",
        ratingCol="weight",
        seed=params.als_seed,
        nonnegative=False,
        coldStartStrategy="drop",
        numUserBlocks=blocks,
        numItemBlocks=blocks,
    )
    model = als.fit(indexed)
    user_factors = model.userFactors.join(users, F.col("id") == F.col("idx")).select(
        "user_id", F.col("features").alias("factors")
    )
    item_factors = model.itemFactors.join(items, F.col("id") == F.col("idx")).select(
        "item_id", F.col("features").alias("factors")
    )
    return user_factors, item_factors


def top_unseen(
    scores: np.ndarray, user_ids, seen_lists, item_ids: np.ndarray, position: Mapping[str, int], n: int
) -> pd.DataFrame:
    """(user_id, item_id, score, rank): per row of `scores` (users x items, changed in place), the n
    best items the user has not seen, ranked by score with ties by item id (the rule of rank_top_n)."""
    out_users, out_items, out_scores, out_ranks = [], [], [], []
    for row, (user_id, seen) in enumerate(zip(user_ids, seen_lists)):
        user_scores = scores[row]
        if seen is not None and len(seen):
            user_scores[[position[s] for s in seen if s in position]] = -np.inf
        take = min(n, int(np.isfinite(user_scores).sum()))
        if take == 0:
            continue
        top = np.argpartition(-user_scores, take - 1)[:take]
        top = sorted(top, key=lambda i: (-user_scores[i], item_ids[i]))
        out_users += [user_id] * take
        out_items += [item_ids[i] for i in top]
        out_scores += [float(user_scores[i]) for i in top]
        out_ranks += list(range(1, take + 1))
    return ranked_frame(out_users, out_items, out_scores, out_ranks)


def ranked_frame(users: list, items: list, scores: list, ranks: list) -> pd.DataFrame:
    """(user_id, item_id, score, rank) with the dtypes Arrow needs for the output schema even when
    empty (an untyped empty column is float64, which Arrow cannot turn into strings)."""
    return pd.DataFrame(
        {
            "user_id": pd.Series(users, dtype=object),
            "item_id": pd.Series(items, dtype=object),
            "score": pd.Series(scores, dtype=np.float64),  # NaN: null in Spark
            "rank": pd.Series(ranks, dtype=np.int32),
        }
    )


def top_items_by_factors(
    users: pd.DataFrame, item_ids: np.ndarray, item_matrix: np.ndarray, n: int
) -> pd.DataFrame:
    """For a batch of users (user_id, factors, seen), the n unseen items with the highest dot product.

    Pure numpy: one matrix product per batch, seen items masked, argpartition for the top n."""
    if len(users) == 0 or len(item_ids) == 0:
        return _empty_ranked()
    position = {item: i for i, item in enumerate(item_ids)}
    scores = np.vstack([np.asarray(f, dtype=np.float32) for f in users["factors"]]) @ item_matrix.T
    return top_unseen(scores, users["user_id"], users["seen"], item_ids, position, n)


def als_candidates(
    user_factors: DataFrame, item_factors: DataFrame, users: DataFrame, seen: DataFrame, n: int
) -> DataFrame:
    """Each user's n unseen items by ALS score. Item factors go to every task as one numpy matrix
    (items x rank float32: 1M items at rank 32 is 128 MB), users stream through in Arrow batches."""
    spark = user_factors.sparkSession
    items = item_factors.orderBy("item_id").collect()
    item_ids = np.array([r.item_id for r in items], dtype=object)
    matrix = np.array([r.factors for r in items], dtype=np.float32).reshape(len(items), -1)
    shared = spark.sparkContext.broadcast((item_ids, matrix))
    seen_lists = seen.groupBy("user_id").agg(F.collect_list("item_id").alias("seen"))
    batch = user_factors.join(users, "user_id").join(seen_lists, "user_id", "left")

    def score_batches(frames):
        ids, mat = shared.value
        for frame in frames:
            yield top_items_by_factors(frame, ids, mat, n)

    return batch.mapInPandas(score_batches, "user_id string, item_id string, score double, rank int")


# -- EASE ---------------------------------------------------------------------------------------


def ease_items(seen: DataFrame, max_items: int) -> DataFrame:
    """(item_id, idx): the `max_items` items with the most users (ties by item id), indexed 0.. in that
    order: the columns EASE is computed for. Items beyond the cap get no EASE scores."""
    counts = seen.groupBy("item_id").agg(F.count("*").alias("users"))
    order = Window.orderBy(F.col("users").desc(), F.col("item_id").asc())
    return (
        counts.withColumn("idx", F.row_number().over(order) - 1)
        .where(F.col("idx") < max_items)
        .select("item_id", F.col("idx").cast("int"))
    )


def gram_entries(seen: DataFrame, items: DataFrame, part: int = 0, parts: int = 1) -> DataFrame:
    """(i, j, users, weight) with i <= j: the upper triangle of XtX for the binary user x item matrix X
    over the indexed items (users who touched both), and the same sum with each user weighted by 1 / their
    number of indexed items (RP3beta's user step). Cost: the sum over users of their indexed items squared.
    With `parts` > 1, only the rows with i % parts == part: each part joins and aggregates its share alone."""
    indexed = (
        seen.join(F.broadcast(items), "item_id")
        .select("user_id", "idx")
        .withColumn("w", 1.0 / F.count("*").over(Window.partitionBy("user_id")))
    )
    left = indexed.select("user_id", F.col("idx").alias("i"), "w")
    if parts > 1:
        left = left.where(F.col("i") % parts == part)
    right = indexed.select("user_id", F.col("idx").alias("j"))
    return (
        left.join(right, "user_id")
        .where(F.col("i") <= F.col("j"))
        .groupBy("i", "j")
        .agg(F.count("*").alias("users"), F.sum("w").alias("weight"))
    )


def gram_matrix(entries: pd.DataFrame, size: int, column: str = "users") -> np.ndarray:
    """The dense symmetric (size x size) matrix of one column of upper-triangle entries (i, j, ...)."""
    gram = np.zeros((size, size), dtype=np.float64)
    i, j, v = entries["i"].to_numpy(), entries["j"].to_numpy(), entries[column].to_numpy(dtype=np.float64)
    gram[i, j] = v
    gram[j, i] = v
    return gram


def ease_weights(gram: np.ndarray, lam: float) -> np.ndarray:
    """EASE's item x item weights: P = (G + lam I)^-1, B = I - P diag(1 / diag(P)), so B[i, j] =
    -P[i, j] / P[j, j] off the diagonal and 0 on it (an item never recommends itself)."""
    precision = np.linalg.inv(gram + lam * np.eye(len(gram)))
    weights = -precision / np.diag(precision)[np.newaxis, :]
    np.fill_diagonal(weights, 0.0)
    return weights


def ease_scores(seen_lists, position: Mapping[str, int], weights: np.ndarray) -> np.ndarray:
    """(users x indexed items) EASE scores: for each user, the sum of B's rows of their indexed items."""
    history = np.zeros((len(seen_lists), weights.shape[0]), dtype=np.float32)
    for row, seen in enumerate(seen_lists):
        history[row, [position[s] for s in seen if s in position]] = 1.0
    return history @ weights


def top_items_by_ease(
    users: pd.DataFrame, item_ids: np.ndarray, weights: np.ndarray, n: int, chunk: int = 256
) -> pd.DataFrame:
    """For a batch of users (user_id, seen), the n unseen items with the highest positive EASE score
    (sum of B's rows of the user's indexed items), `chunk` users per matrix product."""
    position = {item: i for i, item in enumerate(item_ids)}
    frames = []
    for start in range(0, len(users), chunk):
        part = users.iloc[start : start + chunk]
        scores = ease_scores(part["seen"], position, weights)
        scores[scores <= 0] = -np.inf  # no evidence for the item: EASE does not propose it
        frames.append(top_unseen(scores, part["user_id"], part["seen"], item_ids, position, n))
    return pd.concat(frames, ignore_index=True) if frames else _empty_ranked()


def rp3beta_weights(weighted_gram: np.ndarray, item_users: np.ndarray, beta: float) -> np.ndarray:
    """RP3beta's item x item weights (Paudel et al. 2017): the probability of the walk item i -> a user
    who touched it -> an item j of that user, W[i, j] = sum over users u of X[u, i] X[u, j] / (deg(i)
    deg(u)), divided by deg(j)^beta so popular items do not win every walk; 0 on the diagonal.
    `weighted_gram` is XtX with each user weighted 1 / deg(u), `item_users` deg(i)."""
    degrees = np.maximum(item_users.astype(np.float64), 1.0)
    weights = weighted_gram / degrees[:, np.newaxis] / np.power(degrees, beta)[np.newaxis, :]
    np.fill_diagonal(weights, 0.0)
    return weights


def pool_scores_by(
    users: pd.DataFrame, item_ids: np.ndarray, weights: Mapping[str, np.ndarray]
) -> pd.DataFrame:
    """For a batch of users (user_id, seen, pool), every indexed item of the user's candidate `pool`
    scored by each item-item model in `weights` (score = the sum of its column over the user's indexed
    items): (source = the model, user_id, item_id, score = the score / the user's best in the pool, NaN
    when that best is not positive, rank in the pool by score, ties by item id)."""
    position = {item: i for i, item in enumerate(item_ids)}
    out: dict[str, list] = {"source": [], "user_id": [], "item_id": [], "score": [], "rank": []}
    for user_id, seen, pool in zip(users["user_id"], users["seen"], users["pool"]):
        rows = [position[s] for s in seen if s in position]
        pooled = sorted(i for i in set(pool) if i in position)
        if not rows or not pooled:
            continue
        columns = [position[i] for i in pooled]
        for name, matrix in weights.items():
            scores = matrix[np.ix_(rows, columns)].sum(axis=0, dtype=np.float64)
            order = np.argsort(-scores, kind="stable")  # pooled is sorted: ties stay in item-id order
            best = scores[order[0]]
            out["source"] += [name] * len(order)
            out["user_id"] += [user_id] * len(order)
            out["item_id"] += [pooled[k] for k in order]
            out["score"] += (scores[order] / best).tolist() if best > 0 else [np.nan] * len(order)
            out["rank"] += list(range(1, len(order) + 1))
    frame = ranked_frame(out["user_id"], out["item_id"], out["score"], out["rank"])
    return frame.assign(source=pd.Series(out["source"], dtype=object))


def _empty_ranked() -> pd.DataFrame:
    return ranked_frame([], [], [], [])


@dataclass(frozen=True)
class ItemItemModel:
    """Item-to-item weights fitted on one history: the indexed items, and (item ids, weights) shared with
    every task (EASE's matrix, or the pool scorers' {scorer: matrix})."""

    indexed: DataFrame  # item_id, idx
    shared: Any  # Spark broadcast of (item_ids, float32 weights or {scorer: float32 weights})


@dataclass(frozen=True)
class ItemGram:
    """XtX over the items with the most users (`ease_items` order), collected to the driver once for
    every item-to-item model: EASE and the pool scorers each take its first items (the same order)."""

    item_ids: np.ndarray  # idx -> item_id
    entries: pd.DataFrame  # gram_entries: i, j, users, weight (each user 1 / their indexed items)

    def head(self, size: int) -> tuple[np.ndarray, pd.DataFrame]:
        """The first `size` items and the entries among them."""
        entries = self.entries
        return self.item_ids[:size], entries[(entries["i"] < size) & (entries["j"] < size)]


# Gram entries brought to the driver per collect (~100 MB of Arrow in its heap): a whole Gram matrix in
# one collect, beside what a run has cached, ran the default 2 GB driver out of memory on ml-latest-small.
GRAM_PAIRS_PER_COLLECT = 4_000_000


def item_gram(seen: DataFrame, max_items: int, pairs_per_collect: int = GRAM_PAIRS_PER_COLLECT) -> ItemGram:
    """The Gram entries of the `max_items` items with the most users (one Spark self-join, in as many
    parts as the user-item pairs it joins need at `pairs_per_collect` a part)."""
    items = ease_items(seen, max_items).orderBy("idx").toPandas()
    if not len(items):
        return ItemGram(
            np.array([], dtype=object), pd.DataFrame({"i": [], "j": [], "users": [], "weight": []})
        )
    item_ids = items["item_id"].to_numpy(dtype=object)
    indexed = F.broadcast(_indexed(seen.sparkSession, item_ids))
    # an upper bound of the entries: each user's pairs of indexed items, before the sum over users
    pairs = (
        seen.join(indexed, "item_id")
        .groupBy("user_id")
        .agg(F.count("*").alias("n"))
        .agg(F.sum(F.col("n") * (F.col("n") + 1) / 2))
        .first()[0]
    )
    parts = max(1, -(-int(pairs or 0) // pairs_per_collect))
    frames = [gram_entries(seen, indexed, part, parts).toPandas() for part in range(parts)]
    return ItemGram(item_ids, frames[0] if parts == 1 else pd.concat(frames, ignore_index=True))


def _indexed(spark, item_ids: np.ndarray) -> DataFrame:
    return spark.createDataFrame(
        pd.DataFrame({"item_id": item_ids, "idx": np.arange(len(item_ids), dtype=np.int32)}),
        "item_id string, idx int",
    )


def fit_ease(seen: DataFrame, gram: ItemGram, lam: float, max_items: int) -> ItemItemModel:
    """EASE's weights over the `max_items` items with the most users. The weights (items x items
    float32: 400 MB at the default cap of 10,000) go to every task as one matrix; building them needs
    about 3 x 8 x items^2 bytes on the driver (2.4 GB at the cap)."""
    item_ids, entries = gram.head(max_items)
    weights = (
        ease_weights(gram_matrix(entries, len(item_ids)), lam).astype(np.float32)
        if len(item_ids)
        else np.zeros((0, 0), dtype=np.float32)
    )
    spark = seen.sparkSession
    return ItemItemModel(_indexed(spark, item_ids), spark.sparkContext.broadcast((item_ids, weights)))


def _with_indexed_history(seen: DataFrame, users: DataFrame, model: ItemItemModel) -> DataFrame:
    """(user_id, seen) of `users` with at least one indexed item."""
    known = seen.join(F.broadcast(model.indexed), "item_id", "left_semi").select("user_id").distinct()
    seen_lists = seen.groupBy("user_id").agg(F.collect_list("item_id").alias("seen"))
    return seen_lists.join(users, "user_id").join(known, "user_id", "left_semi")


def ease_candidates(seen: DataFrame, users: DataFrame, n: int, model: ItemItemModel) -> DataFrame:
    """Each user's n unseen items by EASE score, for users with at least one indexed item."""
    shared = model.shared

    def score_batches(frames):
        ids, mat = shared.value
        for frame in frames:
            yield top_items_by_ease(frame, ids, mat, n)

    return _with_indexed_history(seen, users, model).mapInPandas(
        score_batches, "user_id string, item_id string, score double, rank int"
    )


# Each pool scorer (feature_store.ranking.POOL_SCORERS): EASE's L2 regularisation, or RP3beta's
# popularity exponent beta. The offline study (benchmarks/REPORT.md, issue 18) measured these four.
POOL_EASE_LAMBDAS: Mapping[str, float] = {"ease100": 100.0, "ease500": 500.0, "ease2000": 2000.0}
POOL_RP3BETA = ("rp3beta", 0.5)
assert (*POOL_EASE_LAMBDAS, POOL_RP3BETA[0]) == POOL_SCORERS


def fit_pool_scorers(seen: DataFrame, gram: ItemGram, max_items: int) -> ItemItemModel:
    """Every pool scorer's weights over the `max_items` items with the most users, shared with every
    task as one {scorer: float32 matrix} (16 x items^2 bytes: 400 MB at the default cap of 5,000)."""
    item_ids, entries = gram.head(max_items)
    weights: dict[str, np.ndarray] = {}
    if len(item_ids):
        counts = gram_matrix(entries, len(item_ids))
        for name, lam in POOL_EASE_LAMBDAS.items():
            weights[name] = ease_weights(counts, lam).astype(np.float32)
        name, beta = POOL_RP3BETA
        by_user = gram_matrix(entries, len(item_ids), column="weight")
        weights[name] = rp3beta_weights(by_user, np.diag(counts), beta).astype(np.float32)
    spark = seen.sparkSession
    return ItemItemModel(_indexed(spark, item_ids), spark.sparkContext.broadcast((item_ids, weights)))


def pool_scores(seen: DataFrame, pool: DataFrame, model: ItemItemModel) -> DataFrame:
    """(source, user_id, item_id, score, rank): each pool scorer's view of every (user_id, item_id) of
    `pool` whose item it indexes (pool_scores_by)."""
    shared = model.shared
    pools = pool.groupBy("user_id").agg(F.collect_set("item_id").alias("pool"))
    batch = _with_indexed_history(seen, pools.select("user_id"), model).join(pools, "user_id")

    def score_batches(frames):
        ids, weights = shared.value
        for frame in frames:
            yield pool_scores_by(frame, ids, weights)

    return batch.mapInPandas(
        score_batches, "source string, user_id string, item_id string, score double, rank int"
    )


# -- all sources --------------------------------------------------------------------------------


def build_candidates(
    interactions: DataFrame, users: DataFrame, as_of: date, params: CandidateParams
) -> tuple[dict[str, DataFrame], DataFrame]:
    """Candidates of every source for `users` at cut-off `as_of` (only interactions before it are read),
    each in `gold/candidates` shape, plus the co-visitation neighbours (`gold/item_similar` shape)."""
    history = history_before(interactions, as_of)
    # seen and similar feed several sources and writes: compute each once
    seen = seen_items(history).cache()
    n = params.per_source
    similar = covisit_similar(
        history, params.covisit_window_minutes, params.covisit_max_span, params.covisit_neighbors
    ).cache()
    # one Gram matrix for EASE and the pool scorers (each takes its most popular items)
    gram = item_gram(seen, max(params.ease_max_items, params.pool_max_items))
    ease = (
        fit_ease(seen, gram, params.ease_lambda, params.ease_max_items)
        if EASE_SOURCE in params.sources
        else None
    )

    def als() -> DataFrame:
        return als_candidates(*als_factors(implicit_weights(history), params), users, seen, n)

    def covisit() -> DataFrame:
        return covisit_candidates(recent_items(history, users, params.covisit_recent_items), similar, seen, n)

    def popular() -> DataFrame:
        scores = popularity(history, as_of, params.popular_window_days, params.popular_half_life_days)
        return popular_candidates(scores, users, seen, n, pool=n + 4 * n)

    def ease_source() -> DataFrame:
        return ease_candidates(seen, users, n, ease)

    build = {ALS_SOURCE: als, COVISIT_SOURCE: covisit, POPULAR_SOURCE: popular, EASE_SOURCE: ease_source}
    sources = {source: build[source]() for source in params.sources}
    # Computed once, lineage cut: the pool scorers read all four sources, and a plan holding their
    # lineage a second time outgrew the driver's heap on ml-latest-small (the plan's text alone).
    proposed = union_all(as_candidates(df, as_of, s) for s, df in sources.items()).localCheckpoint()
    scorers = fit_pool_scorers(seen, gram, params.pool_max_items)
    scored = pool_scores(seen, proposed.select("user_id", "item_id"), scorers).localCheckpoint()
    # both are materialised: the weights need not stay in every Python worker for the next cut-off
    if ease is not None:
        ease.shared.destroy()
    scorers.shared.destroy()
    out = {s: proposed.where(F.col("source") == s) for s in sources}
    for scorer in POOL_SCORERS:
        out[scorer] = as_candidates(scored.where(F.col("source") == scorer).drop("source"), as_of, scorer)
    return out, as_item_similar(similar, as_of)


# -- recall -------------------------------------------------------------------------------------


def next_items(interactions: DataFrame, as_of: date, horizon_days: int) -> DataFrame:
    """(user_id, item_id) the user positively interacted with in [as_of, as_of + horizon) and had not
    touched before as_of: what candidates are supposed to find."""
    future = interactions_between(interactions, as_of, as_of + timedelta(days=horizon_days)).where(
        F.col("label") == 1
    )
    return (
        future.select("user_id", "item_id")
        .distinct()
        .join(seen_items(history_before(interactions, as_of)), ["user_id", "item_id"], "left_anti")
    )

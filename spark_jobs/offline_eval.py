"""Offline evaluation of the batch models on any ratings file (`lambdarec evaluate`), the way lambdarec
is compared with published recommenders on public data sets.

Protocol (documented in the README; keep the two identical):
1. Ratings `user_id,item_id,rating,timestamp` (timestamp in epoch seconds or ISO-8601) are split into
   train and test: `time` = ratings up to and including the `ratio` quantile of all timestamps train,
   the rest test (one global cut-off); `stratified-user` / `stratified-item` = within each user's (item's) ratings, a
   seeded random `ratio` share is train (at least one rating per user/item stays in train). Or the
   caller gives `--train` and `--test` files split elsewhere.
2. The batch models are built from the train part only, as if it were all history before a cut-off C
   (00:00 UTC after the last train rating): ratings become `rating` events of the event contract
   (weight = rating - threshold + 1, at least 0), silver interactions and gold features as of C,
   candidates of every source (ALS, co-visitation, popularity over the whole train part) for every
   test user.
3. The rankers learn from an inner split of the train part made the same way (same ratio, seed + 1):
   candidates and features from the inner train, labels from the inner test (relevance 1 for any
   rating, as in step 4). They are then applied to the candidates and features of C.
4. Each model ranks for each test user; items the user had in train are never ranked. Relevance = any
   held-out (test) rating of an item the user did not have in train. Metrics@k (NDCG, MAP, precision,
   recall, HR, MRR; spark_jobs.metrics) are means over test users with at least one relevant item;
   coverage = distinct items in those users' top k / items in the train part. The same metrics are
   also given over warm test users only (`warm_models`: users with at least one train rating), since
   ALS and co-visitation cannot answer for users the train part never saw.
   With `--train/--test` the inner split of step 3 is a `time` split.
Models: `popularity`, `als`, `covisit`, `ease` (each source alone; ALS's knobs tuned on the history,
spark_jobs.als_tuning, the grid's table under `als_tuning`), `xgboost`, `lightgbm`, `blend`
(reciprocal-rank fusion of the two rankers). Candidate recall@50/100/200 of each source and of their
union (spark_jobs.metrics.candidate_recall, mean over test users with relevant items) says how much
of the test part the rankers could find at all.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import date, timedelta
from typing import Literal

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from feature_store.ranking import POOL_SCORERS
from feature_store.settings import Settings
from spark_jobs.candidates import CandidateParams

Split = Literal["time", "stratified-user", "stratified-item"]
SPLITS: tuple[str, ...] = ("time", "stratified-user", "stratified-item")


class RatingsFileError(ValueError):
    """A ratings or items file is not in the expected format (the message says what was expected)."""


def read_ratings(spark: SparkSession, path: str) -> DataFrame:
    """(user_id, item_id, rating, ts) from a CSV with header user_id,item_id,rating,timestamp."""
    raw = spark.read.option("header", True).csv(path)
    expected = ["user_id", "item_id", "rating", "timestamp"]
    missing = [c for c in expected if c not in raw.columns]
    if missing:
        raise RatingsFileError(
            f"{path}: header must contain {','.join(expected)}; missing {missing} (found {raw.columns})"
        )
    numeric = F.col("timestamp").rlike(r"^\d+(\.\d+)?$")
    ts = F.when(numeric, F.timestamp_seconds(F.col("timestamp").cast("double"))).otherwise(
        F.to_timestamp("timestamp")
    )
    return raw.select(
        F.col("user_id").cast("string"),
        F.col("item_id").cast("string"),
        F.col("rating").cast("double"),
        ts.alias("ts"),
    ).where(F.col("user_id").isNotNull() & F.col("item_id").isNotNull() & F.col("ts").isNotNull())


def read_items(spark: SparkSession, path: str) -> DataFrame:
    """The catalog (bronze/items shape) from a CSV item_id,title,genres (genres `A|B|C`; first = category)."""
    raw = spark.read.option("header", True).option("quote", '"').option("escape", '"').csv(path)
    if not {"item_id", "genres"} <= set(raw.columns):
        raise RatingsFileError(f"{path}: header must contain item_id,title,genres (found {raw.columns})")
    genres = F.split(F.coalesce(F.col("genres"), F.lit("unknown")), r"\|")
    return raw.select(
        F.col("item_id").cast("string"),
        genres[0].alias("category"),
        genres.alias("categories"),
        F.col("title") if "title" in raw.columns else F.lit(None).cast("string").alias("title"),
        F.create_map().cast("map<string,string>").alias("attributes"),
        F.lit(None).cast("timestamp").alias("created_at"),
    )


def split_ratings(ratings: DataFrame, method: Split, ratio: float, seed: int) -> tuple[DataFrame, DataFrame]:
    """(train, test) by `method` (see the module docstring)."""
    if not 0 < ratio < 1:
        raise ValueError(f"ratio {ratio} must be strictly between 0 and 1")
    if method == "time":
        cutoff = ratings.select(F.percentile_approx(F.unix_micros("ts"), ratio, 100_000).alias("c")).first()[
            "c"
        ]
        is_train = F.unix_micros("ts") <= F.lit(cutoff)
        return ratings.where(is_train), ratings.where(~is_train)
    if method not in ("stratified-user", "stratified-item"):
        raise ValueError(f"unknown split {method!r}; one of {', '.join(SPLITS)}")
    key = "user_id" if method == "stratified-user" else "item_id"
    shuffled = Window.partitionBy(key).orderBy(F.xxhash64(F.lit(seed), "user_id", "item_id", "ts"))
    numbered = ratings.withColumn("_n", F.row_number().over(shuffled)).withColumn(
        "_total", F.count("*").over(Window.partitionBy(key))
    )
    # at least one rating of each user (item) in train; round half up like recommenders' splitters
    in_train = F.col("_n") <= F.greatest(F.lit(1), F.floor(F.col("_total") * F.lit(ratio) + F.lit(0.5)))
    return numbered.where(in_train).drop("_n", "_total"), numbered.where(~in_train).drop("_n", "_total")


def cutoff_after(ratings: DataFrame) -> date:
    """00:00 UTC of the day after the last rating: every rating is strictly before it."""
    last = ratings.agg(F.max("ts")).first()[0]
    return (last.date() if last else date(1970, 1, 1)) + timedelta(days=1)


def as_bronze_events(ratings: DataFrame, source: str) -> DataFrame:
    """Ratings as bronze `rating` events (the event contract's explicit type, value = rating)."""
    event_id = F.concat_ws(":", F.lit(source), "user_id", "item_id", F.unix_micros("ts").cast("string"))
    return ratings.select(
        event_id.alias("event_id"),
        "user_id",
        "item_id",
        F.lit("rating").alias("event_type"),
        "ts",
        F.col("rating").alias("value"),
        F.create_map().cast("map<string,string>").alias("context"),
        F.lit(source).alias("source"),
        F.col("ts").alias("ingest_time"),
        F.to_date("ts").alias("event_date"),
    )


def silver(ratings: DataFrame, settings: Settings) -> DataFrame:
    """Silver interactions of ratings, through the data layer's own cleaning/labelling/sessions."""
    from spark_jobs.interactions import build_interactions

    events = as_bronze_events(ratings, "offline-eval")
    first, end = events.agg(F.min("event_date"), F.max("event_date")).first()
    return build_interactions(
        events,
        first,
        end + timedelta(days=1),
        positive_rating_threshold=settings.batch.positive_rating_threshold,
        session_gap=settings.batch.session_gap,
    )


def any_rating_labels(ratings_silver: DataFrame) -> DataFrame:
    """(user_id, item_id, relevance 1.0) for every rated item: the labels mean what the test part's
    relevance means (any rating), since grading liked ratings higher taught the rankers another task
    than the one they are scored on (benchmarks/REPORT.md, issue 18)."""
    return ratings_silver.select("user_id", "item_id").distinct().withColumn("relevance", F.lit(1.0))


def held_out_relevance(held_out: DataFrame, history: DataFrame) -> DataFrame:
    """`any_rating_labels` of the held-out ratings whose item the user did not have in the history: the
    outer test's relevance and the inner split's labels alike."""
    seen = history.select("user_id", "item_id").distinct()
    return any_rating_labels(held_out).join(seen, ["user_id", "item_id"], "left_anti")


@dataclass
class BuiltModels:
    """Candidates and ranker inputs for a history (train part) at its cut-off."""

    cutoff: date
    candidates: DataFrame
    inputs: DataFrame
    items: int
    features: tuple[DataFrame, ...] = ()  # the cached user and item features the inputs were joined from

    def release(self) -> None:
        """Unpersist everything cached for it, so the next history's build has the memory."""
        for frame in (self.candidates, self.inputs, *self.features):
            frame.unpersist()


def build_for_history(
    history: DataFrame, users: DataFrame, items: DataFrame | None, settings: Settings, params: CandidateParams
) -> BuiltModels:
    """Candidates (with the sources' knobs `params`, a CandidateParams) and ranker inputs for `users`."""
    from spark_jobs.candidates import build_candidates
    from spark_jobs.features import build_item_features, build_user_features
    from spark_jobs.frames import union_all
    from spark_jobs.training_set import ranker_inputs

    cutoff = cutoff_after(history)
    first = history.agg(F.min("ts")).first()[0]
    span_days = (cutoff - first.date()).days + 1 if first else 1
    # popularity over the whole history, undecayed: the classic "most popular" baseline
    params = replace(params, popular_window_days=span_days, popular_half_life_days=1e9)
    sources, _ = build_candidates(history, users, cutoff, params)
    candidates = union_all(list(sources.values())).cache()
    windows = tuple(settings.batch.feature_windows_days)
    end = cutoff + timedelta(days=1)
    user_features = build_user_features(history, items, cutoff, end, windows=windows).cache()
    item_features = build_item_features(history, items, cutoff, end, windows=windows).cache()
    inputs = ranker_inputs(candidates, user_features, item_features, cutoff).cache()
    return BuiltModels(
        cutoff,
        candidates,
        inputs,
        history.select("item_id").distinct().count(),
        (user_features, item_features),
    )


# each candidate source alone, under the name the evaluation reports it by
# and each pool scorer's ranking of the whole pool (the strongest item-to-item views, for a fair bar)
SOURCE_MODELS: dict[str, str] = {
    "popular": "popularity",
    "als": "als",
    "covisit": "covisit",
    "ease": "ease",
    **{scorer: f"{scorer}_pool" for scorer in POOL_SCORERS},
}


def evaluate_split(
    spark: SparkSession,
    settings: Settings,
    train: DataFrame,
    test: DataFrame,
    split: Split | None,
    ratio: float,
    seed: int,
    k: int,
    items: DataFrame | None = None,
    progress=lambda message: None,
    write_predictions: Callable[[DataFrame], None] | None = None,
) -> dict:
    """Every model's metrics@k for one train/test split (see the module docstring), and the candidate
    recall of each source and their union. `write_predictions`, when given, receives every model's top
    k per test user (`predictions`)."""
    from spark_jobs.als_tuning import AlsGrid, tune_als
    from spark_jobs.evaluation import Holdout, candidate_pool_recall, holdout_rankings, ranking_metrics
    from spark_jobs.rankers.common import RankerParams
    from spark_jobs.rankers.lightgbm_ranker import train_lightgbm
    from spark_jobs.rankers.xgboost_ranker import train_xgboost
    from spark_jobs.scoring import NativeModel
    from spark_jobs.training_set import at, training_examples

    train_silver = silver(train, settings).cache()
    test_users = test.select("user_id").distinct()
    relevance = held_out_relevance(test, train).cache()

    # ALS's knobs are tuned once, on the train part, and used for the inner split too
    progress("tuning ALS on the train part")
    sources_params, als_tuning = tune_als(
        train_silver,
        CandidateParams.from_settings(settings.candidates),
        AlsGrid.from_settings(settings.candidates),
        settings.candidates.als_validation_share,
        settings.candidates.als_tune_metric,
    )
    progress("inner split for ranker labels")
    inner_train, inner_test = split_ratings(train, split or "time", ratio, seed + 1)
    inner_history = silver(inner_train, settings).cache()
    inner_labels = held_out_relevance(inner_test, inner_train)
    inner = build_for_history(
        inner_history, inner_test.select("user_id").distinct(), items, settings, sources_params
    )
    examples = training_examples(
        inner.inputs, inner_labels, settings.batch.max_negatives_per_query, seed
    ).cache()
    params = RankerParams.from_settings(settings.ranker, seed=seed)
    progress("training xgboost")
    rankers = {"xgboost": train_xgboost(examples, params)}
    progress("training lightgbm")
    rankers["lightgbm"] = train_lightgbm(examples, params)
    # the inner split is done with: its caches would crowd the outer build (the Gram matrix needs memory)
    example_count = examples.count()
    inner.release()
    examples.unpersist()
    inner_history.unpersist()

    progress("candidates and features of the train part")
    outer = build_for_history(train_silver, test_users, items, settings, sources_params)
    catalog = outer.items
    progress("ranking")
    holdout = Holdout(outer.cutoff, outer.candidates, outer.inputs, relevance, catalog, k)
    models = {label: NativeModel(ranker.kind, ranker.native_bytes()) for label, ranker in rankers.items()}
    baselines = tuple(label for label in SOURCE_MODELS if label in (*sources_params.sources, *POOL_SCORERS))
    by_source = holdout_rankings(holdout, models, baselines, blend=tuple(models))
    rankings = {SOURCE_MODELS.get(label, label): ranked for label, ranked in by_source.items()}
    if write_predictions is not None:
        progress("writing predictions")
        write_predictions(predictions(rankings))
    results = {label: ranking_metrics(ranked, relevance, k, catalog) for label, ranked in rankings.items()}
    progress("candidate recall")
    recall = candidate_pool_recall(at(outer.candidates, outer.cutoff), relevance, sources_params.sources)
    # ALS and co-visitation know nothing of users without train history (on a time split most test
    # users are new): the warm-user view compares the sources where each of them can answer
    warm = train.select("user_id").distinct()
    warm_relevance = warm_only(relevance, warm).cache()
    warm_results = {
        label: ranking_metrics(warm_only(ranked, warm), warm_relevance, k, catalog)
        for label, ranked in rankings.items()
    }
    counts = {
        "train_ratings": train.count(),
        "test_ratings": test.count(),
        "test_users_with_relevant_items": int(results["xgboost"]["users"]),
        "warm_test_users_with_relevant_items": int(warm_results["xgboost"]["users"]),
        "training_examples": example_count,
        "train_items": catalog,
    }
    return {
        "k": k,
        "split": split or "given",
        "ratio": ratio if split else None,
        "seed": seed,
        "cutoff": str(outer.cutoff),
        "counts": counts,
        "models": results,
        "warm_models": warm_results,
        "als_tuning": als_tuning,
        "candidate_recall": recall,
    }


PREDICTION_COLUMNS: tuple[str, ...] = ("model", "user_id", "item_id", "rank", "score")


def predictions(rankings: Mapping[str, DataFrame]) -> DataFrame:
    """(model, user_id, item_id, rank, score): every model's ranking rows, the file an outside scorer
    recomputes the metrics from (`lambdarec evaluate --predictions`)."""
    from spark_jobs.frames import union_all

    return union_all(
        ranked.select(
            F.lit(label).alias("model"),
            "user_id",
            "item_id",
            F.col("rank").cast("int"),
            F.col("score").cast("double"),
        )
        for label, ranked in rankings.items()
    )


def warm_only(per_user: DataFrame, warm_users: DataFrame) -> DataFrame:
    """Rows of `per_user` whose user is in `warm_users` (users with train history)."""
    return per_user.join(warm_users.select("user_id"), "user_id", "left_semi")

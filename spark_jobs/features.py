"""Gold user and item features, point-in-time correct, for every as_of date of a `[start, end)` window.

A row for `as_of` describes its user or item as of 00:00 UTC of that date, from silver interactions
strictly before it (an event at exactly 00:00 of `as_of` belongs to `as_of` and is left out). Since the
cut-off is a date boundary, every feature is computed from per-day aggregates: each day's aggregate is
exploded to the as_of dates it is visible to (`as_of` in [day + 1, end)) and summed by age, so one pass
serves a whole backfill window. Days older than the longest window are folded into one row per
entity first (they only feed lifetime features), which bounds the explode.

The feature names and meanings are feature_store.features (USER_FEATURES / ITEM_FEATURES); the ranker's
subset is feature_store.ranking. Besides the `features` map, users get `category_affinity` (each
category's share of the user's positive implicit weight, with weights decayed by a 14-day half-life so
drifting tastes show) and `genre_profile` (feature_store.genres: each genre's share of the whole
history's weight), items their catalog `category` ("unknown" when the catalog lacks the item) and
`genres`.

`run_features(spark, settings, start, end)` is the thin step behind `lambdarec batch features`: it brings
silver up to date for the dates the window needs, then overwrites exactly the window's as_of partitions
of both gold tables (replaceWhere), so reruns and backfills are idempotent.

Why one module: the user and item tables share the per-day aggregation, the as_of explode and the
window rules; split apart, the one point-in-time rule would be written twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from feature_store.events import EventTypes
from feature_store.features import item_features, user_features
from feature_store.settings import Settings
from feature_store.tables import BRONZE_EVENTS, INTERACTIONS, ITEM_FEATURES, ITEMS, USER_FEATURES

AFFINITY_HALF_LIFE_DAYS = 14.0
DISTINCT_WINDOW_DAYS = 30  # user_distinct_items_30d and the 30-day item rates are fixed at 30 days
FUNNEL = ("view", "click", "add_to_cart", "purchase")
UNKNOWN_CATEGORY = "unknown"


@dataclass(frozen=True)
class FeaturesReport:
    start: str
    end: str
    silver_window: tuple[str, str] | None  # event dates of silver rebuilt first (None: nothing to do)
    silver_rows: int
    user_rows: int
    item_rows: int
    tables: dict[str, str] = field(default_factory=dict)


# -- date-granular helpers ------------------------------------------------------------------------


def _last_as_of(end: date) -> date:
    return end - timedelta(days=1)


def explode_as_of(df: DataFrame, start: date, end: date, max_age: int | None = None) -> DataFrame:
    """Each row (with `event_date`) once per as_of in [start, end) that sees it: event_date < as_of,
    and as_of - event_date <= max_age when given. Adds `as_of` and `age` (days)."""
    first = F.greatest(F.date_add("event_date", 1), F.lit(start))
    last = (
        F.lit(_last_as_of(end))
        if max_age is None
        else F.least(F.date_add("event_date", max_age), F.lit(_last_as_of(end)))
    )
    return (
        df.where(first <= last)
        .withColumn("as_of", F.explode(F.sequence(first, last, F.expr("INTERVAL 1 DAY"))))
        .withColumn("age", F.datediff("as_of", "event_date"))
    )


def fold_old_days(
    daily: DataFrame,
    keys: Sequence[str],
    start: date,
    lookback_days: int,
    sums: Sequence[str],
    maxes=(),
    mins=(),
) -> DataFrame:
    """Days older than `start - lookback_days` folded into one row per key (dated the day before that
    cut-off, so it is older than every window and only feeds lifetime sums), plus the recent days as-is."""
    cutoff = start - timedelta(days=lookback_days)
    recent = daily.where(F.col("event_date") >= F.lit(cutoff))
    old = (
        daily.where(F.col("event_date") < F.lit(cutoff))
        .groupBy(*keys)
        .agg(
            *[F.sum(c).alias(c) for c in sums],
            *[F.max(c).alias(c) for c in maxes],
            *[F.min(c).alias(c) for c in mins],
        )
        .withColumn("event_date", F.lit(cutoff - timedelta(days=1)))
    )
    return recent.unionByName(old)


def _ratio(numerator: Column, denominator: Column) -> Column:
    return F.when(denominator > 0, numerator / denominator).otherwise(F.lit(0.0))


def _in_window(days: int, value: Column | str) -> Column:
    value = F.col(value) if isinstance(value, str) else value
    return F.coalesce(F.sum(F.when(F.col("age") <= days, value)), F.lit(0)).cast("double")


def _seconds_to_as_of(ts: Column) -> Column:
    return (F.unix_micros(F.to_timestamp(F.col("as_of"))) - F.unix_micros(ts)) / F.lit(1e6)


def _features_map(columns: dict[str, Column], names: Sequence[str]) -> Column:
    if set(columns) != set(names):
        raise RuntimeError(
            f"computed features differ from feature_store.features: {sorted(set(columns) ^ set(names))}"
        )
    return F.create_map(*[x for name in names for x in (F.lit(name), columns[name].cast("double"))])


def _lookback(windows: Sequence[int]) -> int:
    return max([*windows, DISTINCT_WINDOW_DAYS, 7])


# -- users ------------------------------------------------------------------------------------------


def build_user_features(
    interactions: DataFrame,
    items: DataFrame | None,
    start: date,
    end: date,
    *,
    event_types: EventTypes | None = None,
    windows: Sequence[int] = (1, 7, 30),
) -> DataFrame:
    """USER_FEATURES rows for as_of in [start, end) from silver interactions (any dates; only those
    before each as_of count) and the catalog (for categories)."""
    types = event_types or EventTypes()
    names = tuple(f.name for f in user_features(types, tuple(windows)))
    lookback = _lookback(windows)
    history = interactions.where(F.col("event_date") < F.lit(_last_as_of(end)))

    type_cols = {t.name: f"n_{i}" for i, t in enumerate(types)}
    daily = history.groupBy("user_id", "event_date").agg(
        *[
            F.sum(F.when(F.col("event_type") == name, 1).otherwise(0)).alias(col)
            for name, col in type_cols.items()
        ],
        F.count(F.lit(1)).alias("n"),
        F.sum(F.col("rating")).alias("rating_sum"),
        F.count(F.col("rating")).alias("rating_n"),
        F.max("ts").alias("last_ts"),
    )
    folded = fold_old_days(
        daily,
        ["user_id"],
        start,
        lookback,
        [*type_cols.values(), "n", "rating_sum", "rating_n"],
        maxes=["last_ts"],
    )
    per_day = explode_as_of(folded, start, end)
    columns: dict[str, Column] = {}
    for name, col in type_cols.items():
        for w in windows:
            columns[f"user_{name}_{w}d"] = _in_window(w, col)
    for w in windows:
        columns[f"user_events_{w}d"] = _in_window(w, "n")
    rating_n = F.coalesce(F.sum("rating_n"), F.lit(0))
    columns["user_lifetime_events"] = F.sum("n")
    columns["user_recency_s"] = _seconds_to_as_of(F.max("last_ts"))
    columns["user_avg_rating"] = F.when(rating_n > 0, F.sum("rating_sum") / rating_n)
    columns["user_rating_count"] = rating_n
    aggregated = per_day.groupBy("user_id", "as_of").agg(
        *[c.alias(n) for n, c in columns.items() if n != "user_distinct_items_30d"]
    )

    distinct_items = _distinct_in_window(
        history, "user_id", "item_id", start, end, DISTINCT_WINDOW_DAYS
    ).withColumnRenamed("distinct_30d", "user_distinct_items_30d")
    affinity = category_affinity(history, items, start, end)
    profile = genre_profile(history, items, start, end)
    joined = (
        aggregated.join(distinct_items, ["user_id", "as_of"], "left")
        .join(affinity, ["user_id", "as_of"], "left")
        .join(profile, ["user_id", "as_of"], "left")
    )
    feature_cols = {n: F.col(n) for n in columns if n != "user_distinct_items_30d"}
    feature_cols["user_distinct_items_30d"] = F.coalesce(F.col("user_distinct_items_30d"), F.lit(0))
    return joined.select(
        "as_of",
        "user_id",
        _features_map(feature_cols, names).alias("features"),
        F.coalesce(F.col("category_affinity"), F.create_map().cast("map<string,double>")).alias(
            "category_affinity"
        ),
        F.coalesce(F.col("genre_profile"), F.create_map().cast("map<string,double>")).alias("genre_profile"),
    )


def _distinct_in_window(
    history: DataFrame, entity: str, other: str, start: date, end: date, days: int
) -> DataFrame:
    """(entity, as_of, distinct_<days>d): distinct `other` values in the `days` days before as_of."""
    triples = (
        history.where(F.col("event_date") >= F.lit(start - timedelta(days=days)))
        .select(entity, other, "event_date")
        .distinct()
    )
    return (
        explode_as_of(triples, start, end, max_age=days)
        .groupBy(entity, "as_of")
        .agg(F.countDistinct(other).cast("double").alias(f"distinct_{days}d"))
    )


def category_affinity(history: DataFrame, items: DataFrame | None, start: date, end: date) -> DataFrame:
    """(user_id, as_of, category_affinity): each category's share of the user's positive implicit weight
    before as_of, each day's weight decayed by AFFINITY_HALF_LIFE_DAYS (shares only depend on ratios,
    so weights are scaled relative to `start` once instead of per as_of)."""
    with_category = _with_category(history, items)
    decay = F.pow(F.lit(2.0), F.datediff(F.col("event_date"), F.lit(start)) / F.lit(AFFINITY_HALF_LIFE_DAYS))
    daily = with_category.groupBy("user_id", "category", "event_date").agg(
        (F.sum("weight") * decay).alias("w")
    )
    # Decay already shrinks old days; fold them anyway to bound the explode.
    return _shares_by_as_of(daily, "category", start, end, "category_affinity")


def _shares_by_as_of(daily: DataFrame, key: str, start: date, end: date, name: str) -> DataFrame:
    """(user_id, as_of, `name`): each `key` value's share of the user's positive weight `w` of the
    daily rows (user_id, `key`, event_date, w) before each as_of."""
    folded = fold_old_days(daily, ["user_id", key], start, DISTINCT_WINDOW_DAYS, ["w"])
    per_key = (
        explode_as_of(folded, start, end)
        .groupBy("user_id", "as_of", key)
        .agg(F.sum("w").alias("w"))
        .where(F.col("w") > 0)
    )
    totals = per_key.groupBy("user_id", "as_of").agg(F.sum("w").alias("total"))
    return (
        per_key.join(totals, ["user_id", "as_of"])
        .groupBy("user_id", "as_of")
        .agg(
            F.map_from_entries(
                F.collect_list(F.struct(key, (F.col("w") / F.col("total")).alias("share")))
            ).alias(name)
        )
    )


def genre_profile(history: DataFrame, items: DataFrame | None, start: date, end: date) -> DataFrame:
    """(user_id, as_of, genre_profile): feature_store.genres' profile of the user before as_of, each
    event's weight counted once for every genre of its item, over the whole history (no decay)."""
    if items is None:
        return (
            history.select("user_id", F.col("event_date").alias("as_of"))
            .limit(0)
            .withColumn("genre_profile", F.create_map().cast("map<string,double>"))
        )
    daily = (
        history.join(F.broadcast(catalogue_genres(items)), "item_id", "left")
        .select("user_id", "event_date", "weight", F.explode("genres").alias("genre"))
        .groupBy("user_id", "genre", "event_date")
        .agg(F.sum("weight").alias("w"))
    )
    return _shares_by_as_of(daily, "genre", start, end, "genre_profile")


def catalogue_genres(items: DataFrame) -> DataFrame:
    """(item_id, genres) of the catalogue: feature_store.genres.item_genres of each entry."""
    listed = F.array_distinct(F.filter(F.coalesce(F.col("categories"), F.array()), lambda g: g.isNotNull()))
    main = F.when(F.col("category").isNotNull(), F.array(F.col("category"))).otherwise(F.array())
    return items.dropDuplicates(["item_id"]).select(
        "item_id", F.when(F.size(listed) > 0, listed).otherwise(main).cast("array<string>").alias("genres")
    )


def _with_category(history: DataFrame, items: DataFrame | None) -> DataFrame:
    if items is None:
        return history.withColumn("category", F.lit(UNKNOWN_CATEGORY))
    categories = items.select("item_id", "category").dropDuplicates(["item_id"])
    return history.join(F.broadcast(categories), "item_id", "left").withColumn(
        "category", F.coalesce(F.col("category"), F.lit(UNKNOWN_CATEGORY))
    )


# -- items ------------------------------------------------------------------------------------------


def build_item_features(
    interactions: DataFrame,
    items: DataFrame | None,
    start: date,
    end: date,
    *,
    windows: Sequence[int] = (1, 7, 30),
) -> DataFrame:
    """ITEM_FEATURES rows for as_of in [start, end): items with at least one event before as_of."""
    names = tuple(f.name for f in item_features(None, tuple(windows)))
    lookback = _lookback(windows)
    history = interactions.where(F.col("event_date") < F.lit(_last_as_of(end)))
    funnel_cols = {name: f"n_{name}" for name in FUNNEL}
    daily = history.groupBy("item_id", "event_date").agg(
        *[
            F.sum(F.when(F.col("event_type") == name, 1).otherwise(0)).alias(col)
            for name, col in funnel_cols.items()
        ],
        F.count(F.lit(1)).alias("n"),
        F.sum("weight").alias("weight"),
        F.sum(F.col("rating")).alias("rating_sum"),
        F.count(F.col("rating")).alias("rating_n"),
        F.min("ts").alias("first_ts"),
    )
    folded = fold_old_days(
        daily,
        ["item_id"],
        start,
        lookback,
        [*funnel_cols.values(), "n", "weight", "rating_sum", "rating_n"],
        mins=["first_ts"],
    )
    per_day = explode_as_of(folded, start, end)
    views, clicks = _in_window(DISTINCT_WINDOW_DAYS, "n_view"), _in_window(DISTINCT_WINDOW_DAYS, "n_click")
    carts, purchases = (
        _in_window(DISTINCT_WINDOW_DAYS, "n_add_to_cart"),
        _in_window(DISTINCT_WINDOW_DAYS, "n_purchase"),
    )
    events_7d, events_30d = _in_window(7, "n"), _in_window(DISTINCT_WINDOW_DAYS, "n")
    rating_n = F.coalesce(F.sum("rating_n"), F.lit(0))
    columns: dict[str, Column] = {f"item_events_{w}d": _in_window(w, "n") for w in windows}
    columns.update(
        {
            "item_weight_30d": _in_window(DISTINCT_WINDOW_DAYS, "weight"),
            "item_ctr_30d": _ratio(clicks, views),
            "item_cart_rate_30d": _ratio(carts, views),
            "item_purchase_rate_30d": _ratio(purchases, views),
            "item_trend_7d": _ratio(events_7d, events_30d * F.lit(7.0 / 30.0)),
            "item_age_days": _seconds_to_as_of(F.min("first_ts")) / F.lit(86_400.0),
            "item_lifetime_events": F.sum("n"),
            "item_avg_rating": F.when(rating_n > 0, F.sum("rating_sum") / rating_n),
            "item_rating_count": rating_n,
        }
    )
    aggregated = per_day.groupBy("item_id", "as_of").agg(*[c.alias(n) for n, c in columns.items()])

    triples = (
        history.where(F.col("event_date") >= F.lit(start - timedelta(days=max(windows))))
        .select("item_id", "user_id", "event_date")
        .distinct()
    )
    users = (
        explode_as_of(triples, start, end, max_age=max(windows))
        .groupBy("item_id", "as_of")
        .agg(
            *[
                F.countDistinct(F.when(F.col("age") <= w, F.col("user_id")))
                .cast("double")
                .alias(f"item_users_{w}d")
                for w in windows
            ]
        )
    )
    joined = aggregated.join(users, ["item_id", "as_of"], "left")
    feature_cols = {n: F.col(n) for n in columns}
    feature_cols.update(
        {f"item_users_{w}d": F.coalesce(F.col(f"item_users_{w}d"), F.lit(0.0)) for w in windows}
    )
    with_category = (
        joined.join(
            F.broadcast(items.select("item_id", "category").dropDuplicates(["item_id"])), "item_id", "left"
        ).join(F.broadcast(catalogue_genres(items)), "item_id", "left")
        if items is not None
        else joined.withColumn("category", F.lit(None).cast("string")).withColumn(
            "genres", F.lit(None).cast("array<string>")
        )
    )
    return with_category.select(
        "as_of",
        "item_id",
        F.coalesce(F.col("category"), F.lit(UNKNOWN_CATEGORY)).alias("category"),
        _features_map(feature_cols, names).alias("features"),
        F.coalesce(F.col("genres"), F.array().cast("array<string>")).alias("genres"),
    )


# -- the step ---------------------------------------------------------------------------------------


def silver_window_to_refresh(
    bronze_first: date | None, silver_last: date | None, start: date, end: date
) -> tuple[date, date] | None:
    """Event dates of silver to rebuild before gold for as_of in [start, end): from the day before
    `start` (so a late day is picked up) or from the first date silver lacks, whichever is earlier, not
    before bronze's first date; up to `end`. None when bronze is empty."""
    if bronze_first is None:
        return None
    first_missing = bronze_first if silver_last is None else silver_last + timedelta(days=1)
    begin = max(bronze_first, min(start - timedelta(days=1), first_missing))
    return (begin, end) if begin < end else None


def run_features(
    spark: SparkSession, settings: Settings, start: date, end: date, event_types: EventTypes | None = None
) -> FeaturesReport:
    """Refresh silver for the dates the window needs, then write gold user/item features for as_of in [start, end)."""
    from spark_jobs.delta_io import read_table, replace_window
    from spark_jobs.interactions import run_interactions

    if end <= start:
        raise ValueError(f"empty window [{start}, {end}): end must be after start")
    bronze_first = read_table(spark, settings, BRONZE_EVENTS).agg(F.min("event_date")).first()[0]
    silver_last = read_table(spark, settings, INTERACTIONS).agg(F.max("event_date")).first()[0]
    refresh = silver_window_to_refresh(bronze_first, silver_last, start, end)
    silver_rows = (
        run_interactions(spark, settings, *refresh, event_types=event_types).rows_written if refresh else 0
    )

    from pyspark import StorageLevel

    # Both builders read the history several times (daily, distinct, affinity): scan silver once.
    columns = ["user_id", "item_id", "event_type", "ts", "weight", "rating", "event_date"]
    interactions = (
        read_table(spark, settings, INTERACTIONS)
        .where(F.col("event_date") < F.lit(end - timedelta(days=1)))
        .select(*columns)
        .persist(StorageLevel.MEMORY_AND_DISK)
    )
    items = read_table(spark, settings, ITEMS)
    windows = tuple(settings.batch.feature_windows_days)
    try:
        users = build_user_features(interactions, items, start, end, event_types=event_types, windows=windows)
        item_rows = build_item_features(interactions, items, start, end, windows=windows)
        user_count = replace_window(spark, settings, USER_FEATURES, users, "as_of", start, end)
        item_count = replace_window(spark, settings, ITEM_FEATURES, item_rows, "as_of", start, end)
    finally:
        interactions.unpersist()
    return FeaturesReport(
        start=start.isoformat(),
        end=end.isoformat(),
        silver_window=(refresh[0].isoformat(), refresh[1].isoformat()) if refresh else None,
        silver_rows=silver_rows,
        user_rows=user_count,
        item_rows=item_count,
        tables={t.name: settings.table_path(t.name) for t in (INTERACTIONS, USER_FEATURES, ITEM_FEATURES)},
    )

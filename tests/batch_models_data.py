"""Tiny inline inputs for the batch-model tests, in the exact shape of the Delta contract
(feature_store.tables): silver interactions, gold user/item features."""

from __future__ import annotations

from datetime import UTC, date, datetime

from feature_store.events import EventTypes
from feature_store.tables import INTERACTIONS, ITEM_FEATURES, USER_FEATURES

WEIGHTS = EventTypes().weights()


def ts(text: str) -> datetime:
    """'2024-01-02 10:00' -> naive UTC datetime (Spark session time zone is UTC)."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC).replace(tzinfo=None)


def interaction(
    user: str, item: str, when: str, event_type: str = "view", session: str | None = None, n: int = 0
):
    """One silver `interactions` row; weight and label from the event contract."""
    moment = ts(when)
    weight = WEIGHTS[event_type]
    return (
        f"{user}-{item}-{when}-{event_type}-{n}",
        user,
        item,
        event_type,
        moment,
        None,
        None,
        weight,
        None,
        False,
        1 if weight > 0 else 0,
        session or f"{user}:s",
        moment.date(),
    )


def interactions_df(spark, rows):
    return spark.createDataFrame(rows, INTERACTIONS.ddl)


def user_features_df(spark, rows):
    """rows: (as_of 'YYYY-MM-DD', user_id, {feature: value}, {category: affinity}[, {genre: share}])."""
    return spark.createDataFrame(
        [(date.fromisoformat(a), u, f, c, g[0] if g else {}) for a, u, f, c, *g in rows], USER_FEATURES.ddl
    )


def item_features_df(spark, rows):
    """rows: (as_of 'YYYY-MM-DD', item_id, category, {feature: value}[, [genre, ...]])."""
    return spark.createDataFrame(
        [(date.fromisoformat(a), i, c, f, g[0] if g else []) for a, i, c, f, *g in rows], ITEM_FEATURES.ddl
    )


# -- a tiny world with real signal (for ranker quality tests) ------------------------------------

FUNNEL = (("view", 0.6), ("click", 0.25), ("add_to_cart", 0.1), ("purchase", 0.05))


def synthetic_world(
    seed: int = 7,
    users: int = 100,
    categories: int = 5,
    items_per_category: int = 40,
    days: int = 28,
    start: date = date(2024, 3, 1),
):
    """(interaction rows, {item: category}): users keep to a favourite category 75% of the time and pick
    items by power-law popularity inside a category; one session a day with probability 0.6."""
    import random
    from datetime import timedelta

    rng = random.Random(seed)
    catalog = {f"c{c}i{i}": f"cat{c}" for c in range(categories) for i in range(items_per_category)}
    by_category = {f"cat{c}": [f"c{c}i{i}" for i in range(items_per_category)] for c in range(categories)}
    appeal = [1 / (i + 1) ** 0.9 for i in range(items_per_category)]
    rows = []
    for u in range(users):
        user = f"u{u:03d}"
        favourite = f"cat{rng.randrange(categories)}"
        for day in range(days):
            if rng.random() > 0.6:
                continue
            moment = datetime.combine(start + timedelta(days=day), datetime.min.time()) + timedelta(
                minutes=rng.randrange(60, 1380)
            )
            session = f"{user}:{day}"
            for n in range(rng.randint(2, 5)):
                category = favourite if rng.random() < 0.75 else f"cat{rng.randrange(categories)}"
                item = rng.choices(by_category[category], weights=appeal)[0]
                event_type = rng.choices([t for t, _ in FUNNEL], weights=[w for _, w in FUNNEL])[0]
                rows.append(
                    interaction(
                        user,
                        item,
                        (moment + timedelta(minutes=2 * n)).strftime("%Y-%m-%d %H:%M"),
                        event_type,
                        session,
                        n,
                    )
                )
    return rows, catalog


def minimal_gold_features(spark, interactions, catalog: dict[str, str], as_of_dates):
    """Gold user/item feature rows (a subset of the contract's names) computed from events strictly
    before each as_of: enough for the ranker to see category affinity and popularity."""
    from functools import reduce

    from pyspark.sql import Window
    from pyspark.sql import functions as F

    items_df = spark.createDataFrame(list(catalog.items()), "item_id string, category string")
    user_frames, item_frames = [], []
    for as_of in as_of_dates:
        cutoff = F.lit(datetime.combine(as_of, datetime.min.time())).cast("timestamp")
        history = interactions.where(F.col("ts") < cutoff).join(items_df, "item_id")
        days_ago = (F.unix_timestamp(cutoff) - F.unix_timestamp("ts")) / 86400

        def count_within(days):  # used only inside this iteration
            return F.sum((days_ago <= days).cast("double"))  # noqa: B023

        users = history.groupBy("user_id").agg(
            F.create_map(
                F.lit("user_events_7d"),
                count_within(7),
                F.lit("user_events_30d"),
                count_within(30),
                F.lit("user_lifetime_events"),
                F.count("*").cast("double"),
                F.lit("user_recency_s"),
                (F.unix_timestamp(cutoff) - F.max(F.unix_timestamp("ts"))).cast("double"),
            ).alias("features")
        )
        positive = history.where(F.col("weight") > 0)
        per_category = positive.groupBy("user_id", "category").agg(F.sum("weight").alias("w"))
        affinity = (
            per_category.withColumn("share", F.col("w") / F.sum("w").over(Window.partitionBy("user_id")))
            .groupBy("user_id")
            .agg(F.map_from_entries(F.collect_list(F.struct("category", "share"))).alias("category_affinity"))
        )
        user_frames.append(
            users.join(affinity, "user_id", "left").select(
                F.lit(as_of).alias("as_of"),
                "user_id",
                "features",
                "category_affinity",
                # one genre per item here: the undecayed affinity is the genre profile itself
                F.col("category_affinity").alias("genre_profile"),
            )
        )
        items = history.groupBy("item_id", "category").agg(
            F.create_map(
                F.lit("item_events_7d"),
                count_within(7),
                F.lit("item_events_30d"),
                count_within(30),
                F.lit("item_users_30d"),
                F.countDistinct("user_id").cast("double"),
                F.lit("item_weight_30d"),
                F.sum(F.when(days_ago <= 30, F.col("weight")).otherwise(0.0)),
                F.lit("item_lifetime_events"),
                F.count("*").cast("double"),
            ).alias("features")
        )
        item_frames.append(
            items.select(
                F.lit(as_of).alias("as_of"),
                "item_id",
                "category",
                "features",
                F.array("category").alias("genres"),
            )
        )
    return reduce(lambda a, b: a.unionByName(b), user_frames), reduce(
        lambda a, b: a.unionByName(b), item_frames
    )

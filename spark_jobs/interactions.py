"""Silver `interactions`: bronze events cleaned, deduped, labeled and sessionized, per event date.

`build_interactions(bronze, start, end, ...)` is the pure transform; `run_interactions(spark, settings,
start, end)` the thin step that overwrites exactly the `[start, end)` event dates of the silver table
(replaceWhere), so reruns and backfills are idempotent. Called by `lambdarec batch interactions`,
spark_jobs.features.run_features, the Airflow DAG and the demo.

- dedupe: one row per event_id (the earliest by event time, then ingest time, then source);
- clean: explicit events whose rating is not a finite number are left out (bronze keeps them);
- label: `weight` = the event type's implicit weight (feature_store.events); for explicit types
  `weight` = rating - positive_rating_threshold + 1, clipped at 0 below; `rating` = the explicit value;
  `is_explicit`; `label` = 1 when rating >= threshold (explicit) or weight > 0 (implicit), else 0;
- sessionize: per user in event-time order, an inactivity gap of at least `session_gap` starts a new
  session; `session_id` = user_id + ':' + epoch millis of the session's first event. Events of the day
  before `start` are read too, so a session crossing midnight keeps the id it got the day before.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from feature_store.events import EventTypes
from feature_store.settings import Settings
from feature_store.tables import BRONZE_EVENTS, INTERACTIONS

SESSION_LOOKBACK = timedelta(days=1)


@dataclass(frozen=True)
class InteractionsReport:
    start: str
    end: str
    rows_written: int
    table: str


def event_weight(
    event_type: Column, value: Column, event_types: EventTypes, positive_rating_threshold: float
) -> Column:
    """Implicit-feedback weight of an event (explicit ones: rating - threshold + 1, at least 0)."""
    weights = F.create_map(*[x for t in event_types for x in (F.lit(t.name), F.lit(float(t.weight)))])
    explicit = (
        event_type.isin(*event_types.explicit_names()) if event_types.explicit_names() else F.lit(False)
    )
    return F.when(
        explicit, F.greatest(value - F.lit(positive_rating_threshold) + F.lit(1.0), F.lit(0.0))
    ).otherwise(F.coalesce(weights[event_type], F.lit(0.0)))


def build_interactions(
    bronze: DataFrame,
    start: date,
    end: date,
    *,
    event_types: EventTypes | None = None,
    positive_rating_threshold: float = 3.5,
    session_gap: timedelta = timedelta(minutes=30),
) -> DataFrame:
    """Silver rows (INTERACTIONS columns) for events dated in `[start, end)`, from bronze events."""
    types = event_types or EventTypes()
    explicit_names = types.explicit_names()
    is_explicit = F.col("event_type").isin(*explicit_names) if explicit_names else F.lit(False)
    window = bronze.where(
        (F.col("event_date") >= F.lit(start - SESSION_LOOKBACK)) & (F.col("event_date") < F.lit(end))
    )

    # bronze holds one row per event id (MERGE insert-only); should two copies ever land, the one that
    # reached bronze first is the fact (feature_store.events: the first copy to arrive wins)
    first_copy = Window.partitionBy("event_id").orderBy("ingest_time", "ts", "source")
    deduped = (
        window.withColumn("_copy", F.row_number().over(first_copy))
        .where(F.col("_copy") == 1)
        .withColumn("is_explicit", is_explicit)
        .where(
            ~F.col("is_explicit")
            | (F.col("value").isNotNull() & ~F.isnan("value") & (F.abs("value") < F.lit(float("inf"))))
        )
    )
    weighted = deduped.withColumn(
        "weight", event_weight(F.col("event_type"), F.col("value"), types, positive_rating_threshold)
    )
    labeled = weighted.select(
        "event_id",
        "user_id",
        "item_id",
        "event_type",
        "ts",
        "value",
        "context",
        "weight",
        F.when(F.col("is_explicit"), F.col("value")).alias("rating"),
        "is_explicit",
        F.when(F.col("is_explicit"), (F.col("value") >= F.lit(positive_rating_threshold)).cast("int"))
        .otherwise((F.col("weight") > 0).cast("int"))
        .alias("label"),
        "event_date",
    )
    return (
        sessionize(labeled, session_gap)
        .where(F.col("event_date") >= F.lit(start))
        .select(*INTERACTIONS.columns)
    )


def sessionize(df: DataFrame, session_gap: timedelta) -> DataFrame:
    """Add `session_id`: per user in (ts, event_id) order, a gap >= session_gap starts a new session."""
    order = Window.partitionBy("user_id").orderBy("ts", "event_id")
    gap_us = int(session_gap / timedelta(microseconds=1))
    previous = F.lag("ts").over(order)
    starts = previous.isNull() | ((F.unix_micros("ts") - F.unix_micros(previous)) >= F.lit(gap_us))
    with_start = df.withColumn("_session_start", F.when(starts, F.col("ts")))
    running = order.rowsBetween(Window.unboundedPreceding, Window.currentRow)
    first_ts = F.last("_session_start", ignorenulls=True).over(running)
    return with_start.withColumn(
        "session_id", F.concat(F.col("user_id"), F.lit(":"), F.unix_millis(first_ts).cast("string"))
    ).drop("_session_start")


def run_interactions(
    spark: SparkSession, settings: Settings, start: date, end: date, event_types: EventTypes | None = None
) -> InteractionsReport:
    """Rebuild silver interactions for event dates `[start, end)` from bronze events."""
    from spark_jobs.delta_io import read_table, replace_window

    if end <= start:
        raise ValueError(f"empty window [{start}, {end}): end must be after start")
    silver = build_interactions(
        read_table(spark, settings, BRONZE_EVENTS),
        start,
        end,
        event_types=event_types,
        positive_rating_threshold=settings.batch.positive_rating_threshold,
        session_gap=settings.batch.session_gap,
    )
    rows = replace_window(spark, settings, INTERACTIONS, silver, "event_date", start, end)
    return InteractionsReport(
        start.isoformat(), end.isoformat(), rows, settings.table_path(INTERACTIONS.name)
    )

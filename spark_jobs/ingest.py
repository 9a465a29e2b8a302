"""Ingest: raw rows -> bronze `events` (good, once) and bronze `quarantine` (bad, with the reason).

The Spark twin of feature_store.events.validate_event_dict: `validate_raw_events` applies exactly its
rules, with its QuarantineReason values and priority, to a DataFrame of (`raw` JSON text, `source`):

  malformed (not a JSON object, or `context` not an object) > missing_event_id > missing_user_id >
  missing_item_id > invalid_id (not a string of 1-128 [A-Za-z0-9_-:.@/]) > unknown_event_type >
  bad_timestamp (neither ISO-8601 nor epoch millis in years 1-9999) > bad_value (`value` not a number)
  > context_too_large (more than CONTEXT_MAX_KEYS keys or CONTEXT_MAX_BYTES UTF-8 bytes) > future_timestamp (after ingest time + tolerance) > bad_value (explicit type without a value),

then marks every later copy of an event id in the same input `duplicate_event_id`: the first in the
input's `arrival` order wins (feature_store.events' rule; spark_jobs.sources.input_position). Parsing uses Spark's VARIANT JSON parser so JSON types are seen exactly
as Python sees them (123 is not the string "123"); no Python UDF runs.

Known differences from the Python rules, all on inputs no sane sender makes: an object with a repeated
key is malformed here (Python keeps the last value), JSON `NaN` literals are malformed here, integers
with more than ~300 digits are infinite here, and non-string `context` values are stored as their JSON
text (`true`, `{"a":1}`) where Python would store `True`, `{'a': 1}` (and the context's byte count
follows the stored text).

`split_valid_events`, `write_bronze` and `write_quarantine` are general (any DataFrame with `raw` and
`source`): the batch `ingest` step below and the streaming job's foreachBatch both use them.
`ingest(spark, settings, source, fmt, ingest_time)` is the thin step behind `lambdarec ingest`.

Why one module: `apply_event_rules` is the contract's rule table in Spark terms and is read against
feature_store.events rule for rule; the writes below it are what every path into bronze shares.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from feature_store.events import (
    CONTEXT_MAX_BYTES,
    CONTEXT_MAX_KEYS,
    ID_MAX_LENGTH,
    ID_PATTERN,
    EventTypes,
    QuarantineReason,
)
from feature_store.settings import Settings
from feature_store.tables import BRONZE_EVENTS, ITEMS, QUARANTINE
from spark_jobs.event_time import py_strip, with_event_time_micros

R = QuarantineReason

# ID_PATTERN is anchored with ^...$ for pydantic's Rust regex, where `$` is the end of the text; in Java
# `$` also matches before a final newline, so anchor with \A...\z to keep "id\n" invalid on both sides.
_JAVA_ID_PATTERN = r"\A" + ID_PATTERN.removeprefix("^").removesuffix("$") + r"\z"
# Python float() syntax (what pydantic accepts for a float given as a string), without Java's 1d/1f suffixes.
_PY_FLOAT_TEXT = r"(?i)^\s*[+-]?(?:(?:(?:\d(?:_?\d)*)(?:\.(?:\d(?:_?\d)*)?)?|\.\d(?:_?\d)*)(?:e[+-]?\d(?:_?\d)*)?|inf|infinity|nan)\s*\z"
_NUMERIC_TYPES = ("TINYINT", "SMALLINT", "INT", "BIGINT", "FLOAT", "DOUBLE")


@dataclass(frozen=True)
class IngestReport:
    """What one ingest did. rows_read = ingested + already_present + sum(quarantined)."""

    source: str
    format: str
    ingest_time: str
    rows_read: int
    ingested: int  # new rows in bronze/events
    already_present: int  # good rows whose event_id bronze already had (re-ingest)
    quarantined: dict[str, int]  # rows of this input rejected, by reason
    quarantine_added: int  # new rows in bronze/quarantine (0 when the same bad rows came before)
    items_inserted: int = 0
    items_updated: int = 0
    event_files: tuple[str, ...] = ()
    catalog_file: str | None = None
    tables: dict[str, str] = field(default_factory=dict)

    @property
    def quarantined_total(self) -> int:
        return sum(self.quarantined.values())

    def to_json(self) -> dict:
        data = asdict(self)
        data["quarantined_total"] = self.quarantined_total
        return data


# -- pure transforms ----------------------------------------------------------------------------------


def _is_numeric(type_name: Column) -> Column:
    return type_name.isin(*_NUMERIC_TYPES) | type_name.startswith("DECIMAL")


def validate_raw_events(
    raw_df: DataFrame,
    ingest_time: datetime,
    future_tolerance: timedelta,
    event_types: EventTypes | None = None,
) -> DataFrame:
    """Every input row with its parsed event columns, `reason` (null = good) and `detail`.

    Input: any DataFrame with `raw` (STRING), `source` (STRING) and `arrival` (any orderable column:
    the order the rows arrived in, which decides which copy of an event id wins). Pure; ingest_time is the cut-off
    of the future-timestamp rule. = `mark_duplicates(apply_event_rules(...))`."""
    return mark_duplicates(apply_event_rules(raw_df, ingest_time, future_tolerance, event_types))


def apply_event_rules(
    raw_df: DataFrame,
    ingest_time: datetime,
    future_tolerance: timedelta,
    event_types: EventTypes | None = None,
) -> DataFrame:
    """The per-row rules (everything but duplicates): parsed columns, `reason` (null = good), `detail`."""
    types = event_types or EventTypes()
    names = list(types.names)
    explicit = list(types.explicit_names()) or ["\u0000none"]
    limit_us = _micros(ingest_time) + int(future_tolerance / timedelta(microseconds=1))

    first_char = F.regexp_extract(F.col("raw"), r"^[ \t\n\r]*(.)", 1)
    parsed = raw_df.select(
        "raw",
        "source",
        "arrival",
        F.when(first_char == "{", F.try_parse_json(F.col("raw"))).alias("_v"),
    )

    def vtype(name: str) -> Column:
        return F.schema_of_variant(F.variant_get(F.col("_v"), f"$.{name}", "variant"))

    def vstring(name: str) -> Column:
        return F.try_variant_get(F.col("_v"), f"$.{name}", "string")

    typed = parsed.select(
        "raw",
        "source",
        "arrival",
        "_v",
        *[
            vtype(n).alias(f"_t_{n}")
            for n in ("event_id", "user_id", "item_id", "event_type", "ts", "value", "context")
        ],
        *[
            vstring(n).alias(f"_s_{n}")
            for n in ("event_id", "user_id", "item_id", "event_type", "ts", "value")
        ],
    )
    c = F.col

    def absent(name: str) -> Column:
        t = c(f"_t_{name}")
        return t.isNull() | (t == "VOID") | ((t == "STRING") & (c(f"_s_{name}") == ""))

    def invalid(name: str) -> Column:
        s = c(f"_s_{name}")
        return ~absent(name) & (
            (c(f"_t_{name}") != "STRING") | (F.length(s) > ID_MAX_LENGTH) | ~s.rlike(_JAVA_ID_PATTERN)
        )

    ts_type, value_type, context_type = c("_t_ts"), c("_t_value"), c("_t_context")
    typed = with_event_time_micros(
        typed,
        F.when(ts_type == "STRING", c("_s_ts")),
        _is_numeric(ts_type),
        F.try_variant_get(c("_v"), "$.ts", "double"),
        "_ts_us",
    )
    value_expr = (
        F.when(_is_numeric(value_type), F.try_variant_get(c("_v"), "$.value", "double"))
        .when(value_type == "BOOLEAN", F.try_variant_get(c("_v"), "$.value", "boolean").cast("double"))
        .when(
            (value_type == "STRING") & c("_s_value").rlike(_PY_FLOAT_TEXT),
            F.regexp_replace(py_strip(c("_s_value")), "_", "").try_cast("double"),
        )
    )
    typed = typed.select("*", value_expr.alias("_value"))
    ts_us, ts_ok, value = c("_ts_us"), c("_ts_us").isNotNull(), c("_value")
    value_given = value_type.isNotNull() & (value_type != "VOID")
    context_given = context_type.isNotNull() & (context_type != "VOID")
    event_type = c("_s_event_type")
    known_type = F.coalesce((c("_t_event_type") == "STRING") & event_type.isin(*names), F.lit(False))
    future = ts_us > F.lit(limit_us)
    ts_text = F.coalesce(F.to_json(F.variant_get(c("_v"), "$.ts", "variant")), F.lit("missing"))
    context = F.when(
        context_type.startswith("OBJECT"),
        F.map_filter(
            F.try_variant_get(c("_v"), "$.context", "map<string,string>"), lambda k, v: v.isNotNull()
        ),
    )
    context_keys = F.size(context)
    context_bytes = F.aggregate(
        F.map_entries(context),
        F.lit(0),
        lambda total, e: total + F.octet_length(e["key"]) + F.octet_length(e["value"]),
    )
    which_invalid = F.concat_ws(
        ", ", *[F.when(invalid(n), F.lit(n)) for n in ("event_id", "user_id", "item_id")]
    )

    rules: list[tuple[Column, R, Column]] = [
        (c("_v").isNull(), R.MALFORMED, F.lit("not a JSON object")),
        (
            context_given & ~context_type.startswith("OBJECT"),
            R.MALFORMED,
            F.lit("context is not a JSON object"),
        ),
        (absent("event_id"), R.MISSING_EVENT_ID, F.lit("event_id is missing or empty")),
        (absent("user_id"), R.MISSING_USER_ID, F.lit("user_id is missing or empty")),
        (absent("item_id"), R.MISSING_ITEM_ID, F.lit("item_id is missing or empty")),
        (
            invalid("event_id") | invalid("user_id") | invalid("item_id"),
            R.INVALID_ID,
            F.concat(
                which_invalid,
                F.lit(f": ids are strings of 1-{ID_MAX_LENGTH} characters from [A-Za-z0-9_-:.@/]"),
            ),
        ),
        (
            ~known_type,
            R.UNKNOWN_EVENT_TYPE,
            F.concat(
                F.lit("event_type "),
                F.coalesce(F.to_json(F.variant_get(c("_v"), "$.event_type", "variant")), F.lit("missing")),
                F.lit(f" is not one of {', '.join(names)}"),
            ),
        ),
        (
            ~F.coalesce(ts_ok, F.lit(False)),
            R.BAD_TIMESTAMP,
            F.concat(
                F.lit("ts "), ts_text, F.lit(" is neither ISO-8601 nor epoch milliseconds in years 1-9999")
            ),
        ),
        (
            value_given & value.isNull(),
            R.BAD_VALUE,
            F.concat(
                F.lit("value "),
                F.to_json(F.variant_get(c("_v"), "$.value", "variant")),
                F.lit(" is not a number"),
            ),
        ),
        (
            context_keys > CONTEXT_MAX_KEYS,
            R.CONTEXT_TOO_LARGE,
            F.concat(
                F.lit("context has "),
                context_keys.cast("string"),
                F.lit(f" keys; at most {CONTEXT_MAX_KEYS}"),
            ),
        ),
        (
            context_bytes > CONTEXT_MAX_BYTES,
            R.CONTEXT_TOO_LARGE,
            F.concat(
                F.lit("context holds "),
                context_bytes.cast("string"),
                F.lit(f" bytes of keys and values; at most {CONTEXT_MAX_BYTES}"),
            ),
        ),
        (
            future,
            R.FUTURE_TIMESTAMP,
            F.concat(
                F.lit("ts "),
                ts_text,
                F.lit(f" is after ingest time {ingest_time.isoformat()} + {future_tolerance}"),
            ),
        ),
        (
            event_type.isin(*explicit) & value.isNull(),
            R.BAD_VALUE,
            F.concat(event_type, F.lit(" needs a value")),
        ),
    ]
    # Each rule's condition once per row (a projection of flags), then the first that holds names the reason.
    typed = typed.select("*", *[condition.alias(f"_rule{i}") for i, (condition, _, _) in enumerate(rules)])
    reason = F.lit(None).cast("string")
    detail = F.lit(None).cast("string")
    for i, (_, why, text) in reversed(list(enumerate(rules))):
        flag = F.coalesce(c(f"_rule{i}"), F.lit(False))
        reason = F.when(flag, F.lit(why.value)).otherwise(reason)
        detail = F.when(flag, text).otherwise(detail)

    checked = typed.select(
        "raw",
        "source",
        "arrival",
        c("_s_event_id").alias("event_id"),
        c("_s_user_id").alias("user_id"),
        c("_s_item_id").alias("item_id"),
        event_type.alias("event_type"),
        F.timestamp_micros(ts_us).alias("ts"),
        value.alias("value"),
        context.alias("context"),
        reason.alias("reason"),
        detail.alias("detail"),
    )
    return checked


def mark_duplicates(checked: DataFrame) -> DataFrame:
    """Later copies of a good event's id become duplicate_event_id: the first to arrive wins."""
    c = F.col
    first_wins = Window.partitionBy("event_id").orderBy(F.col("reason").isNotNull(), "arrival")
    occurrence = F.when(
        F.col("reason").isNull() & F.col("event_id").isNotNull(), F.row_number().over(first_wins)
    )
    dup = occurrence > 1
    return checked.withColumn("_occurrence", occurrence).select(
        *[
            c(n)
            for n in (
                "raw",
                "source",
                "event_id",
                "user_id",
                "item_id",
                "event_type",
                "ts",
                "value",
                "context",
            )
        ],
        F.when(dup, F.lit(R.DUPLICATE_EVENT_ID.value)).otherwise(c("reason")).alias("reason"),
        F.when(dup, F.concat(F.lit("event_id "), c("event_id"), F.lit(" came earlier in this input")))
        .otherwise(c("detail"))
        .alias("detail"),
    )


def good_events(checked: DataFrame, ingest_time: datetime) -> DataFrame:
    """The good rows of `validate_raw_events` in the bronze `events` shape."""
    return checked.where(F.col("reason").isNull()).select(
        "event_id",
        "user_id",
        "item_id",
        "event_type",
        "ts",
        "value",
        "context",
        "source",
        F.timestamp_micros(F.lit(_micros(ingest_time))).alias("ingest_time"),
        F.to_date("ts").alias("event_date"),
    )


def quarantined_rows(checked: DataFrame, ingest_time: datetime) -> DataFrame:
    """The bad rows of `validate_raw_events` in the `quarantine` shape.

    row_key = sha2(source, raw, n) where n numbers identical (source, raw) lines, so re-ingesting the
    same input adds nothing and three identical bad lines stay three rows."""
    bad = checked.where(F.col("reason").isNotNull())
    same_line = Window.partitionBy("source", "raw").orderBy("reason", "detail")
    when = F.timestamp_micros(F.lit(_micros(ingest_time)))
    return bad.select(
        "raw",
        "reason",
        "detail",
        "source",
        when.alias("ingest_time"),
        F.to_date(when).alias("ingest_date"),
        F.sha2(
            F.concat_ws(
                "\u0000",
                F.coalesce(F.col("source"), F.lit("")),
                F.col("raw"),
                F.row_number().over(same_line).cast("string"),
            ),
            256,
        ).alias("row_key"),
    )


def split_valid_events(
    raw_df: DataFrame,
    ingest_time: datetime,
    future_tolerance: timedelta,
    event_types: EventTypes | None = None,
) -> tuple[DataFrame, DataFrame]:
    """(events in the bronze shape, quarantine rows) of a DataFrame with `raw` and `source`.

    Persist `raw_df` (or use `validate_raw_events` once and `good_events`/`quarantined_rows` on its
    persisted result) when both outputs are written, so the input is parsed once."""
    checked = validate_raw_events(raw_df, ingest_time, future_tolerance, event_types)
    return good_events(checked, ingest_time), quarantined_rows(checked, ingest_time)


# -- writes ---------------------------------------------------------------------------------------------


def write_bronze(spark: SparkSession, settings: Settings, events_df: DataFrame) -> int:
    """MERGE insert-only on event_id into bronze/events (re-ingest adds nothing). Rows inserted."""
    from spark_jobs.delta_io import merge_insert

    return merge_insert(spark, settings, BRONZE_EVENTS, events_df, "event_id")


def write_quarantine(spark: SparkSession, settings: Settings, quarantine_df: DataFrame) -> int:
    """MERGE insert-only on row_key into bronze/quarantine. Rows inserted."""
    from spark_jobs.delta_io import merge_insert

    return merge_insert(spark, settings, QUARANTINE, quarantine_df, "row_key")


def upsert_items(spark: SparkSession, settings: Settings, items_df: DataFrame) -> dict[str, int]:
    """MERGE upsert on item_id into bronze/items; one row per item (the latest created_at, then title)."""
    from spark_jobs.delta_io import merge_upsert

    latest = Window.partitionBy("item_id").orderBy(
        F.col("created_at").desc_nulls_last(), F.col("title").desc_nulls_last()
    )
    unique = items_df.withColumn("_n", F.row_number().over(latest)).where(F.col("_n") == 1).drop("_n")
    return merge_upsert(spark, settings, ITEMS, unique, "item_id")


# -- the step ---------------------------------------------------------------------------------------------


def ingest(
    spark: SparkSession,
    settings: Settings,
    source: Path | str,
    fmt: str,
    ingest_time: datetime,
    catalog: Path | str | None = None,
    event_types: EventTypes | None = None,
) -> IngestReport:
    """Read a source, validate it, and append it to bronze (events, quarantine, items)."""
    from pyspark import StorageLevel

    from spark_jobs.sources import read_source

    raw = read_source(spark, source, fmt, catalog)
    checked = validate_raw_events(
        raw.events, ingest_time, timedelta(minutes=settings.batch.future_tolerance_minutes), event_types
    ).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        counts = {row["reason"]: row["count"] for row in checked.groupBy("reason").count().collect()}
        good = counts.pop(None, 0)
        ingested = write_bronze(spark, settings, good_events(checked, ingest_time))
        quarantine_added = write_quarantine(spark, settings, quarantined_rows(checked, ingest_time))
    finally:
        checked.unpersist()
    items = (
        upsert_items(spark, settings, raw.items) if raw.items is not None else {"inserted": 0, "updated": 0}
    )
    return IngestReport(
        source=str(source),
        format=fmt,
        ingest_time=ingest_time.isoformat(),
        rows_read=good + sum(counts.values()),
        ingested=ingested,
        already_present=good - ingested,
        quarantined={r.value: counts[r.value] for r in R if counts.get(r.value)},
        quarantine_added=quarantine_added,
        items_inserted=items["inserted"],
        items_updated=items["updated"],
        event_files=raw.event_files,
        catalog_file=raw.catalog_file,
        tables={t.name: settings.table_path(t.name) for t in (BRONZE_EVENTS, QUARANTINE, ITEMS)},
    )


def _micros(moment: datetime) -> int:
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    delta = aware - datetime(1970, 1, 1, tzinfo=UTC)
    return delta // timedelta(microseconds=1)

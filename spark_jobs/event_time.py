"""Event time in Spark: ISO-8601 text or epoch milliseconds -> microseconds since the epoch, by
feature_store.events.parse_event_time's rules. Used by ingest (events) and sources (catalog `created_at`).
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

_EPOCH_MILLIS_TEXT = r"^-?\d+(\.\d+)?\z"  # what parse_event_time reads as epoch millis when it is a string
_ISO_TEXT = r"^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(Z|([+-])(\d{2}):?(\d{2}))?\z"
_MIN_MICROS = -62_135_596_800_000_000  # 0001-01-01T00:00:00Z: Python's datetime range
_MAX_MICROS = 253_402_300_799_999_999  # 9999-12-31T23:59:59.999999Z


def py_strip(col: Column) -> Column:
    return F.regexp_replace(col, r"^\s+|\s+$", "")


def with_event_time_micros(
    df: DataFrame, text: Column, is_number: Column, number: Column, name: str
) -> DataFrame:
    """`df` plus column `name`: microseconds since the epoch of an event time by parse_event_time's
    rules, null when it is neither ISO-8601 nor epoch milliseconds or falls outside the years 1-9999.

    `text` is the value when it was a JSON string, `is_number` whether it was a JSON number and
    `number` its double value. Computed in stages (each a projection) so Spark evaluates every regex
    once per row instead of inlining the expression wherever it is used."""
    c = F.col
    staged = df.select(
        "*",
        py_strip(text).alias("_tt"),
        F.coalesce(is_number, F.lit(False)).alias("_tn"),
        number.alias("_tv"),
    )
    staged = staged.select(
        "*",
        F.when(c("_tn"), c("_tv"))
        .when(c("_tt").rlike(_EPOCH_MILLIS_TEXT), c("_tt").try_cast("double"))
        .alias("_tms"),
        # One regex decides the ISO form; its fields then sit at fixed positions.
        (~c("_tn") & F.coalesce(c("_tt").rlike(_ISO_TEXT), F.lit(False))).alias("_tiso"),
    )
    staged = staged.select(
        "*", F.when(c("_tiso"), F.substring(c("_tt"), 20, 64)).alias("_trest")
    )  # ".123+01:00", "Z", ""
    staged = staged.select(
        "*",
        F.regexp_extract(c("_trest"), r"^\.(\d+)", 1).alias("_tfrac"),
        F.regexp_replace(c("_trest"), r"^\.\d+", "").alias("_tzone"),
        *[
            F.when(c("_tiso"), F.substring(c("_tt"), pos, length).try_cast("int")).alias(alias)
            for alias, pos, length in (
                ("_ty", 1, 4),
                ("_tmo", 6, 2),
                ("_td", 9, 2),
                ("_th", 12, 2),
                ("_tmi", 15, 2),
                ("_ts", 18, 2),
            )
        ],
    )
    zone = c("_tzone")
    offset = F.when(zone.isin("", "Z"), F.lit(0)).otherwise(
        F.when(F.substring(zone, 1, 1) == "-", F.lit(-1)).otherwise(F.lit(1))
        * (F.substring(zone, 2, 2).try_cast("int") * 60 + F.substring(zone, -2, 2).try_cast("int"))
    )
    staged = staged.select("*", offset.alias("_toff"))
    in_range = (
        c("_tiso")
        & (c("_ty") >= 1)
        & c("_tmo").between(1, 12)
        & c("_td").between(1, 31)
        & (c("_th") <= 23)
        & (c("_tmi") <= 59)
        & (c("_ts") <= 59)
        & (F.abs(c("_toff")) < 1440)
    )
    local = F.try_make_timestamp(
        c("_ty"), c("_tmo"), c("_td"), c("_th"), c("_tmi"), c("_ts").cast("decimal(8,6)"), F.lit("UTC")
    )
    fraction_us = F.when(
        F.length(c("_tfrac")) > 0, F.rpad(F.substring(c("_tfrac"), 1, 6), 6, "0").try_cast("bigint")
    ).otherwise(F.lit(0))
    staged = staged.select(
        "*",
        F.when(
            in_range, F.unix_micros(local) + fraction_us - c("_toff").cast("bigint") * F.lit(60_000_000)
        ).alias("_tiso_us"),
    )
    millis_us = F.when(
        ~F.isnan(c("_tms")) & (F.abs(c("_tms")) < F.lit(1e16)),
        F.bround(c("_tms") * F.lit(1000.0), 0).cast("bigint"),
    )
    staged = staged.select("*", F.coalesce(millis_us, c("_tiso_us")).alias("_tus"))
    temps = [
        "_tt",
        "_tn",
        "_tv",
        "_tms",
        "_tiso",
        "_trest",
        "_tfrac",
        "_tzone",
        "_ty",
        "_tmo",
        "_td",
        "_th",
        "_tmi",
        "_ts",
        "_toff",
        "_tiso_us",
        "_tus",
    ]
    return staged.select(
        "*", F.when(c("_tus").between(_MIN_MICROS, _MAX_MICROS), c("_tus")).alias(name)
    ).drop(*temps)

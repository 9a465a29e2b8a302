"""Writing the Delta tables of feature_store.tables the way their `write_mode` says.

Thin helpers the batch jobs (ingest, interactions, features, later candidates and scores) and the
streaming job's foreachBatch share: create a table from its declared DDL and partitioning, MERGE
insert-only on a key, MERGE upsert, and overwrite exactly a window of partitions (replaceWhere).
Each returns the numbers of the commit it made, read from the Delta log (no extra pass over data).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime

from pyspark.sql import DataFrame, SparkSession

from feature_store.settings import Settings
from feature_store.tables import Table

_CONCURRENT_RETRIES = 4


def ensure_table(spark: SparkSession, settings: Settings, table: Table) -> str:
    """Create the Delta table with its declared schema and partitioning if missing; return its path."""
    from delta.tables import DeltaTable

    path = settings.table_path(table.name)
    builder = DeltaTable.createIfNotExists(spark).location(path).addColumns(_ddl_schema(table.ddl))
    if table.partition_by:
        builder = builder.partitionedBy(*table.partition_by)
    _retry_concurrent(builder.execute)
    return path


def conform(df: DataFrame, table: Table) -> DataFrame:
    """Columns of `table` in its order and types (fails loudly if one is missing)."""
    from pyspark.sql import functions as F

    schema = _ddl_schema(table.ddl)
    missing = [f.name for f in schema.fields if f.name not in df.columns]
    if missing:
        raise ValueError(f"DataFrame for {table.name} lacks columns {missing}")
    return df.select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in schema.fields])


def merge_insert(
    spark: SparkSession,
    settings: Settings,
    table: Table,
    df: DataFrame,
    key: str,
    *,
    within: Mapping[str, Iterable[date]] | None = None,
    between: Mapping[str, tuple[datetime, datetime]] | None = None,
    path: str | None = None,
) -> int:
    """Insert the rows of `df` whose `key` is not in the table yet (re-running adds nothing). Rows inserted.

    `within` (partition column -> values) limits the lookup of existing keys to those partitions: right
    when a key always lands in the same partition (an event's date), and what keeps a streaming
    micro-batch's merge from reading the whole table. `between` (timestamp column -> first, last)
    limits it further to the files whose values of the column overlap [first, last] (Delta's data
    skipping on its per-file min/max): right when every copy of a key carries the same value (an
    event's time), and what keeps the lookup from growing with the day's partition. `path`: the
    table, already ensured to exist."""
    return _merge(spark, settings, table, df, key, update=False, within=within, between=between, path=path)[
        "inserted"
    ]


def merge_upsert(
    spark: SparkSession, settings: Settings, table: Table, df: DataFrame, key: str
) -> dict[str, int]:
    """Insert new keys, overwrite existing ones. Returns {"inserted": n, "updated": m}."""
    return _merge(spark, settings, table, df, key, update=True)


def _merge(
    spark: SparkSession,
    settings: Settings,
    table: Table,
    df: DataFrame,
    key: str,
    update: bool,
    within: Mapping[str, Iterable[date]] | None = None,
    between: Mapping[str, tuple[datetime, datetime]] | None = None,
    path: str | None = None,
) -> dict[str, int]:
    from delta.tables import DeltaTable

    path = path or ensure_table(spark, settings, table)
    source = conform(df, table)
    condition = " AND ".join(
        [*partition_filters("t", within or {}), *range_filters("t", between or {}), f"t.`{key}` = s.`{key}`"]
    )

    def run():
        merge = DeltaTable.forPath(spark, path).alias("t").merge(source.alias("s"), condition)
        if update:
            merge = merge.whenMatchedUpdateAll()
        # The result row holds this merge's own counts (a merge that changes nothing makes no commit,
        # so the table history would show the previous commit's numbers).
        return merge.whenNotMatchedInsertAll().execute().first()

    metrics = _retry_concurrent(run)
    return {
        "inserted": int(metrics["num_inserted_rows"] or 0),
        "updated": int(metrics["num_updated_rows"] or 0),
    }


def partition_filters(alias: str, within: Mapping[str, Iterable[date]]) -> list[str]:
    """SQL conditions `alias.column IN (DATE'...', ...)`, one per partition column (values sorted)."""
    out = []
    for column, values in sorted(within.items()):
        dates = ", ".join(f"DATE'{d.isoformat()}'" for d in sorted(set(values)))
        out.append(f"{alias}.`{column}` IN ({dates})")
    return out


def range_filters(alias: str, between: Mapping[str, tuple[datetime, datetime]]) -> list[str]:
    """SQL conditions `alias.column >= TIMESTAMP'first' AND alias.column <= TIMESTAMP'last'` (UTC, the
    sessions' time zone), literal on one side so Delta can skip files by their min/max statistics."""
    out = []
    for column, (first, last) in sorted(between.items()):
        out.append(f"{alias}.`{column}` >= {timestamp_literal(first)}")
        out.append(f"{alias}.`{column}` <= {timestamp_literal(last)}")
    return out


def timestamp_literal(moment: datetime) -> str:
    """A Spark SQL TIMESTAMP literal of an aware (or UTC naive) datetime, in UTC to the microsecond."""
    utc = moment.astimezone(UTC) if moment.tzinfo else moment
    return f"TIMESTAMP'{utc.strftime('%Y-%m-%d %H:%M:%S.%f')}'"


def replace_where(
    spark: SparkSession, settings: Settings, table: Table, df: DataFrame, condition: str
) -> int:
    """Overwrite exactly the rows of `table` matching the SQL `condition` with `df` (idempotent reruns,
    backfills); a commit lost to a concurrent writer is retried.

    Rows of `df` outside the condition are an error (Delta refuses them), never silently written.
    Returns the rows written (0 when Delta committed nothing)."""
    path = ensure_table(spark, settings, table)
    # mergeSchema: a table created before a column joined its DDL gains it on the next write.
    writer = (
        conform(df, table)
        .write.format("delta")
        .mode("overwrite")
        .option("replaceWhere", condition)
        .option("mergeSchema", "true")
    )
    before = _version(spark, path)
    _retry_concurrent(lambda: writer.save(path))
    if _version(spark, path) == before:
        return 0
    return int(last_commit_metrics(spark, path).get("numOutputRows", 0))


def replace_window(
    spark: SparkSession, settings: Settings, table: Table, df: DataFrame, column: str, start: date, end: date
) -> int:
    """`replace_where` on the partitions `start <= column < end`."""
    condition = f"`{column}` >= DATE'{start.isoformat()}' AND `{column}` < DATE'{end.isoformat()}'"
    return replace_where(spark, settings, table, df, condition)


def as_of_condition(*dates: date) -> str:
    """The SQL condition of the rows of these cut-offs."""
    return "as_of IN (" + ", ".join(f"DATE'{d.isoformat()}'" for d in dates) + ")"


def last_commit_metrics(spark: SparkSession, path: str) -> dict[str, str]:
    """operationMetrics of the table's latest commit."""
    from delta.tables import DeltaTable

    row = DeltaTable.forPath(spark, path).history(1).select("operationMetrics").first()
    return dict(row["operationMetrics"] or {}) if row else {}


def _version(spark: SparkSession, path: str) -> int:
    from delta.tables import DeltaTable

    return int(DeltaTable.forPath(spark, path).history(1).select("version").first()[0])


def read_table(spark: SparkSession, settings: Settings, table: Table) -> DataFrame:
    """The table as a DataFrame (created empty when missing, so first runs read nothing instead of failing)."""
    return spark.read.format("delta").load(ensure_table(spark, settings, table))


def _ddl_schema(ddl: str):
    from pyspark.sql.types import StructType

    return StructType.fromDDL(ddl)


def _retry_concurrent(action, attempts: int = _CONCURRENT_RETRIES):
    """Retry a Delta commit that lost an optimistic-concurrency race (the streaming job writes bronze too)."""
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except Exception as exc:  # delta raises py4j-wrapped Concurrent*Exception
            if "Concurrent" not in type(exc).__name__ + str(exc)[:300] or attempt == attempts:
                raise
            time.sleep(0.2 * attempt)


def window_dates(start: date, end: date) -> Sequence[date]:
    """The dates of `[start, end)`."""
    from datetime import timedelta

    return [start + timedelta(days=i) for i in range((end - start).days)]

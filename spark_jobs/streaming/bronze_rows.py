"""The bronze and quarantine rows of one micro-batch, as pure functions (the bronze query's
`foreachBatch` in speed_job turns them into a DataFrame and appends them).

The rows come from the same validation as the speed features (`speed_features.validate_entries`, the
event contract's own validator), so Redis and bronze always agree on what was good. `ingest_time` of a
streamed row is the moment it reached the bus (its entry's bus time): deterministic, so a replayed
batch would produce the very same rows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from feature_store import events
from feature_store.events import Event
from spark_jobs.streaming.speed_features import Rejected, SpeedEvent

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def bus_time(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


def first_copies(good: Sequence[tuple[SpeedEvent, Event]]) -> list[tuple[SpeedEvent, Event]]:
    """The first copy (in bus order) of each event id of a batch (feature_store.events.first_copies)."""
    return events.first_copies(good, lambda pair: pair[1].event_id)


def bronze_event_rows(good: Sequence[tuple[SpeedEvent, Event]], source: str) -> list[tuple]:
    """Rows in the column order of feature_store.tables.BRONZE_EVENTS."""
    return [
        (
            event.event_id,
            event.user_id,
            event.item_id,
            event.event_type,
            event.ts,
            event.value,
            dict(event.context) if event.context is not None else None,
            source,
            bus_time(speed.bus_time_ms),
            event.ts.date(),
        )
        for speed, event in good
    ]


def quarantine_row_key(source: str, raw: str | None, entry_id: str) -> str:
    """Unique per bus entry: the same bad line sent twice stays two rows."""
    return hashlib.sha256("\0".join((source, raw or "", entry_id)).encode()).hexdigest()


def quarantine_rows(rejected: Sequence[Rejected], bus_times_ms: dict[str, int], source: str) -> list[tuple]:
    """Rows in the column order of feature_store.tables.QUARANTINE."""
    rows = []
    for r in rejected:
        arrived = bus_time(bus_times_ms[r.entry_id])
        rows.append(
            (
                r.raw,
                r.reason.value,
                r.detail,
                source,
                arrived,
                arrived.date(),
                quarantine_row_key(source, r.raw, r.entry_id),
            )
        )
    return rows


def arrow_batch(rows: Sequence[tuple], schema):
    """`rows` (in the column order of the Spark StructType `schema`) as one pyarrow Table of that
    schema. The bronze query hands Spark this instead of Python rows: converting a micro-batch of
    thousands of rows row by row cost the speed query's shared cores far more than Arrow's columns."""
    import pyarrow as pa
    from pyspark.sql.pandas.types import to_arrow_schema

    arrow_schema = to_arrow_schema(schema, timezone="UTC")
    columns = list(zip(*rows)) if rows else [()] * len(arrow_schema)
    return pa.Table.from_arrays(
        [pa.array(list(c), type=f.type) for c, f in zip(columns, arrow_schema)], schema=arrow_schema
    )

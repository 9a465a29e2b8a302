"""The replay's input: an event file (JSON lines) or a ratings CSV -> time-ordered events, the cut-off T,
and the pre-T input the batch layer ingests.

Who calls it: `lambdarec.replay.runner` (and the unit tests). Pure except for reading the input and
writing the pre-T copy; nothing here imports Spark.

Rules, chosen to match what the batch ingest would keep:
- every line is validated with the event contract (`validate_event_dict`) against the replay's `now`;
  lines that fail are not replayed (the nightly ingest would have quarantined them);
- an event id seen twice keeps its earliest copy (by event time, then raw text), as ingest does;
- events are ordered by event time, then by their position in the input (a stable total order, so
  several ratings in the same second keep the file's order);
- the cut-off is a midnight UTC, because the nightly batch runs for a date (`as_of`): everything strictly
  before T is the batch's input, everything from T on is replayed.
"""

from __future__ import annotations

import bisect
import csv
import gzip
import io
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import orjson

from feature_store.events import EventTypes, first_copies, validate_event_dict
from feature_store.movielens import RATINGS_HEADER, is_skipped, rating_event

SourceFormat = Literal["jsonl", "movielens"]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DAY_MS = 86_400_000


class ReplayInputError(ValueError):
    """The replay's input or cut-off cannot be used (says what was wrong and what to do)."""


@dataclass(frozen=True, slots=True)
class ReplayEvent:
    """One good event of the input, in the wire form the bus carries plus its raw line."""

    order: int  # position in the input: the tie-break of equal event times
    event_id: str
    user_id: str
    item_id: str
    event_type: str
    ts_ms: int
    value: float | None = None
    context: dict[str, str] | None = None
    raw: bytes = b""

    def wire(self) -> dict[str, Any]:
        """The event as `Event.to_json_dict()` writes it (what `POST /v1/events` would put on the bus)."""
        return {
            "event_id": self.event_id,
            "user_id": self.user_id,
            "item_id": self.item_id,
            "event_type": self.event_type,
            "ts": self.ts_ms,
            "value": self.value,
            "context": self.context,
        }


@dataclass
class ReplaySource:
    """What the input holds: its good events in time order and what the batch ingest needs."""

    format: SourceFormat
    events: list[ReplayEvent]
    bad_lines: list[bytes] = field(default_factory=list)  # rejected by the contract (raw)
    duplicates: int = 0
    catalog_file: Path | None = None
    catalog_items: frozenset[str] = frozenset()

    @property
    def times(self) -> list[int]:
        return [e.ts_ms for e in self.events]


# -- reading -----------------------------------------------------------------------------------
def _open_lines(path: Path) -> Iterator[bytes]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        for line in f:
            line = line.rstrip(b"\r\n")
            if line.strip():
                yield line


def _event_of(decoded: Any, raw: bytes, order: int, now: datetime, types: EventTypes) -> ReplayEvent | None:
    event, _, _ = validate_event_dict(decoded, now=now, future_tolerance=timedelta(0), event_types=types)
    if event is None:
        return None
    wire = event.to_json_dict()
    return ReplayEvent(
        order,
        event.event_id,
        event.user_id,
        event.item_id,
        event.event_type,
        wire["ts"],
        event.value,
        dict(event.context) if event.context else None,
        raw,
    )


def dedupe_and_order(events: Sequence[ReplayEvent]) -> tuple[list[ReplayEvent], int]:
    """The first copy of each event id in input order (feature_store.events.first_copies), ordered by
    (time, input order). Returns the events and how many copies were dropped."""
    kept = first_copies(events, lambda e: e.event_id)
    return sorted(kept, key=lambda e: (e.ts_ms, e.order)), len(events) - len(kept)


def load_source(
    path: Path,
    fmt: SourceFormat,
    now: datetime,
    items: Path | None = None,
    event_types: EventTypes | None = None,
) -> ReplaySource:
    """Read a JSON lines source (a file or a folder as `lambdarec generate` writes it) or a ratings CSV
    (`user,item,rating,timestamp-seconds`, MovieLens layout, header optional)."""
    types = event_types or EventTypes()
    path = Path(path)
    good: list[ReplayEvent] = []
    bad: list[bytes] = []
    if fmt == "jsonl":
        from spark_jobs.sources import SourceError, jsonl_files

        try:
            files, found_catalog = jsonl_files(path)
        except SourceError as exc:
            raise ReplayInputError(str(exc)) from None
        catalog = Path(items) if items else found_catalog
        lines = (line for f in files for line in _open_lines(f))
        for order, line in enumerate(lines):
            try:
                decoded = orjson.loads(line)
            except orjson.JSONDecodeError:
                bad.append(line)
                continue
            event = _event_of(decoded, line, order, now, types)
            (good.append(event) if event else bad.append(line))
    elif fmt == "movielens":
        ratings = path / "ratings.csv" if path.is_dir() else path
        if not ratings.is_file():
            raise ReplayInputError(
                f"{path} is not a ratings CSV (user,item,rating,timestamp) nor a folder with ratings.csv"
            )
        catalog = (
            Path(items)
            if items
            else (ratings.parent / "movies.csv" if (ratings.parent / "movies.csv").is_file() else None)
        )
        for order, line in enumerate(_open_lines(ratings)):
            text = line.decode("utf-8", errors="replace")
            if is_skipped(text):
                continue
            decoded = rating_event(text)
            event = _event_of(decoded, line, order, now, types) if decoded is not None else None
            (good.append(event) if event else bad.append(line))
    else:
        raise ReplayInputError(f"unknown format {fmt!r}: use jsonl or movielens")
    if catalog is not None and not catalog.is_file():
        raise ReplayInputError(f"catalog file {catalog} does not exist")
    events, duplicates = dedupe_and_order(good)
    if not events:
        raise ReplayInputError(f"{path} holds no valid event ({len(bad)} rejected lines)")
    return ReplaySource(
        fmt, events, bad, duplicates, catalog, catalog_item_ids(catalog, fmt) if catalog else frozenset()
    )


def catalog_item_ids(path: Path, fmt: SourceFormat) -> frozenset[str]:
    """Item ids of a catalog: items.jsonl (`item_id`) or a movies CSV (first column)."""
    if fmt == "jsonl":
        ids = set()
        for line in _open_lines(path):
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(row, dict) and isinstance(row.get("item_id"), str) and row["item_id"]:
                ids.add(row["item_id"])
        return frozenset(ids)
    with open(path, newline="", encoding="utf-8") as f:
        rows = csv.reader(f)
        next(rows, None)
        return frozenset(row[0].strip() for row in rows if row and row[0].strip())


# -- the cut-off -------------------------------------------------------------------------------
def midnight_ms(day: date) -> int:
    return int((datetime(day.year, day.month, day.day, tzinfo=UTC) - _EPOCH).total_seconds() * 1000)


def day_of(ms: int) -> date:
    return (_EPOCH + timedelta(milliseconds=ms)).date()


def parse_cutoff(text: str) -> date:
    """`--cutoff YYYY-MM-DD`: the batch runs for that date, so T is its 00:00 UTC."""
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise ReplayInputError(
            f"--cutoff {text!r} is not a date like 2017-06-21 (the nightly batch runs per day)"
        ) from None


def cutoff_for_fraction(times: Sequence[int], fraction: float) -> date:
    """The midnight that leaves the share of events from it on closest to `fraction` (later one on a
    tie), with events on both sides. `times` ascending."""
    if not 0 < fraction < 1:
        raise ReplayInputError(f"--holdout-fraction {fraction} must be between 0 and 1")
    n = len(times)
    first, last = day_of(times[0]), day_of(times[-1])
    best: tuple[float, date] | None = None
    day = first + timedelta(days=1)
    while day <= last:
        after = n - bisect.bisect_left(times, midnight_ms(day))
        if 0 < after < n:
            gap = round(abs(after / n - fraction), 9)  # rounding: a tie stays a tie
            if best is None or gap <= best[0]:
                best = (gap, day)
        day += timedelta(days=1)
    if best is None:
        raise ReplayInputError(
            "all events fall on one day: there is no midnight to cut at; give more days of events"
        )
    return best[1]


def check_cutoff(times: Sequence[int], cutoff: date) -> None:
    at = bisect.bisect_left(times, midnight_ms(cutoff))
    if at == 0 or at == len(times):
        raise ReplayInputError(
            f"cut-off {cutoff} leaves {'no event before it' if at == 0 else 'no event after it'}; events span "
            f"{day_of(times[0])} .. {day_of(times[-1])}"
        )


def split_at(events: Sequence[ReplayEvent], cutoff: date) -> tuple[list[ReplayEvent], list[ReplayEvent]]:
    """(before T, from T on) of time-ordered events."""
    at = bisect.bisect_left([e.ts_ms for e in events], midnight_ms(cutoff))
    return list(events[:at]), list(events[at:])


# -- the batch layer's input -------------------------------------------------------------------
def write_batch_input(source: ReplaySource, cutoff: date, out_dir: Path) -> Path:
    """The input the nightly job at T would have had: every good event before T plus every rejected line
    (ingest quarantines them), in the source's own format; the catalog copied next to it. Returns the
    path to give `spark_jobs.ingest.ingest` with the same format."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    before = [e.raw for e in source.events if e.ts_ms < midnight_ms(cutoff)]
    if source.format == "jsonl":
        events_dir = out_dir / "events"
        events_dir.mkdir(exist_ok=True)
        with open(events_dir / "part-00000.jsonl", "wb") as f:
            for raw in [*before, *source.bad_lines]:
                f.write(raw + b"\n")
        if source.catalog_file:
            shutil.copyfile(source.catalog_file, out_dir / "items.jsonl")
        return out_dir
    buffer = io.BytesIO()
    buffer.write(RATINGS_HEADER.encode() + b"\n")
    for raw in [*before, *source.bad_lines]:
        buffer.write(raw + b"\n")
    (out_dir / "ratings.csv").write_bytes(buffer.getvalue())
    if source.catalog_file:
        shutil.copyfile(source.catalog_file, out_dir / "movies.csv")
    return out_dir

"""The event contract: what a product backend sends, and the one definition both sides derive from.

`Event` (Pydantic) is the single definition of an event. The API validates requests with it, the
streaming job and the batch ingest derive their Spark schema from it (`event_spark_ddl`), and both
apply the same rules (`validate_event_dict` / the Spark twin in spark_jobs.ingest) so a row is either
a good event or a quarantined one with one of the `QuarantineReason`s.

An event id is one fact: of its copies the first to arrive wins and every later one is a re-send,
whatever its fields say (`first_copies`). Arrival is the bus's order for the streaming job and the
input's order for a batch ingest or a replay (files in path order, lines in file order); a copy never
replaces the one already in bronze.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
)

ID_PATTERN = r"^[A-Za-z0-9_\-:.@/]+$"
ID_MAX_LENGTH = 128
# An event's `context` is a handful of short labels (device, page, position, ...). Bounding it keeps one
# sender from filling the bus, bronze rows and the API's memory with a megabyte per event.
CONTEXT_MAX_KEYS = 32
CONTEXT_MAX_BYTES = 4096  # UTF-8 bytes of all keys and values together
# The largest bus entry a valid event can need: every field at its contract limit, serialized as JSON
# with the costliest escapes (6 bytes per character), is about 25 KB (tests/unit/test_events.py).
# A larger entry cannot hold a valid event, so the streaming job quarantines it without decoding it.
MAX_EVENT_WIRE_BYTES = 64 * 1024
Id = Annotated[str, StringConstraints(min_length=1, max_length=ID_MAX_LENGTH, pattern=ID_PATTERN)]


@dataclass(frozen=True)
class EventType:
    """One kind of user event. `weight` is its implicit-feedback strength (negative = negative signal);
    `explicit` marks events whose `value` is a rating."""

    name: str
    weight: float
    explicit: bool = False
    description: str = ""


DEFAULT_EVENT_TYPES: tuple[EventType, ...] = (
    EventType("view", 1.0, description="Item shown in detail (page view, impression clicked through)."),
    EventType("click", 2.0, description="Click on an item from a list."),
    EventType("play", 3.0, description="Playback started (video, music); value = seconds watched."),
    EventType("add_to_cart", 4.0, description="Added to cart or wishlist."),
    EventType("like", 5.0, description="Explicit thumbs-up without a scale."),
    EventType("purchase", 8.0, description="Bought; value = price."),
    EventType("skip", -1.0, description="Skipped or dismissed: a negative implicit signal."),
    EventType("rating", 0.0, explicit=True, description="Explicit rating; value = the rating (e.g. 0.5-5)."),
)


class EventTypes:
    """The declared, extensible set of event types. Extend with `with_types` (from settings or code);
    unknown types are rejected at the edge and quarantined in jobs."""

    def __init__(self, types: Iterable[EventType] = DEFAULT_EVENT_TYPES) -> None:
        self._by_name = {t.name: t for t in types}

    def with_types(self, *extra: EventType) -> EventTypes:
        return EventTypes([*self._by_name.values(), *extra])

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __getitem__(self, name: str) -> EventType:
        return self._by_name[name]

    def __iter__(self):
        return iter(self._by_name.values())

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._by_name)

    def weights(self) -> dict[str, float]:
        return {t.name: t.weight for t in self}

    def explicit_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self if t.explicit)


class QuarantineReason(StrEnum):
    """Why a row did not become an event. Every rejected row carries exactly one."""

    MALFORMED = "malformed"  # not a JSON object / unparseable CSV row
    MISSING_EVENT_ID = "missing_event_id"
    MISSING_USER_ID = "missing_user_id"
    MISSING_ITEM_ID = "missing_item_id"
    INVALID_ID = "invalid_id"  # too long or forbidden characters
    UNKNOWN_EVENT_TYPE = "unknown_event_type"
    BAD_TIMESTAMP = "bad_timestamp"
    FUTURE_TIMESTAMP = "future_timestamp"
    BAD_VALUE = "bad_value"  # value not a number, or a rating without a value
    CONTEXT_TOO_LARGE = "context_too_large"  # more than CONTEXT_MAX_KEYS keys or CONTEXT_MAX_BYTES bytes
    DUPLICATE_EVENT_ID = "duplicate_event_id"
    OVERSIZE = "oversize"  # a bus entry above the streaming job's byte limit, rejected before decoding


# Reasons about the bus entry rather than the event: only the streaming job gives them.
BUS_ENTRY_REASONS: frozenset[QuarantineReason] = frozenset({QuarantineReason.OVERSIZE})

# Order in which reasons are checked, so a row with several problems always gets the same reason.
REASON_PRIORITY: tuple[QuarantineReason, ...] = tuple(QuarantineReason)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ISO_FRACTION = re.compile(r"^(\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2})(\.\d+)?(Z|[+-]\d{2}:?\d{2})?$")


def parse_event_time(raw: Any) -> datetime:
    """Event time from ISO-8601 (with offset or Z; naive means UTC) or epoch milliseconds, as aware UTC.

    Raises ValueError with what was wrong."""
    if isinstance(raw, bool) or raw is None:
        raise ValueError("ts is required: ISO-8601 string or epoch milliseconds")
    if isinstance(raw, datetime):
        return raw.replace(tzinfo=UTC) if raw.tzinfo is None else raw.astimezone(UTC)
    try:
        if isinstance(raw, (int, float)) or (
            isinstance(raw, str) and re.fullmatch(r"-?\d+(\.\d+)?", raw.strip())
        ):
            millis = float(raw)
            return _EPOCH + timedelta(milliseconds=millis)
        if isinstance(raw, str):
            text = raw.strip()
            if not _ISO_FRACTION.match(text):
                raise ValueError(f"ts {raw!r} is neither ISO-8601 nor epoch milliseconds")
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
            return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except OverflowError as exc:  # e.g. 1e20 ms: outside years 1-9999; a bad timestamp, not a crash
        raise ValueError(f"ts {raw!r} is outside the years 1-9999") from exc
    raise ValueError(f"ts of type {type(raw).__name__} is neither ISO-8601 nor epoch milliseconds")


class Event(BaseModel):
    """One user event, as a product backend sends it (POST /v1/events, the event bus, event files)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    event_id: Id = Field(description="Unique id chosen by the sender; the dedupe key.")
    user_id: Id = Field(description="Who did it.")
    item_id: Id = Field(description="What it was done to.")
    event_type: str = Field(description="One of the declared event types (view, click, add_to_cart, ...).")
    ts: datetime = Field(description="Event time: ISO-8601 or epoch milliseconds; stored as UTC.")
    value: float | None = Field(None, description="Rating, price or watch seconds, by event type.")
    context: dict[str, str] | None = Field(None, description="Device, page, position, category, ...")

    @field_validator("event_type")
    @classmethod
    def _known_type(cls, value: str, info: ValidationInfo) -> str:
        types: EventTypes = (info.context or {}).get("event_types") or EventTypes()
        if value not in types:
            raise ValueError(f"unknown event_type {value!r}; declared: {', '.join(types.names)}")
        return value

    @field_validator("ts", mode="before")
    @classmethod
    def _parse_ts(cls, value: Any) -> datetime:
        return parse_event_time(value)

    @field_validator("context", mode="before")
    @classmethod
    def _stringify_context(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            return {str(k): str(v) for k, v in value.items() if v is not None}
        return value

    def to_json_dict(self) -> dict[str, Any]:
        """The wire form: ts as epoch milliseconds (what the bus and event files carry)."""
        return {
            "event_id": self.event_id,
            "user_id": self.user_id,
            "item_id": self.item_id,
            "event_type": self.event_type,
            "ts": int(round((self.ts - _EPOCH).total_seconds() * 1000)),
            "value": self.value,
            "context": self.context,
        }


_FIELD_REASONS = {
    "event_id": QuarantineReason.MISSING_EVENT_ID,
    "user_id": QuarantineReason.MISSING_USER_ID,
    "item_id": QuarantineReason.MISSING_ITEM_ID,
    "event_type": QuarantineReason.UNKNOWN_EVENT_TYPE,
    "ts": QuarantineReason.BAD_TIMESTAMP,
    "value": QuarantineReason.BAD_VALUE,
    "context": QuarantineReason.MALFORMED,
}


def reason_for(error: ValidationError, raw: Mapping[str, Any]) -> QuarantineReason:
    """The quarantine reason of a failed validation: the highest-priority field that failed."""
    reasons = set()
    for err in error.errors():
        field = str(err["loc"][0]) if err["loc"] else ""
        reason = _FIELD_REASONS.get(field, QuarantineReason.MALFORMED)
        if field in ("event_id", "user_id", "item_id") and raw.get(field) not in (None, ""):
            reason = QuarantineReason.INVALID_ID
        reasons.add(reason)
    return min(reasons, key=REASON_PRIORITY.index)


def context_excess(context: Mapping[str, str] | None) -> str:
    """What makes a (stringified) context too large for the contract, or "" when it fits."""
    if not context:
        return ""
    if len(context) > CONTEXT_MAX_KEYS:
        return f"context has {len(context)} keys; at most {CONTEXT_MAX_KEYS}"
    size = sum(len(k.encode()) + len(v.encode()) for k, v in context.items())
    if size > CONTEXT_MAX_BYTES:
        return f"context holds {size} bytes of keys and values; at most {CONTEXT_MAX_BYTES}"
    return ""


def validate_event_dict(
    raw: Any,
    *,
    now: datetime,
    future_tolerance: timedelta,
    event_types: EventTypes | None = None,
) -> tuple[Event | None, QuarantineReason | None, str]:
    """Validate one decoded event: (event, None, "") when good, else (None, reason, detail).

    Same rules as the Spark ingest: ids present and well-formed, declared type, parseable time not
    further than `future_tolerance` past `now`, a numeric value (required for explicit types), a
    context within CONTEXT_MAX_KEYS / CONTEXT_MAX_BYTES."""
    types = event_types or EventTypes()
    if not isinstance(raw, Mapping):
        return None, QuarantineReason.MALFORMED, "event is not a JSON object"
    try:
        event = Event.model_validate(raw, context={"event_types": types})
    except ValidationError as exc:
        first = exc.errors()[0]
        return None, reason_for(exc, raw), f"{'.'.join(map(str, first['loc']))}: {first['msg']}"
    oversize = context_excess(event.context)
    if oversize:
        return None, QuarantineReason.CONTEXT_TOO_LARGE, oversize
    if event.ts > now + future_tolerance:
        return (
            None,
            QuarantineReason.FUTURE_TIMESTAMP,
            f"ts {event.ts.isoformat()} is after {now.isoformat()}",
        )
    if types[event.event_type].explicit and event.value is None:
        return None, QuarantineReason.BAD_VALUE, f"{event.event_type} needs a value"
    return event, None, ""


_SPARK_TYPES = {
    "event_id": "STRING",
    "user_id": "STRING",
    "item_id": "STRING",
    "event_type": "STRING",
    "ts": "TIMESTAMP",
    "value": "DOUBLE",
    "context": "MAP<STRING, STRING>",
}


def event_spark_ddl(raw_ts: bool = False) -> str:
    """Spark DDL of the event, derived from `Event`'s fields (so the two cannot drift).

    `raw_ts=True` keeps `ts` as a string, for parsing JSON whose ts may be ISO-8601 or epoch millis."""
    missing = set(Event.model_fields) - set(_SPARK_TYPES)
    if missing:
        raise RuntimeError(f"Event fields without a Spark type: {sorted(missing)}")
    return ", ".join(
        f"{name} {'STRING' if (raw_ts and name == 'ts') else _SPARK_TYPES[name]}"
        for name in Event.model_fields
    )


T = TypeVar("T")


def first_copies(arrivals: Iterable[T], event_id: Callable[[T], str]) -> list[T]:
    """The first copy of each event id, in arrival order (the contract's de-duplication rule)."""
    seen: set[str] = set()
    kept = []
    for arrival in arrivals:
        key = event_id(arrival)
        if key not in seen:
            seen.add(key)
            kept.append(arrival)
    return kept

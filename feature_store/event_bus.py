"""The event bus wire format (a Redis Stream) and the thin publish/trim helpers around it.

Who calls it: the API (`POST /v1/events`, async twin), `lambdarec events publish` (sync), the
streaming job's Redis Stream source (decode, entry ids, the committed offset) and the freshness
benchmark.

Wire format: one stream entry per event in the stream `Settings.event_stream`, with one field
`event` whose value is the JSON of `Event.to_json_dict()` (ts as epoch milliseconds). Entry ids are
assigned by Redis (`*`), so the millisecond part of an id is the moment the event reached the bus
("bus time"), which the streaming job uses to measure freshness.

Trimming never drops unread events: each streaming query records the last offset Spark committed in
the hash `RedisKeys.stream_committed(stream)`, and trimming only removes entries below the lowest of
them (`XTRIM MINID`).
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, NamedTuple

import orjson

from feature_store.events import Event
from feature_store.redis_keys import RedisKeys

EVENT_FIELD = "event"
# The lowest possible entry id: XRANGE from here reads the whole stream.
STREAM_START = "0-0"


class EntryId(NamedTuple):
    """A Redis Stream entry id `<ms>-<seq>`; tuples compare in stream order."""

    ms: int
    seq: int

    def __str__(self) -> str:
        return f"{self.ms}-{self.seq}"


class BadEntryId(ValueError):
    """A string that is not a Redis Stream entry id (`<ms>-<seq>`)."""


def parse_entry_id(raw: str | bytes) -> EntryId:
    text = raw.decode() if isinstance(raw, bytes) else raw
    ms, sep, seq = text.partition("-")
    try:
        return EntryId(int(ms), int(seq) if sep else 0)
    except ValueError:
        raise BadEntryId(f"{text!r} is not a stream entry id like 1700000000000-0") from None


def entry_time_ms(entry_id: str | bytes) -> int:
    """Bus time of an entry: the millisecond part of the id Redis assigned at XADD."""
    return parse_entry_id(entry_id).ms


def max_entry_id(ids: Iterable[str | bytes]) -> str | None:
    parsed = [parse_entry_id(i) for i in ids]
    return str(max(parsed)) if parsed else None


# -- encode / decode ---------------------------------------------------------------------------
def encode_event(event: Event) -> bytes:
    """The payload of one stream entry: JSON of the event's wire form."""
    return orjson.dumps(event.to_json_dict())


def encode_payload(event: Event | Mapping[str, Any] | str | bytes) -> bytes:
    """Payload for an Event, an already-decoded dict (sent as is) or a raw JSON line (sent verbatim:
    replays of files whose bad lines the streaming job must quarantine)."""
    if isinstance(event, Event):
        return encode_event(event)
    if isinstance(event, bytes):
        return event
    if isinstance(event, str):
        return event.encode()
    return orjson.dumps(dict(event))


def entry_fields(event: Event | Mapping[str, Any] | str | bytes) -> dict[str, bytes]:
    return {EVENT_FIELD: encode_payload(event)}


def entry_payload(fields: Mapping[Any, Any]) -> str | None:
    """The event JSON of one entry's fields (bytes or str keys), or None when the entry has no
    `event` field (written by something that does not speak the wire format: quarantined)."""
    value = fields.get(EVENT_FIELD, fields.get(EVENT_FIELD.encode()))
    if value is None:
        return None
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def decode_payload(payload: str | bytes) -> Any:
    """The decoded JSON of a payload (any JSON value; validation decides whether it is an event).
    Raises ValueError when it is not JSON."""
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from exc


# -- publish -----------------------------------------------------------------------------------
def committed_key(stream: str) -> str:
    return RedisKeys().stream_committed(stream)


# Trim to MINID = the lowest offset any consumer (streaming query) committed, but only when the stream
# has grown beyond `maxlen`; trims nothing while no consumer has committed. Atomic, so a commit cannot
# move under it.
_TRIM_CONSUMED = """
local lowest, lowest_ms, lowest_seq
for _, id in ipairs(redis.call('HVALS', KEYS[2])) do
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  ms, seq = tonumber(ms), tonumber(seq)
  if ms and (not lowest or ms < lowest_ms or (ms == lowest_ms and seq < lowest_seq)) then
    lowest, lowest_ms, lowest_seq = id, ms, seq
  end
end
if not lowest then return 0 end
local maxlen = tonumber(ARGV[1])
if maxlen >= 0 and redis.call('XLEN', KEYS[1]) <= maxlen then return 0 end
return redis.call('XTRIM', KEYS[1], 'MINID', lowest)
"""


def _queue_publish(pipe, stream: str, events: Iterable[Event | Mapping[str, Any] | str | bytes], maxlen: int | None) -> int:
    """Queue the XADDs (and the guarded trim) on a pipeline; returns how many events were queued."""
    count = 0
    for event in events:
        pipe.xadd(stream, entry_fields(event))
        count += 1
    if maxlen is not None:
        pipe.eval(_TRIM_CONSUMED, 2, stream, committed_key(stream), maxlen)
    return count


def publish_events(client, stream: str, events: Iterable[Event | Mapping[str, Any] | str | bytes], maxlen: int | None = None) -> list[str]:
    """Append events to the bus in one pipelined round trip; returns their entry ids.

    `maxlen`: when the stream is longer than this afterwards, drop the entries the streaming job has
    already committed (never unread ones, so the stream may stay longer than `maxlen`)."""
    pipe = client.pipeline(transaction=False)
    count = _queue_publish(pipe, stream, events, maxlen)
    replies = pipe.execute() if len(pipe) else []
    return [_text(r) for r in replies[:count]]


async def publish_events_async(client, stream: str, events: Iterable[Event | Mapping[str, Any] | str | bytes], maxlen: int | None = None) -> list[str]:
    """`publish_events` for a `redis.asyncio` client (the API)."""
    pipe = client.pipeline(transaction=False)
    count = _queue_publish(pipe, stream, events, maxlen)
    replies = await pipe.execute() if len(pipe) else []
    return [_text(r) for r in replies[:count]]


def trim_consumed(client, stream: str, maxlen: int | None = None) -> int:
    """Drop every entry below the lowest offset the streaming queries committed (XTRIM MINID), when
    the stream is longer than `maxlen` (always when None); returns how many were dropped."""
    return int(client.eval(_TRIM_CONSUMED, 2, stream, committed_key(stream), -1 if maxlen is None else maxlen))


def record_committed(client, stream: str, consumer: str, entry_id: str) -> None:
    """Remember the last entry id Spark committed for one consumer (a streaming query); called by the
    stream source's `commit`."""
    client.hset(committed_key(stream), consumer, entry_id)


def read_committed(client, stream: str) -> dict[str, str]:
    """consumer -> last committed entry id."""
    return {_text(k): _text(v) for k, v in client.hgetall(committed_key(stream)).items()}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)

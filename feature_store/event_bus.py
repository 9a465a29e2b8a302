"""The event bus wire format (a Redis Stream, or a Kafka topic) and the thin publish/trim helpers
around it.

Who calls it: the API (`POST /v1/events`, async twin), `lambdarec events publish` (sync), the
streaming job's Redis Stream source (decode, entry ids, the committed offset) and the freshness
benchmark. `open_publisher` picks the bus from settings: `RedisStreamPublisher` or `KafkaPublisher`
behind one `EventPublisher` interface.

Kafka: one message per event on `Settings.kafka.topic`, value = the same JSON as a stream entry's
`event` field, key = the user id; bus id `<partition>-<offset>`, bus time = the broker's append time.

Wire format: one stream entry per event in the stream `Settings.bus.stream`, with one field
`event` whose value is the JSON of `Event.to_json_dict()` (ts as epoch milliseconds). Entry ids are
assigned by Redis (`*`), so the millisecond part of an id is the moment the event reached the bus
("bus time"), which the streaming job uses to measure freshness.

Trimming never drops unread events: each streaming query records the last offset Spark committed in
the hash `RedisKeys.stream_committed(stream)`, and trimming only removes entries below the lowest of
them (`XTRIM MINID`).

Why one module: both buses, their one wire format and the commit/trim rules that the publisher, the
stream source and the watchdog must agree on are read side by side here.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple, Protocol

import orjson

from feature_store.events import Event
from feature_store.redis_keys import RedisKeys
from feature_store.settings import Settings

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


# Stream ids compare as numbers (ms, seq), not as strings ("9-0" < "10-0"); nil, nil if malformed.
_LUA_PARSE_ID = """
local function parse_id(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
"""

# Trim to MINID = the lowest offset any consumer (streaming query) committed, but only when the stream
# has grown beyond `maxlen`; trims nothing while no consumer has committed. Atomic, so a commit cannot
# move under it.
_TRIM_CONSUMED = (
    _LUA_PARSE_ID
    + """
local lowest, lowest_ms, lowest_seq
for _, id in ipairs(redis.call('HVALS', KEYS[2])) do
  local ms, seq = parse_id(id)
  if ms and (not lowest or ms < lowest_ms or (ms == lowest_ms and seq < lowest_seq)) then
    lowest, lowest_ms, lowest_seq = id, ms, seq
  end
end
if not lowest then return 0 end
local maxlen = tonumber(ARGV[1])
if maxlen >= 0 and redis.call('XLEN', KEYS[1]) <= maxlen then return 0 end
return redis.call('XTRIM', KEYS[1], 'MINID', lowest)
"""
)


class BusBacklogFull(RuntimeError):
    """The bus stream holds more entries than the backlog cap: the streaming job is behind or stalled.
    Nothing of the refused batch was published."""

    def __init__(self, length: int, cap: int) -> None:
        super().__init__(
            f"the event bus holds {length} entries and its backlog cap is {cap} (LAMBDAREC_EVENT_STREAM_MAX_BACKLOG): "
            "the streaming job is behind or stalled"
        )
        self.length = length
        self.cap = cap


# Append a batch of payloads as one atomic step: all of them or none (a script runs whole; when Redis is
# out of memory its first write fails, before anything was added), refused while the stream would go
# above the backlog cap (ARGV[1], -1 = no cap). ARGV[2] is the entry's field name, then the payloads.
# Returns the entry ids.
_PUBLISH = """
local cap = tonumber(ARGV[1])
if cap >= 0 then
  local length = redis.call('XLEN', KEYS[1])
  if length + #ARGV - 2 > cap then return redis.error_reply('BACKLOG ' .. length .. ' ' .. cap) end
end
local ids = {}
for i = 3, #ARGV do ids[#ids + 1] = redis.call('XADD', KEYS[1], '*', ARGV[2], ARGV[i]) end
return ids
"""


def _queue_publish(
    pipe,
    stream: str,
    events: Iterable[Event | Mapping[str, Any] | str | bytes],
    maxlen: int | None,
    max_backlog: int | None,
) -> bool:
    """Queue the atomic append (and the guarded trim) on a pipeline; False when there is nothing to send."""
    payloads = [encode_payload(event) for event in events]
    if not payloads:
        return False
    # EVAL by name: redis-py's (sync) cluster pipeline refuses its eval() but routes the command by its keys
    cap = -1 if max_backlog is None else max_backlog
    pipe.execute_command("EVAL", _PUBLISH, 1, stream, cap, EVENT_FIELD, *payloads)
    if maxlen is not None:
        pipe.execute_command("EVAL", _TRIM_CONSUMED, 2, stream, committed_key(stream), maxlen)
    return True


def _published_ids(replies: list) -> list[str]:
    """The entry ids of the append, or BusBacklogFull when the cap refused it."""
    first = replies[0]
    if isinstance(first, Exception):
        message = str(first)
        if message.startswith("BACKLOG "):
            length, cap = message.split()[1:3]
            raise BusBacklogFull(int(length), int(cap))
        raise first
    return [_text(r) for r in first]


def publish_events(
    client,
    stream: str,
    events: Iterable[Event | Mapping[str, Any] | str | bytes],
    maxlen: int | None = None,
    max_backlog: int | None = None,
) -> list[str]:
    """Append events to the bus, all or none, in one round trip; returns their entry ids.

    `maxlen`: when the stream is longer than this afterwards, drop the entries the streaming job has
    already committed (never unread ones, so the stream may stay longer than `maxlen`).
    `max_backlog`: refuse the whole batch (BusBacklogFull) when the stream would hold more entries."""
    pipe = client.pipeline(transaction=False)
    if not _queue_publish(pipe, stream, events, maxlen, max_backlog):
        return []
    return _published_ids(pipe.execute(raise_on_error=False))


async def publish_events_async(
    client,
    stream: str,
    events: Iterable[Event | Mapping[str, Any] | str | bytes],
    maxlen: int | None = None,
    max_backlog: int | None = None,
) -> list[str]:
    """`publish_events` for a `redis.asyncio` client (the API)."""
    pipe = client.pipeline(transaction=False)
    if not _queue_publish(pipe, stream, events, maxlen, max_backlog):
        return []
    return _published_ids(await pipe.execute(raise_on_error=False))


def trim_consumed(client, stream: str, maxlen: int | None = None) -> int:
    """Drop every entry below the lowest offset the streaming queries committed (XTRIM MINID), when
    the stream is longer than `maxlen` (always when None); returns how many were dropped."""
    return int(
        client.eval(_TRIM_CONSUMED, 2, stream, committed_key(stream), -1 if maxlen is None else maxlen)
    )


# Move one consumer's committed offset forward only: Spark commits a micro-batch to its source when the
# next one runs, after the query's own writer already recorded that batch's newest entry.
_RECORD_COMMITTED = (
    _LUA_PARSE_ID
    + """
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current then
  local cms, cseq = parse_id(current)
  local nms, nseq = parse_id(ARGV[2])
  if cms and nms and (cms > nms or (cms == nms and cseq >= nseq)) then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""
)


def record_committed(client, stream: str, consumer: str, entry_id: str) -> bool:
    """Remember the newest entry id one consumer (a streaming query) has durably applied: called by the
    query's writer once a micro-batch's effects are stored, and by the stream source's `commit`. Never
    moves an offset back; returns whether it moved."""
    return bool(client.eval(_RECORD_COMMITTED, 1, committed_key(stream), consumer, entry_id))


def newest_entry_id(entry_ids: Iterable[str]) -> str | None:
    """The newest of some bus entry ids (`<ms>-<seq>`, compared as numbers), None when there are none."""
    return max(entry_ids, key=lambda entry_id: tuple(map(int, entry_id.split("-", 1))), default=None)


def register_consumer(client, stream: str, consumer: str) -> None:
    """Make a streaming query count for trimming before its first commit (at the stream's start, unless
    it committed before): a query that never got to commit, e.g. bronze stalled since start-up, then
    keeps every entry on the bus instead of being left out of the lowest offset."""
    client.hsetnx(committed_key(stream), consumer, STREAM_START)


def committed_offset(client, stream: str, consumer: str) -> str | None:
    """The last entry id one consumer committed, if any."""
    value = client.hget(committed_key(stream), consumer)
    return _text(value) if value is not None else None


def read_committed(client, stream: str) -> dict[str, str]:
    """consumer -> last committed entry id."""
    return {_text(k): _text(v) for k, v in client.hgetall(committed_key(stream)).items()}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# -- publishers: one interface, one implementation per bus ------------------------------------------
Payload = Event | Mapping[str, Any] | str | bytes


class EventBusUnavailable(RuntimeError):
    """The bus did not take the events (broker unreachable, delivery failed): nothing is known to be
    published; the caller may retry (every sink counts an event id once)."""


def nothing_published(error: BaseException) -> bool:
    """Whether a failed publish certainly left none of its batch on the bus: refused by the backlog cap,
    or the connection to the bus never opened. Any other failure (a time-out, a connection lost before
    the reply, a broker's delivery error) may come after the batch reached the bus."""
    if isinstance(error, BusBacklogFull):
        return True
    return isinstance(error.__cause__ or error.__context__, ConnectionRefusedError)


class EventPublisher(Protocol):
    """Puts events on the bus the settings name; returns one bus id per event, in order.
    `publish` for synchronous callers (CLI, benchmarks), `publish_async` for the API's event loop
    (it never blocks the loop)."""

    destination: str

    def publish(self, events: Iterable[Payload]) -> list[str]: ...

    async def publish_async(self, events: Iterable[Payload]) -> list[str]: ...

    def close(self) -> None: ...


class RedisStreamPublisher:
    """The Redis Stream bus. `client` is a redis-py client for `publish`, a `redis.asyncio` one for
    `publish_async`; `maxlen` trims what every streaming query has committed, `max_backlog` refuses a
    batch (BusBacklogFull) that would take the stream above it (see publish_events)."""

    def __init__(
        self, client, stream: str, maxlen: int | None = None, max_backlog: int | None = None
    ) -> None:
        self.client, self.stream, self.maxlen, self.max_backlog = client, stream, maxlen, max_backlog
        self.destination = stream

    def publish(self, events: Iterable[Payload]) -> list[str]:
        return publish_events(
            self.client, self.stream, events, maxlen=self.maxlen, max_backlog=self.max_backlog
        )

    async def publish_async(self, events: Iterable[Payload]) -> list[str]:
        return await publish_events_async(
            self.client, self.stream, events, maxlen=self.maxlen, max_backlog=self.max_backlog
        )

    def close(self) -> None:
        """The client belongs to the caller."""


def kafka_producer_config(bootstrap: str, linger_ms: float) -> dict[str, Any]:
    """Idempotent producer, acks from every in-sync replica: a retried send is never written twice
    and an acknowledged event survives a broker failover."""
    return {
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": linger_ms,
        # Give up on a message after 30 s (librdkafka's default is 5 min): the caller hears of it
        # while the request that sent it may still retry.
        "message.timeout.ms": 30_000,
    }


def kafka_message_key(event: Payload) -> bytes | None:
    """Messages are keyed by user, so one user's events keep their order in one partition; raw
    payloads that are not an object with a user id go without a key."""
    if isinstance(event, Event):
        return event.user_id.encode()
    if isinstance(event, Mapping):
        user = event.get("user_id")
        return user.encode() if isinstance(user, str) else None
    return None


def kafka_entry_id(partition: int, offset: int) -> str:
    """A Kafka message's bus id, `<partition>-<offset>`: the same as the streaming job's `entry_id`."""
    return f"{partition}-{offset}"


class KafkaPublisher:
    """The Kafka bus: one message per event, value = the same JSON as a stream entry's `event` field,
    key = the user id. `publish_async` queues the messages and awaits their delivery reports, which a
    daemon thread serves (`Producer.poll`), so the event loop never waits on the network."""

    def __init__(self, producer, topic: str) -> None:
        self.producer, self.topic = producer, topic
        self.destination = f"kafka:{topic}"
        self._poller: Any = None
        self._closing = False

    @classmethod
    def connect(cls, bootstrap: str, topic: str, linger_ms: float = 1.0) -> KafkaPublisher:
        from confluent_kafka import Producer

        return cls(Producer(kafka_producer_config(bootstrap, linger_ms)), topic)

    def _produce(self, events: Iterable[Payload], on_delivery) -> int:
        from confluent_kafka import KafkaException

        count = 0
        for index, event in enumerate(events):
            while True:
                try:
                    self.producer.produce(
                        self.topic,
                        value=encode_payload(event),
                        key=kafka_message_key(event),
                        on_delivery=lambda err, msg, index=index: on_delivery(index, err, msg),
                    )
                    break
                except BufferError:  # the local queue is full: serve delivery reports, then retry
                    self.producer.poll(0.05)
                except KafkaException as exc:
                    raise EventBusUnavailable(f"Kafka refused an event for {self.topic!r}: {exc}") from exc
            count += 1
        return count

    def publish(self, events: Iterable[Payload], timeout_s: float = 30.0) -> list[str]:
        reports: dict[int, tuple[Any, Any]] = {}
        count = self._produce(events, lambda index, err, msg: reports.__setitem__(index, (err, msg)))
        deadline = time.monotonic() + timeout_s
        while len(reports) < count and time.monotonic() < deadline:
            self.producer.flush(max(0.0, deadline - time.monotonic()))
        return _delivered_ids([reports.get(i) for i in range(count)], self.topic)

    async def publish_async(self, events: Iterable[Payload]) -> list[str]:
        import asyncio

        loop = asyncio.get_running_loop()
        self._start_poller()
        batch = list(events)
        futures = [loop.create_future() for _ in batch]

        def delivered(index: int, err, msg) -> None:
            loop.call_soon_threadsafe(_settle, futures[index], (err, msg))

        self._produce(batch, delivered)
        return _delivered_ids(list(await asyncio.gather(*futures)), self.topic)

    def _start_poller(self) -> None:
        import threading

        if self._poller is None:

            def serve_reports() -> None:
                while not self._closing:
                    self.producer.poll(0.05)

            self._poller = threading.Thread(target=serve_reports, name="kafka-delivery-reports", daemon=True)
            self._poller.start()

    def close(self, timeout_s: float = 10.0) -> None:
        """Deliver what is queued, then stop serving delivery reports."""
        self.producer.flush(timeout_s)
        self._closing = True
        if self._poller is not None:
            self._poller.join(timeout=1.0)


def _settle(future, report) -> None:
    if not future.done():
        future.set_result(report)


def _delivered_ids(reports: list, topic: str) -> list[str]:
    """Bus ids of delivered messages; EventBusUnavailable when any was not delivered."""
    ids = []
    for report in reports:
        if report is None:
            raise EventBusUnavailable(f"Kafka did not confirm delivery to {topic!r} in time")
        err, msg = report
        if err is not None:
            raise EventBusUnavailable(f"Kafka did not take an event for {topic!r}: {err}")
        ids.append(kafka_entry_id(msg.partition(), msg.offset()))
    return ids


def open_publisher(
    settings: Settings, *, redis_client=None, kafka_bootstrap: str | None = None, trim: bool = True
) -> EventPublisher:
    """The publisher of the bus `settings.bus.kind` names (the one place that chooses).
    Redis Stream: `redis_client` (sync or asyncio, see RedisStreamPublisher), trimming committed
    entries when `trim`. Kafka: `kafka_bootstrap`, default `settings.kafka.bootstrap_servers`."""
    if settings.bus.kind == "kafka":
        bootstrap = kafka_bootstrap or settings.kafka.bootstrap_servers
        if not bootstrap:
            raise ValueError(
                "LAMBDAREC_EVENT_BUS=kafka needs LAMBDAREC_KAFKA_BOOTSTRAP_SERVERS (or `lambdarec kafka start`)"
            )
        return KafkaPublisher.connect(bootstrap, settings.kafka.topic, settings.kafka.linger_ms)
    if redis_client is None:
        raise ValueError("the Redis Stream bus needs a Redis client")
    return RedisStreamPublisher(
        redis_client,
        settings.bus.stream,
        settings.bus.stream_maxlen if trim else None,
        settings.bus.stream_max_backlog,
    )

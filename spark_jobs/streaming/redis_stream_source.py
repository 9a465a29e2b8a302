"""A Spark streaming source over a Redis Stream (the default event bus), on Spark 4's Python data
source API. The speed job registers it (`register_redis_stream_source`) and reads the bus with
`spark.readStream.format("redis_stream")`.

- Offsets are stream entry ids (`{"id": "<ms>-<seq>"}`): Spark's checkpoint decides what was read, a
  micro-batch holds the entries in `(start, end]`, and a restarted query replays exactly the batch it
  had planned (`readBetweenOffsets`).
- A simple reader (`SimpleDataSourceStreamReader`): the driver's source process reads a micro-batch
  when it plans it and hands the rows over with the plan, so no executor task reads the bus.
- Admission control: `max_rows_per_batch` caps the entries of one micro-batch, `max_bytes_per_batch`
  their payload bytes (sizes summed server side), so the driver never holds more; a batch always takes
  at least one entry. `Trigger.AvailableNow` stops at the newest entry when it was asked.
- Oversize entries: a payload above `max_event_bytes` never leaves Redis whole: the row carries its
  first `OVERSIZE_PREFIX_BYTES` and its true size, and the job quarantines it (reason `oversize`)
  without decoding it.
- `commit(end)` records the committed offset per query in `RedisKeys.stream_committed(stream)`, so
  trimming (feature_store.event_bus) never drops an entry a query has not committed. Spark commits a
  micro-batch's offsets to its source only once the next micro-batch has run, so each query's writer
  also records its batch's newest entry once the batch's effects are stored (`record_applied` in the
  speed job); the record only moves forward.
- Redis going away never kills the query: planning reports "no new data" until Redis answers again,
  and reading a planned batch retries with capped backoff, then catches up.

Rows: `entry_id` (string), `bus_time_ms` (the ms part of the id: when the event reached the bus),
`raw` (the entry's `event` field as text, only its first bytes when oversize; null when the entry has
no such field), `size_bytes` (the `event` field's size in bytes; 0 without one).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

from pyspark.sql.datasource import DataSource, SimpleDataSourceStreamReader
from pyspark.sql.streaming.datasource import SupportsTriggerAvailableNow
from pyspark.sql.types import LongType, StringType, StructField, StructType

from feature_store.event_bus import (
    EVENT_FIELD,
    STREAM_START,
    committed_offset,
    entry_time_ms,
    parse_entry_id,
    record_committed,
)
from feature_store.redis_cluster import open_redis

SOURCE_NAME = "redis_stream"
SOURCE_SCHEMA = StructType(
    [
        StructField("entry_id", StringType(), False),
        StructField("bus_time_ms", LongType(), False),
        StructField("raw", StringType(), True),
        StructField("size_bytes", LongType(), False),
    ]
)
READ_PAGE = 2_000  # entries per XRANGE page of a read
PLAN_PAGE = 100  # entries the planning script holds at once (their payloads sit in Redis's Lua memory)
OVERSIZE_PREFIX_BYTES = 256  # what an oversize entry's row carries of its payload (for the quarantine)
NO_LIMIT = 1 << 53  # a byte limit that never applies (exact in Lua's doubles)

log = logging.getLogger(__name__)
T = TypeVar("T")

# The end of the next micro-batch after ARGV[1]: at most ARGV[2] entries (0 = no cap) and at most
# ARGV[3] payload bytes (an oversize entry, above ARGV[5], counts as the prefix it ships), but always one
# entry; sizes are those of field ARGV[4]. Computed server side so only one id travels; false when
# there is no entry after the start.
_BATCH_END = """
local after, max_rows, budget = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local field, max_event, prefix, page = ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local rows, bytes, last = 0, 0, false
while max_rows == 0 or rows < max_rows do
  local want = page
  if max_rows > 0 and max_rows - rows < want then want = max_rows - rows end
  local entries = redis.call('XRANGE', KEYS[1], '(' .. after, '+', 'COUNT', want)
  if #entries == 0 then break end
  for _, entry in ipairs(entries) do
    local size, fields = 0, entry[2]
    for i = 1, #fields, 2 do
      if fields[i] == field then size = #fields[i + 1] end
    end
    if size > max_event then size = prefix end
    if rows > 0 and bytes + size > budget then return last end
    rows, bytes, last = rows + 1, bytes + size, entry[1]
  end
  after = entries[#entries][1]
end
return last
"""

# One page of entries in (ARGV[1], ARGV[2]], at most ARGV[3]: {id, size of field ARGV[4] (-1 without
# one), its value (only the first ARGV[6] bytes when larger than ARGV[5])}.
_READ_PAGE = """
local out = {}
for _, entry in ipairs(redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], ARGV[2], 'COUNT', ARGV[3])) do
  local size, value, fields = -1, '', entry[2]
  for i = 1, #fields, 2 do
    if fields[i] == ARGV[4] then size, value = #fields[i + 1], fields[i + 1] end
  end
  if size > tonumber(ARGV[5]) then value = string.sub(value, 1, tonumber(ARGV[6])) end
  out[#out + 1] = {entry[1], size, value}
end
return out
"""


def id_after(a: str, b: str) -> bool:
    return parse_entry_id(a) > parse_entry_id(b)


def latest_allowed(start: str, newest: str | None, nth: str | None, target: str | None) -> str:
    """The end offset of the next micro-batch: the newest entry, or the `max_rows`-th one when
    admission control applies (`nth`), never beyond an AvailableNow `target`, never before `start`."""
    end = nth if nth is not None else newest
    if end is None or not id_after(end, start):
        return start
    if target is not None and id_after(end, target):
        end = target if id_after(target, start) else start
    return end


def read_rows(client, stream: str, after: str, until: str, max_event_bytes: int | None) -> Iterator[tuple]:
    """Rows of the entries in `(after, until]`, a page at a time."""
    while id_after(until, after):
        page = client.eval(
            _READ_PAGE,
            1,
            stream,
            after,
            until,
            READ_PAGE,
            EVENT_FIELD,
            max_event_bytes or NO_LIMIT,
            OVERSIZE_PREFIX_BYTES,
        )
        if not page:
            return  # trimmed below or gone: nothing left in the range
        for entry_id, size, value in page:
            text = entry_id.decode()
            raw = value.decode("utf-8", errors="replace") if size >= 0 else None
            yield text, entry_time_ms(text), raw, max(0, size)
        after = page[-1][0].decode()


# Set by the job when it is asked to stop: retries give up, so a stop is never stuck behind a Redis
# outage (the unfinished micro-batch is not committed and runs again at the next start).
STOPPING = threading.Event()


class JobStopping(RuntimeError):
    """The job is stopping while Redis is unavailable: the micro-batch is abandoned, not lost."""


def retry_forever(
    call: Callable[[], T], what: str, *, first_delay_s: float = 0.1, max_delay_s: float = 2.0
) -> T:
    """Run `call` until Redis answers, with capped exponential backoff (Redis restarting under the job);
    raises JobStopping instead when the job is stopping."""
    import redis

    delay = first_delay_s
    while True:
        try:
            return call()
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError) as exc:
            log.warning("redis unavailable while %s (%s); retrying in %.1fs", what, exc, delay)
            if STOPPING.wait(delay):
                raise JobStopping(f"stopped while {what}") from exc
            delay = min(max_delay_s, delay * 2)


class RedisStreamReader(SimpleDataSourceStreamReader, SupportsTriggerAvailableNow):
    """Reads each micro-batch where Spark plans it (in the driver's long-running source process, on one
    connection) and hands it over with the plan, so a micro-batch costs no Python task on an executor:
    at 1,000 events/s the read of a 250-event batch took 86.3 ms with that task, 28.3 ms this way
    (benchmarks/full/2026-12-07-s19/read-path). The bus's batches are small
    by design (admission control below), which is what this reader kind is for."""

    def __init__(self, options: dict[str, str]) -> None:
        self.url = options["url"]
        self.cluster = options.get("cluster", "false") == "true"
        self.stream = options["stream"]
        self.consumer = options.get("consumer", "speed")
        self.max_rows = int(options.get("max_rows_per_batch", 0)) or None
        self.max_bytes = int(options.get("max_bytes_per_batch", 0)) or None
        self.max_event_bytes = int(options.get("max_event_bytes", 0)) or None
        self.starting = options.get("starting", "earliest")
        self.target: str | None = None
        self._client = None

    # The reader lives in one long-running planner process: keep one connection.
    @property
    def client(self):
        if self._client is None:
            self._client = open_redis(
                self.url, self.cluster, socket_timeout=5, socket_connect_timeout=2, health_check_interval=10
            )
        return self._client

    def _newest_id(self) -> str | None:
        newest = self.client.xrevrange(self.stream, "+", "-", count=1)
        return newest[0][0].decode() if newest else None

    def initialOffset(self) -> dict:
        """Where a query with a fresh checkpoint starts: the stream's start (`earliest`), its end
        (`latest`), or after the last offset this consumer committed (`committed`: a new checkpoint must
        not re-read what an old one already applied; the stream's start when it never committed)."""
        if self.starting == "latest":
            return {"id": retry_forever(self._newest_id, "finding the newest entry") or STREAM_START}
        if self.starting == "committed":
            return {
                "id": retry_forever(
                    lambda: committed_offset(self.client, self.stream, self.consumer),
                    "reading the committed offset",
                )
                or STREAM_START
            }
        return {"id": STREAM_START}

    def batch_end(self, after: str) -> str:
        """The end of the micro-batch that starts after `after` (itself when nothing is new)."""
        if not (self.max_rows or self.max_bytes):
            return latest_allowed(after, self._newest_id(), None, self.target)
        last = self.client.eval(
            _BATCH_END,
            1,
            self.stream,
            after,
            self.max_rows or 0,
            self.max_bytes or NO_LIMIT,
            EVENT_FIELD,
            self.max_event_bytes or NO_LIMIT,
            OVERSIZE_PREFIX_BYTES,
            PLAN_PAGE,
        )
        return latest_allowed(after, None, last.decode() if last else None, self.target)

    def read(self, start: dict) -> tuple[Iterator[tuple], dict]:
        """The next micro-batch: its rows and its end offset."""
        import redis

        after = start["id"]
        try:
            end = self.batch_end(after)
            rows = list(read_rows(self.client, self.stream, after, end, self.max_event_bytes))
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError) as exc:
            # No new data this trigger; the next trigger asks again, so the query never dies of it.
            log.warning("redis unavailable while planning a micro-batch (%s); will retry", exc)
            return iter(()), start
        return iter(rows), {"id": end}

    def readBetweenOffsets(self, start: dict, end: dict) -> Iterator[tuple]:
        """A micro-batch planned before a restart, read again (on an executor: its own connection)."""
        client = open_redis(self.url, self.cluster, socket_timeout=10, socket_connect_timeout=2)
        try:
            return iter(
                retry_forever(
                    lambda: list(
                        read_rows(client, self.stream, start["id"], end["id"], self.max_event_bytes)
                    ),
                    "reading a micro-batch",
                )
            )
        finally:
            client.close()

    def prepareForTriggerAvailableNow(self) -> None:
        self.target = retry_forever(self._newest_id, "finding the newest entry") or STREAM_START

    def commit(self, end: dict) -> None:
        import redis

        try:
            record_committed(self.client, self.stream, self.consumer, end["id"])
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError) as exc:
            # Only trimming waits for this; the next commit records a later offset.
            log.warning("could not record the committed offset (%s)", exc)

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


class RedisStreamDataSource(DataSource):
    """`spark.readStream.format("redis_stream").option("url", ...).option("stream", ...)`; options:
    `consumer` (name under which commits are recorded), `max_rows_per_batch`, `max_bytes_per_batch`,
    `max_event_bytes` (larger payloads travel as a prefix, to be quarantined), `starting` (`earliest` | `latest` | `committed`: where a fresh checkpoint starts), `cluster` (`true`:
    the URL names a node of a Redis Cluster)."""

    @classmethod
    def name(cls) -> str:
        return SOURCE_NAME

    def schema(self) -> StructType:
        return SOURCE_SCHEMA

    def simpleStreamReader(self, schema: StructType) -> RedisStreamReader:
        missing = [key for key in ("url", "stream") if not self.options.get(key)]
        if missing:
            raise ValueError(
                f"the redis_stream source needs the options {missing} (Redis URL and stream key)"
            )
        return RedisStreamReader(dict(self.options))


def register_redis_stream_source(spark) -> None:
    spark.dataSource.register(RedisStreamDataSource)

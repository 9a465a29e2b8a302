"""Short-term features of the speed layer, as pure functions: bus entries -> validated events -> the
Redis operations of one micro-batch. No I/O here; `redis_apply` runs the operations atomically and
idempotently, `speed_job` wires both into the streaming query.

What a micro-batch maintains (key names from feature_store.redis_keys, documented in
docs/redis-key-layout.md):
- per user (TTL `speed_ttl_s`): recent items (zset item -> latest event time, last N) with the event
  type of that latest event (hash), and session counters by event type and category; a session ends
  after `session_gap_minutes` of inactivity, like the batch layer's sessions;
- per item: trending weight over sliding windows (15 min in 1-min buckets, 1 h in 5-min buckets): the
  batch adds to time buckets, then each window is recomputed as the union of its buckets;
- per item pair: real-time co-visitation, +1 each time an item is first seen in a session next to an
  item the user already touched in that session (last `covisit_session_items` of them).

An operation is a plain list (`["e", ...]`, see `redis_apply`): the Lua script that applies one shard
interprets them, so session and co-visitation logic that depends on state already in Redis runs in
Redis, in one round trip per shard.
"""

from __future__ import annotations

import math
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from feature_store.event_bus import decode_payload
from feature_store.events import Event, EventTypes, QuarantineReason, validate_event_dict
from feature_store.realtime import event_strengths
from feature_store.redis_cluster import key_slot
from feature_store.redis_keys import RedisKeys

CATEGORY_CONTEXT_KEY = "category"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class TrendWindow:
    name: str  # key suffix: `15m`, `1h`
    length_ms: int
    bucket_ms: int

    @property
    def buckets(self) -> int:
        return self.length_ms // self.bucket_ms


DEFAULT_TREND_WINDOWS: tuple[TrendWindow, ...] = (
    TrendWindow("15m", 15 * 60_000, 60_000),
    TrendWindow("1h", 60 * 60_000, 5 * 60_000),
)


@dataclass(frozen=True)
class SpeedParams:
    """What the speed layer's Redis writes need: the speed settings (SpeedSettings, same names), the
    session gap, and the fixed shape of the keys."""

    recent_items_max: int = 50
    ttl_s: int = 7 * 24 * 3600
    session_gap_ms: int = 30 * 60_000
    covisit_session_items: int = 20  # how many recent session items a new item pairs with
    covisit_keep: int = 100  # co-visited items kept per item (highest weights)
    events_per_shard: int = 500  # shard size: bounds how long one Lua call blocks Redis
    dedupe_events_per_user: int = 200  # event ids remembered per user, so a re-sent event counts once
    dedupe_ttl_s: int = 24 * 3600
    trend_windows: tuple[TrendWindow, ...] = DEFAULT_TREND_WINDOWS
    trend_weights: Mapping[str, float] = field(default_factory=dict)


def trend_weights(event_types: EventTypes) -> dict[str, float]:
    """Weight of an event in trending and co-visitation (the rule of feature_store.realtime)."""
    return event_strengths(event_types)


def speed_params(settings, event_types: EventTypes | None = None) -> SpeedParams:
    return SpeedParams(
        **settings.speed.model_dump(),
        session_gap_ms=settings.batch.session_gap_minutes * 60_000,
        trend_weights=trend_weights(event_types or EventTypes()),
    )


@dataclass(frozen=True)
class SpeedEvent:
    """A validated event as the speed layer needs it."""

    entry_id: str
    event_id: str
    user_id: str
    item_id: str
    event_type: str
    ts_ms: int
    bus_time_ms: int
    category: str | None = None


@dataclass(frozen=True)
class Rejected:
    entry_id: str
    raw: str | None
    reason: QuarantineReason
    detail: str


def epoch_ms(ts: datetime) -> int:
    return int(round((ts - _EPOCH).total_seconds() * 1000))


def validate_entries(
    entries: Iterable[tuple[str, int, str | None]],
    *,
    future_tolerance: timedelta,
    event_types: EventTypes,
) -> tuple[list[tuple[SpeedEvent, Event]], list[Rejected]]:
    """Bus entries `(entry_id, bus_time_ms, raw)` -> good events and rejected ones with their reason.

    The contract's own validator decides; "now" of the future-timestamp rule is the entry's bus time,
    so a replayed batch is judged exactly as the first time."""
    good: list[tuple[SpeedEvent, Event]] = []
    bad: list[Rejected] = []
    for entry_id, bus_time_ms, raw in entries:
        if raw is None:
            bad.append(Rejected(entry_id, raw, QuarantineReason.MALFORMED, "bus entry has no `event` field"))
            continue
        try:
            decoded = decode_payload(raw)
        except ValueError as exc:
            bad.append(Rejected(entry_id, raw, QuarantineReason.MALFORMED, str(exc)))
            continue
        now = _EPOCH + timedelta(milliseconds=bus_time_ms)
        event, reason, detail = validate_event_dict(
            decoded, now=now, future_tolerance=future_tolerance, event_types=event_types
        )
        if event is None:
            bad.append(Rejected(entry_id, raw, reason, detail))
            continue
        category = (event.context or {}).get(CATEGORY_CONTEXT_KEY)
        good.append(
            (
                SpeedEvent(
                    entry_id,
                    event.event_id,
                    event.user_id,
                    event.item_id,
                    event.event_type,
                    epoch_ms(event.ts),
                    bus_time_ms,
                    category,
                ),
                event,
            )
        )
    return good, bad


def reject_oversize(
    entries: Iterable[tuple[str, int, str | None, int]], max_bytes: int
) -> tuple[list[tuple[str, int, str | None]], list[Rejected]]:
    """Bus entries `(entry_id, bus_time_ms, raw, size_bytes)` -> the ones to validate `(entry_id,
    bus_time_ms, raw)` and those whose payload is above `max_bytes`, rejected as `oversize` before
    anything decodes them (their `raw` is only the prefix the source shipped)."""
    kept: list[tuple[str, int, str | None]] = []
    oversize: list[Rejected] = []
    for entry_id, bus_time_ms, raw, size in entries:
        if size > max_bytes:
            oversize.append(
                Rejected(
                    entry_id,
                    raw,
                    QuarantineReason.OVERSIZE,
                    f"bus entry of {size} bytes, above the limit of {max_bytes}",
                )
            )
        else:
            kept.append((entry_id, bus_time_ms, raw))
    return kept, oversize


def with_catalog_categories(events: Sequence[SpeedEvent], catalog: Mapping[str, str]) -> list[SpeedEvent]:
    """Fill missing categories from the batch catalog (item -> category); the event's own context wins."""
    return [
        e if e.category or e.item_id not in catalog else replace(e, category=catalog[e.item_id])
        for e in events
    ]


def items_without_category(events: Iterable[SpeedEvent]) -> list[str]:
    return sorted({e.item_id for e in events if not e.category})


# -- shards ----------------------------------------------------------------------------------
def shard_count(n_events: int, events_per_shard: int) -> int:
    return max(1, math.ceil(n_events / max(1, events_per_shard)))


def shard_of(user_id: str, shards: int) -> int:
    """Stable across processes (not Python's salted hash): a replayed batch shards identically."""
    return zlib.crc32(user_id.encode()) % shards


def _event_order(e: SpeedEvent) -> tuple:
    return (e.user_id, e.ts_ms, e.entry_id)


def user_ops(
    keys: RedisKeys, params: SpeedParams, events: Sequence[SpeedEvent], end_ms: int | None = None
) -> list[list[Any]]:
    """Operations for one user's events of a batch (in event-time order), then the trim/TTL step.

    Each event starts with a `d` (dedupe) operation: the Lua apply remembers the user's latest event
    ids and skips the event's own operations (`e`, its trending `z`s) when its id was counted before,
    so a re-sent event (client retry, the same file published twice) counts once. `end_ms`: the
    batch's newest bus time (the end of the trending windows)."""
    if not events:
        return []
    user = events[0].user_id
    end_ms = end_ms if end_ms is not None else max(e.bus_time_ms for e in events)
    recent, meta, session, seen = (
        keys.recent_items(user),
        keys.recent_meta(user),
        keys.session_counters(user),
        keys.recent_event_ids(user),
    )
    ops: list[list[Any]] = []
    for e in sorted(events, key=_event_order):
        covisits = 1 if params.trend_weights.get(e.event_type, 0.0) > 0 else 0
        ops.append(["d", seen, e.event_id, e.bus_time_ms])
        ops.append(
            ["e", user, e.item_id, e.event_type, e.ts_ms, e.category or "", recent, meta, session, covisits]
        )
        ops.extend(trend_increments(keys, params, e, end_ms))
    ops.append(["u", recent, meta, session])
    return ops


def _grouped_user_ops(
    keys: RedisKeys, params: SpeedParams, events: Sequence[SpeedEvent], group_of: Callable[[str], int]
) -> dict[int, list[list[Any]]]:
    end_ms = max((e.bus_time_ms for e in events), default=0)
    by_user: dict[str, list[SpeedEvent]] = defaultdict(list)
    for e in events:
        by_user[e.user_id].append(e)
    out: dict[int, list[list[Any]]] = defaultdict(list)
    for user in sorted(by_user):
        out[group_of(user)].extend(user_ops(keys, params, by_user[user], end_ms))
    return dict(sorted(out.items()))


def shard_ops(
    keys: RedisKeys, params: SpeedParams, events: Sequence[SpeedEvent]
) -> dict[int, list[list[Any]]]:
    """Per-user operations grouped into shards of users; deterministic for a given set of events
    (whatever order they come in), which is what makes a replayed batch id land on the same markers."""
    shards = shard_count(len(events), params.events_per_shard)
    return _grouped_user_ops(keys, params, events, lambda user: shard_of(user, shards))


def slot_ops(
    keys: RedisKeys, params: SpeedParams, events: Sequence[SpeedEvent]
) -> dict[int, list[list[Any]]]:
    """Per-user operations grouped by the hash slot of the users' keys (their tag `{u:<user>}`): on a
    Redis Cluster one script per slot (`redis_apply.apply_batch_by_slot`). Deterministic like shard_ops."""
    return _grouped_user_ops(keys, params, events, lambda user: key_slot(keys.recent_items(user)))


# -- batch-level: trending and counters --------------------------------------------------------
def window_buckets(window: TrendWindow, end_ms: int) -> list[int]:
    """Bucket numbers covered by the window that ends at `end_ms` (oldest first)."""
    last = end_ms // window.bucket_ms
    return list(range(last - window.buckets + 1, last + 1))


def bucket_ttl_s(window: TrendWindow) -> int:
    return (window.length_ms + window.bucket_ms) // 1000


def trend_increments(keys: RedisKeys, params: SpeedParams, event: SpeedEvent, end_ms: int) -> list[list[Any]]:
    """The event's weight added to its time bucket of each window (by event time, never later than
    bus time), unless the bucket is older than the window that ends at `end_ms`. Planned with the
    event's user (not per batch) so a re-sent event skipped by the dedupe adds nothing either."""
    weight = params.trend_weights.get(event.event_type, 0.0)
    if weight <= 0:
        return []
    ops: list[list[Any]] = []
    for window in params.trend_windows:
        bucket = min(event.ts_ms, event.bus_time_ms) // window.bucket_ms
        if bucket >= window_buckets(window, end_ms)[0]:
            ops.append(
                ["z", keys.trending_bucket(window.name, bucket), event.item_id, weight, bucket_ttl_s(window)]
            )
    return ops


def trending_ops(keys: RedisKeys, params: SpeedParams, events: Sequence[SpeedEvent]) -> list[list[Any]]:
    """Recompute each window as the union of its buckets up to the batch's newest bus time (the
    buckets got their weights in the user shards, which the pipeline applies first)."""
    if not events:
        return []
    end_ms = max(e.bus_time_ms for e in events)
    return [
        [
            "U",
            keys.trending(window.name),
            window.length_ms // 1000,
            *[keys.trending_bucket(window.name, b) for b in window_buckets(window, end_ms)],
        ]
        for window in params.trend_windows
    ]


def counter_ops(keys: RedisKeys, processed: int, rejected: Sequence[Rejected]) -> list[list[Any]]:
    """Status counters of the batch: processed and quarantined events, quarantined by reason."""
    ops: list[list[Any]] = [
        ["h", keys.speed_status, "processed", processed],
        ["h", keys.speed_status, "quarantined", len(rejected)],
    ]
    for reason, count in sorted(Counter(r.reason.value for r in rejected).items()):
        ops.append(["h", keys.speed_status, f"quarantined:{reason}", count])
    return ops


# -- freshness ---------------------------------------------------------------------------------
def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of ascending values (q in [0, 100])."""
    if not sorted_values:
        return float("nan")
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return float(sorted_values[rank - 1])


def freshness_fields(bus_lags_ms: Sequence[float], event_lags_ms: Sequence[float]) -> dict[str, str]:
    """Status fields from recent lags: bus lag = visible - reached the bus; event lag = visible -
    event time (includes producer delay)."""
    bus, event = sorted(bus_lags_ms), sorted(event_lags_ms)
    out: dict[str, str] = {}
    for name, values in (("lag_ms", bus), ("event_lag_ms", event)):
        if values:
            out[f"{name}_p50"] = f"{percentile(values, 50):.0f}"
            out[f"{name}_p99"] = f"{percentile(values, 99):.0f}"
            out[f"{name}_max"] = f"{values[-1]:.0f}"
    return out

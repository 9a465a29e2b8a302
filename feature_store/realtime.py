"""Real-time ranker inputs: one definition each, computed three ways.

Each feature below describes one (user, candidate item, instant t) from the events up to t. Three
engines compute it and must agree:

- the streaming job keeps the state incrementally in Redis (`spark_jobs.streaming.speed_features` and
  the Lua script of `spark_jobs.streaming.redis_apply`: recent items, session counters, co-visitation);
- Spark rebuilds it point in time from the interactions for training (`spark_jobs.realtime_features`);
- serving reads that state and the published batch and applies the `from_*` functions of this module.

`reference_features` is the plain-Python meaning over event lists: the oracle the tests compare the
engines with. The exact semantics (kept simple so the three agree value for value):

- events are taken in (event time, event id) order, "up to t" includes events at t;
- a *session* is a maximal run of the user's events whose consecutive gaps are at most the session
  gap; the user's session at t is the run holding their last event at or before t;
- the *recent items* at t are the user's distinct items by their latest event time in (t - ttl, t];
  the *seeds* are the newest `seeds` of them (ties: the larger item id first, as Redis' ZREVRANGE);
- *co-visitation* at t counts pair events in (t - ttl, t]: a positive event on item i that was not
  already seen positively in the last session gap pairs i with each of the newest
  `covisit_session_items` items the user touched within the gap before it (those whose latest event
  there is positive), +1 in both directions; a seed's *neighbours* are its top `neighbours` by count
  (ties: the larger item id first);
- batch similar items are the nightly `gold/item_similar` lists, cut to the first `neighbours`;
- the recency-weighted co-visitation weighs the seed at position p (0 = newest) by 0.5^p and divides
  each count by the seed's top count among its neighbours; the recency-weighted similar-item score
  does the same with the seeds' batch similar lists (a seed whose best score is not positive adds
  nothing).

Storage bounds that the definition ignores (they only matter past them): the speed layer trims a
user's recent items to `recent_items_max` (50, more than the seeds and the co-visitation reach),
keeps `covisit_keep` (100) partners per item, and expires keys by wall-clock TTL.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from feature_store.events import EventTypes

SESSION_TYPE_PREFIX = "type:"
SESSION_CATEGORY_PREFIX = "cat:"


@dataclass(frozen=True)
class RealtimeFeature:
    name: str
    entity: str  # "user" | "user x item"
    description: str


REALTIME_FEATURES: tuple[RealtimeFeature, ...] = (
    RealtimeFeature(
        "rt_session_events", "user", "events in the user's session at t (0 when none within the ttl)"
    ),
    RealtimeFeature(
        "rt_session_category_share",
        "user x item",
        "share of the session's categorized events in the candidate's category (0 when none)",
    ),
    RealtimeFeature(
        "rt_recent_covisit",
        "user x item",
        "sum over the seeds of the candidate's real-time co-visitation count, where it is among the seed's neighbours",
    ),
    RealtimeFeature(
        "rt_recent_similar",
        "user x item",
        "sum over the seeds of the candidate's batch similar-item score, where it is in the seed's first neighbours",
    ),
    RealtimeFeature(
        "rt_recency_covisit",
        "user x item",
        "sum over the seeds, newest first, of 0.5^position x the candidate's real-time co-visitation count "
        "/ the seed's top count, where it is among the seed's neighbours (the newest item outweighs all "
        "older ones together)",
    ),
    RealtimeFeature(
        "rt_recency_similar",
        "user x item",
        "sum over the seeds, newest first, of 0.5^position x the candidate's batch similar-item score / the "
        "seed's best score, where it is in the seed's first neighbours",
    ),
)
REALTIME_INPUTS: tuple[str, ...] = tuple(f.name for f in REALTIME_FEATURES)


@dataclass(frozen=True)
class RealtimeParams:
    session_gap_ms: int = 30 * 60_000
    ttl_ms: int = 7 * 24 * 3_600_000
    seeds: int = 10
    neighbours: int = 20
    covisit_session_items: int = 20
    positive_types: frozenset[str] = frozenset()


def event_strengths(event_types: EventTypes) -> dict[str, float]:
    """Weight of an event in trending and co-visitation: its implicit weight, explicit ratings count
    1, negative signals (skip) count 0 (they make nothing trend and pair nothing)."""
    return {t.name: 1.0 if t.explicit else max(t.weight, 0.0) for t in event_types}


def positive_types(event_types: EventTypes) -> frozenset[str]:
    return frozenset(name for name, weight in event_strengths(event_types).items() if weight > 0)


def realtime_params(settings, event_types: EventTypes | None = None) -> RealtimeParams:
    return RealtimeParams(
        session_gap_ms=settings.batch.session_gap_minutes * 60_000,
        ttl_ms=settings.speed.ttl_s * 1000,
        seeds=settings.serving.recent_items,
        neighbours=settings.serving.neighbors_per_item,
        positive_types=positive_types(event_types or EventTypes()),
    )


# -- from what the speed layer and the batch publish wrote (serving) --------------------------------
def from_session(session: Mapping[str, str]) -> tuple[float, dict[str, float]]:
    """(rt_session_events, category -> share of the session's categorized events) from the session
    hash of the speed layer (`type:<event type>` and `cat:<category>` counters)."""
    events = 0.0
    categories: dict[str, float] = {}
    for name, raw in session.items():
        if name.startswith(SESSION_TYPE_PREFIX) or name.startswith(SESSION_CATEGORY_PREFIX):
            try:
                value = float(raw)
            except ValueError:
                continue
            if name.startswith(SESSION_TYPE_PREFIX):
                events += value
            elif value > 0:
                categories[name[len(SESSION_CATEGORY_PREFIX) :]] = value
    total = sum(categories.values())
    return events, ({c: v / total for c, v in categories.items()} if total else {})


def from_neighbour_lists(
    seeds: Sequence[str], lists: Mapping[str, Sequence[tuple]], neighbours: int
) -> dict[str, float]:
    """item -> the sum over `seeds` of its score in each seed's first `neighbours` entries of `lists`
    (entries are (item_id, score, ...) tuples, best first)."""
    sums: dict[str, float] = defaultdict(float)
    for seed in seeds:
        for entry in lists.get(seed, ())[:neighbours]:
            sums[entry[0]] += entry[1]
    return dict(sums)


# A seed's weight halves per step back from the newest: what the user did last says most about what
# they want next (the speed layer's recent-item neighbours heuristic weighs seeds the same way).
RECENCY_DECAY = 0.5


def from_neighbour_lists_by_recency(
    seeds: Sequence[str], lists: Mapping[str, Sequence[tuple]], neighbours: int
) -> dict[str, float]:
    """item -> the sum over `seeds` (newest first) of RECENCY_DECAY^position x its score / the seed's
    best score, in each seed's first `neighbours` entries of `lists` (entries best first)."""
    sums: dict[str, float] = defaultdict(float)
    for position, seed in enumerate(seeds):
        entries = lists.get(seed, ())[:neighbours]
        best = max((entry[1] for entry in entries), default=0.0)
        if best <= 0:
            continue
        weight = RECENCY_DECAY**position
        for entry in entries:
            sums[entry[0]] += weight * entry[1] / best
    return dict(sums)


# -- the meaning over events (the oracle) ------------------------------------------------------------
@dataclass(frozen=True)
class TimedEvent:
    event_id: str
    user_id: str
    item_id: str
    event_type: str
    ts_ms: int


def _ordered(events: Iterable[TimedEvent], t_ms: int) -> list[TimedEvent]:
    return sorted((e for e in events if e.ts_ms <= t_ms), key=lambda e: (e.ts_ms, e.event_id))


def covisit_pairs(events: Iterable[TimedEvent], params: RealtimeParams) -> list[tuple[str, str, int]]:
    """(item, partner, ts_ms) pair events, both directions, in processing order."""
    latest: dict[str, dict[str, tuple[int, str]]] = defaultdict(dict)  # user -> item -> (ts, type)
    pairs: list[tuple[str, str, int]] = []
    gap = params.session_gap_ms
    for e in sorted(events, key=lambda e: (e.ts_ms, e.event_id)):
        recent = latest[e.user_id]
        prev = recent.get(e.item_id)
        seen = prev is not None and prev[0] >= e.ts_ms - gap and prev[1] in params.positive_types
        if e.event_type in params.positive_types and not seen:
            window = [
                (ts, item, kind) for item, (ts, kind) in recent.items() if e.ts_ms - gap <= ts <= e.ts_ms
            ]
            window.sort(key=lambda x: (x[0], x[1]), reverse=True)
            for _, other, kind in window[: params.covisit_session_items]:
                if other != e.item_id and kind in params.positive_types:
                    pairs.append((e.item_id, other, e.ts_ms))
                    pairs.append((other, e.item_id, e.ts_ms))
        if prev is None or e.ts_ms >= prev[0]:
            recent[e.item_id] = (e.ts_ms, e.event_type)
    return pairs


def reference_seeds(user_events: Sequence[TimedEvent], t_ms: int, params: RealtimeParams) -> list[str]:
    latest: dict[str, int] = {}
    for e in _ordered(user_events, t_ms):
        if e.ts_ms > t_ms - params.ttl_ms:
            latest[e.item_id] = e.ts_ms
    return [
        item for item, _ in sorted(latest.items(), key=lambda x: (x[1], x[0]), reverse=True)[: params.seeds]
    ]


def reference_session(
    user_events: Sequence[TimedEvent], t_ms: int, params: RealtimeParams
) -> list[TimedEvent]:
    """The user's session at t: the run of events holding their last event at or before t."""
    ordered = _ordered(user_events, t_ms)
    if not ordered or ordered[-1].ts_ms <= t_ms - params.ttl_ms:
        return []
    start = len(ordered) - 1
    while start > 0 and ordered[start].ts_ms - ordered[start - 1].ts_ms <= params.session_gap_ms:
        start -= 1
    return ordered[start:]


def reference_neighbours(
    pairs: Sequence[tuple[str, str, int]], seed: str, t_ms: int, params: RealtimeParams
) -> list[tuple[str, float]]:
    counts: dict[str, float] = defaultdict(float)
    for item, partner, ts in pairs:
        if item == seed and t_ms - params.ttl_ms < ts <= t_ms:
            counts[partner] += 1.0
    return sorted(counts.items(), key=lambda x: (x[1], x[0]), reverse=True)[: params.neighbours]


def reference_features(
    events: Sequence[TimedEvent],
    user_id: str,
    t_ms: int,
    candidates: Sequence[str],
    categories: Mapping[str, str],
    similar: Mapping[str, Sequence[tuple[str, float]]],
    params: RealtimeParams,
) -> dict[str, tuple[float, ...]]:
    """candidate -> its REALTIME_INPUTS values for `user_id` at `t_ms`, from every user's events
    (`events`), the batch catalog (`categories`) and the batch similar lists (`similar`)."""
    upto = _ordered(events, t_ms)
    mine = [e for e in upto if e.user_id == user_id]
    session = reference_session(mine, t_ms, params)
    categorized = [categories[e.item_id] for e in session if e.item_id in categories]
    seeds = reference_seeds(mine, t_ms, params)
    pairs = covisit_pairs(upto, params)
    lists = {s: reference_neighbours(pairs, s, t_ms, params) for s in seeds}
    covisit = from_neighbour_lists(seeds, lists, params.neighbours)
    by_recency = from_neighbour_lists_by_recency(seeds, lists, params.neighbours)
    similar_sums = from_neighbour_lists(seeds, similar, params.neighbours)
    similar_by_recency = from_neighbour_lists_by_recency(seeds, similar, params.neighbours)
    out = {}
    for item in candidates:
        category = categories.get(item)
        share = (
            categorized.count(category) / len(categorized) if categorized and category is not None else 0.0
        )
        out[item] = (
            float(len(session)),
            share,
            covisit.get(item, 0.0),
            similar_sums.get(item, 0.0),
            by_recency.get(item, 0.0),
            similar_by_recency.get(item, 0.0),
        )
    return out

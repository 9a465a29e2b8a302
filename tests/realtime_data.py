"""A tiny event history with a known real-time state, shared by the oracle, Spark and parity tests."""

from __future__ import annotations

import random

from feature_store.realtime import RealtimeParams, TimedEvent

MIN = 60_000
START_MS = 1_704_067_200_000  # 2024-01-01 00:00 UTC
PARAMS = RealtimeParams(
    session_gap_ms=10 * MIN,
    ttl_ms=24 * 60 * MIN,
    seeds=2,
    neighbours=2,
    positive_types=frozenset({"view", "click", "purchase"}),
)
CATEGORIES = {"a": "x", "b": "x", "d": "y", "e": "y"}
SIMILAR = {"e": [("c", 0.5), ("a", 0.25)], "d": [("c", 0.1)]}


def event(user: str, item: str, minute: float, kind: str = "view") -> TimedEvent:
    ts = START_MS + int(minute * MIN)
    return TimedEvent(f"{user}-{item}-{ts}", user, item, kind, ts)


EVENTS = [
    event("u1", "a", 0),
    event("u1", "b", 1, "click"),
    event("u1", "c", 2, "skip"),
    event("u1", "d", 3),
    event("u2", "a", 0.5),
    event("u2", "b", 1.5),
    event("u2", "e", 2.5, "purchase"),
    event("u1", "e", 30),
]


def random_events(seed: int, users: int = 4, items: int = 8, n: int = 60) -> list[TimedEvent]:
    """Random sessions with distinct timestamps (ties in event time are ordered differently by the
    speed layer, by bus entry id, and by the definition, by event id)."""
    rng = random.Random(seed)
    minutes = sorted(rng.sample(range(0, 600), n))
    kinds = ["view", "view", "click", "purchase", "skip"]
    return [
        event(f"u{rng.randrange(users)}", f"i{rng.randrange(items)}", m, rng.choice(kinds)) for m in minutes
    ]

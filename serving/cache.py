"""In-process cache of the online-store data that changes only with a batch version.

Who uses it: `serving.store.OnlineStore` (reads through it) and the per-user prefetch. A batch
version is immutable once its pointer is flipped, so cached entries are exact until the pointer moves;
`reset(version)` drops everything when it does. Speed-layer data is never cached (it changes every
micro-batch). Runs on the event loop only, so it needs no locks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, Hashable, TypeVar

import numpy as np

from feature_store.codecs import ScoredItem

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Bounded(Generic[K, V]):
    """A mapping of at most `max_entries`; when full, the oldest inserted entry goes first.

    Not LRU on purpose: entries never change within a batch version and the whole cache is dropped
    when the version moves, so recency bookkeeping on every hit (hundreds per request) would cost more
    than the rare re-read of an evicted entry."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._data: dict[K, V] = {}

    def get(self, key: K) -> V | None:
        return self._data.get(key)

    def put(self, key: K, value: V) -> None:
        if key not in self._data and len(self._data) >= self.max_entries:
            del self._data[next(iter(self._data))]
        self._data[key] = value

    def clear(self) -> None:
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data


@dataclass(frozen=True)
class UserBatch:
    """What the batch layer published for one user."""

    recs: tuple[ScoredItem, ...]
    features: np.ndarray | None  # USER_INPUTS order
    affinity: dict[str, float]
    seen: frozenset[str]


EMPTY_USER = UserBatch((), None, {}, frozenset())


@dataclass(frozen=True)
class ItemBatch:
    """What the batch layer published for one item (features None: unknown to this batch)."""

    features: np.ndarray | None  # ITEM_INPUTS order
    category: str | None


class CacheStats:
    """Hit/miss counters per table, read by /metrics."""

    def __init__(self) -> None:
        self.hits: dict[str, int] = {"users": 0, "items": 0, "similar": 0, "popular": 0}
        self.misses: dict[str, int] = dict.fromkeys(self.hits, 0)

    def count(self, table: str, hits: int, misses: int) -> None:
        self.hits[table] += hits
        self.misses[table] += misses

    def hit_ratio(self) -> float | None:
        total = sum(self.hits.values()) + sum(self.misses.values())
        return sum(self.hits.values()) / total if total else None


class BatchCache:
    """The batch-version-scoped tables. `enabled=False` makes every lookup a miss and stores nothing
    (the benchmark's "cache off")."""

    def __init__(self, enabled: bool = True, max_entries: int = 200_000) -> None:
        self.enabled = enabled
        self.version: str | None = None
        self.users: Bounded[str, UserBatch] = Bounded(max_entries)
        self.items: Bounded[str, ItemBatch] = Bounded(max_entries)
        self.similar: Bounded[str, tuple[ScoredItem, ...]] = Bounded(max_entries)
        self.popular: tuple[ScoredItem, ...] | None = None
        self.stats = CacheStats()
        self.resets = 0

    def reset(self, version: str | None) -> None:
        """The batch pointer moved: everything cached belongs to the old version."""
        self.version = version
        self.users.clear()
        self.items.clear()
        self.similar.clear()
        self.popular = None
        self.resets += 1

    def accepts(self, version: str | None) -> bool:
        """Whether data read at `version` may be stored (the pointer may have moved meanwhile)."""
        return self.enabled and version is not None and version == self.version

    def user(self, user_id: str) -> UserBatch | None:
        found = self.users.get(user_id) if self.enabled else None
        self.stats.count("users", found is not None, found is None)
        return found

    def _lookup(self, table: str, lru: Bounded[str, V], ids: list[str]) -> tuple[dict[str, V], list[str]]:
        """Cached values of `ids` and the ids still to read."""
        if not self.enabled:
            self.stats.count(table, 0, len(ids))
            return {}, list(ids)
        found: dict[str, V] = {}
        missing: list[str] = []
        get = lru.get
        for key in ids:
            value = get(key)
            if value is None:
                missing.append(key)
            else:
                found[key] = value
        self.stats.count(table, len(found), len(missing))
        return found, missing

    def lookup_items(self, item_ids: list[str]) -> tuple[dict[str, ItemBatch], list[str]]:
        return self._lookup("items", self.items, item_ids)

    def lookup_similar(self, item_ids: list[str]) -> tuple[dict[str, tuple[ScoredItem, ...]], list[str]]:
        return self._lookup("similar", self.similar, item_ids)

    def cached_popular(self) -> tuple[ScoredItem, ...] | None:
        found = self.popular if self.enabled else None
        self.stats.count("popular", found is not None, found is None)
        return found

"""In-process cache of the online-store data that changes only with a batch version.

Who uses it: `serving.store.OnlineStore` (reads through it) and the per-user prefetch. A batch
version is immutable once its pointer is flipped, so cached entries are exact until the pointer moves;
`reset(version)` drops everything when it does. Speed-layer data is never cached (it changes every
micro-batch). Runs on the event loop only, so it needs no locks.
"""

from __future__ import annotations

import sys
from collections.abc import Hashable
from itertools import islice, repeat
from typing import Any, Generic, NamedTuple, TypeVar

import numpy as np

from feature_store.codecs import ScoredItem
from feature_store.ranking import ITEM_INPUTS

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


# Elements of a long container that are measured; the rest are counted at their average. Measuring all
# of a user's 150 recommendations cost ~0.8 ms per cache insert, a large share of a request's CPU.
SIZE_SAMPLE = 8


def approx_bytes(value: Any) -> int:
    """Memory a cached value holds, roughly (CPython object sizes, numpy buffers): what the cache
    budget counts. Interned and shared objects are counted as if owned, so it errs on the high side; a
    container longer than SIZE_SAMPLE counts its first elements' average for every element."""
    if isinstance(value, np.ndarray):
        return sys.getsizeof(value) if value.base is None else value.nbytes + 112
    if isinstance(value, (tuple, list, set, frozenset)):
        if len(value) <= SIZE_SAMPLE:
            return sys.getsizeof(value) + sum(approx_bytes(v) for v in value)
        sample = sum(approx_bytes(v) for v in islice(value, SIZE_SAMPLE))
        return sys.getsizeof(value) + sample * len(value) // SIZE_SAMPLE
    if isinstance(value, dict):
        return sys.getsizeof(value) + sum(approx_bytes(k) + approx_bytes(v) for k, v in value.items())
    return sys.getsizeof(value)


class Bounded(Generic[K, V]):
    """A mapping holding at most `max_bytes` (approx_bytes of keys and values); past it, the oldest
    inserted entries go first.

    Not LRU on purpose: entries never change within a batch version and the whole cache is dropped
    when the version moves, so recency bookkeeping on every hit (hundreds per request) would cost more
    than the rare re-read of an evicted entry. Sizes are measured on insert only (a miss), never on a hit."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._data: dict[K, V] = {}
        self._sizes: dict[K, int] = {}

    def get(self, key: K) -> V | None:
        return self._data.get(key)

    def put(self, key: K, value: V) -> None:
        size = approx_bytes(key) + approx_bytes(value)
        self.bytes += size - self._sizes.get(key, 0)
        self._data[key] = value
        self._sizes[key] = size
        while self.bytes > self.max_bytes and self._data:
            oldest = next(iter(self._data))
            del self._data[oldest]
            self.bytes -= self._sizes.pop(oldest)

    def clear(self) -> None:
        self._data.clear()
        self._sizes.clear()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data


# UserBatch and ItemBatch are named tuples, and the cache keeps them as plain tuples of strings,
# floats, arrays and plain dicts/tuples: the garbage collector stops tracking those, so full
# collections do not grow (and pause longer) with hundreds of thousands of cached users and items.
class UserBatch(NamedTuple):
    """What the batch layer published for one user."""

    recs: tuple[ScoredItem, ...]  # plain (item_id, ranker score, source) tuples, best first
    features: np.ndarray | None  # USER_INPUTS order
    affinity: dict[str, float]
    seen: tuple[str, ...] | frozenset[str]
    source_scores: np.ndarray | None = (
        None  # (len(recs), len(NIGHTLY_INPUTS)): each nightly input of the recs, NaN: missing
    )
    genre_profile: dict[str, float] | None = None  # feature_store.genres; None: none published


EMPTY_USER = UserBatch((), None, {}, ())


class ItemBatch(NamedTuple):
    """What the batch layer published for one item (features None: unknown to this batch)."""

    features: np.ndarray | None  # ITEM_INPUTS order
    category: str | None
    genres: tuple[str, ...] = ()  # feature_store.genres.item_genres


_N_ITEM_INPUTS = len(ITEM_INPUTS)
# An item's share of the table besides its entry: its float32 feature row (the matrix grows by
# doubling, so up to twice that), its index and list slots.
_ROW_BYTES = 2 * 4 * _N_ITEM_INPUTS + 120


class ItemTable:
    """The items of one batch version: id -> row of a float32 feature matrix (ITEM_INPUTS order) and
    of a category and a genres list, so a request's ~200 candidates become one numpy take instead of ~200 lookups
    and a concatenate. Row 0 is the "unknown item" row (NaN features, no category, no genres).

    At most `max_bytes` (its feature matrix, ids and entries); when full it starts over (entries never
    change within a batch version, so a re-read is the only cost, and evicting one row at a time would
    need a free list)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.clear()

    def clear(self) -> None:
        self.bytes = 0
        self.index: dict[str, int] = {}
        self.entries: list[tuple | None] = [None]  # ItemBatch fields as a plain tuple (see UserBatch)
        self.categories: list[str | None] = [None]
        self.genres: list[tuple[str, ...]] = [()]
        self.features = np.full((64, _N_ITEM_INPUTS), np.nan, dtype=np.float32)

    def get(self, item_id: str) -> ItemBatch | None:
        row = self.index.get(item_id)
        return ItemBatch._make(self.entries[row]) if row is not None else None

    def put(self, item_id: str, item: ItemBatch) -> None:
        row = self.index.get(item_id)
        size = approx_bytes(item_id) + approx_bytes(tuple(item)) + _ROW_BYTES
        if row is None:
            if self.bytes + size > self.max_bytes:
                self.clear()
            self.bytes += size
            row = len(self.entries)
            if row == self.features.shape[0]:
                grown = np.full((row * 2, _N_ITEM_INPUTS), np.nan, dtype=np.float32)
                grown[:row] = self.features
                self.features = grown
            self.index[item_id] = row
            self.entries.append(tuple(item))
            self.categories.append(item.category)
            self.genres.append(item.genres)
        else:
            self.entries[row] = tuple(item)
            self.categories[row] = item.category
            self.genres[row] = item.genres
        features = item.features
        self.features[row] = (
            features if features is not None and features.shape[0] == _N_ITEM_INPUTS else np.nan
        )

    def rows(self, item_ids: list[str]) -> list[int]:
        """Row of each id (0: not in the table)."""
        return list(map(self.index.get, item_ids, repeat(0)))

    def __len__(self) -> int:
        return len(self.index)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self.index


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

    def __init__(self, enabled: bool = True, max_bytes: int = 512 * 2**20) -> None:
        """`max_bytes` is the budget of the whole cache: half for users, a quarter each for items and
        similar lists (a user's batch recommendations are the largest entries)."""
        self.enabled = enabled
        self.version: str | None = None
        self.users: Bounded[str, tuple] = Bounded(max_bytes // 2)  # UserBatch fields as plain tuples
        self.items = ItemTable(max_bytes // 4)
        self.similar: Bounded[str, tuple[ScoredItem, ...]] = Bounded(max_bytes // 4)
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
        return UserBatch._make(found) if found is not None else None

    def keep_user(self, user_id: str, user: UserBatch) -> None:
        self.users.put(user_id, tuple(user))  # a plain tuple: see UserBatch

    def _lookup(
        self, table: str, lru: Bounded[str, V] | ItemTable, ids: list[str]
    ) -> tuple[dict[str, V], list[str]]:
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

    def lookup_items(self, item_ids: list[str], found: bool = True) -> tuple[dict[str, ItemBatch], list[str]]:
        """Cached items of `item_ids` and the ids still to read; found=False skips building the
        first (the columnar path reads hits straight from the item table)."""
        if not self.enabled:
            return self._lookup("items", self.items, item_ids)
        index = self.items.index
        missing = [i for i in item_ids if i not in index]
        hits = (
            {i: ItemBatch._make(self.items.entries[index[i]]) for i in item_ids if i in index}
            if found
            else {}
        )
        self.stats.count("items", len(item_ids) - len(missing), len(missing))
        return hits, missing

    def lookup_similar(self, item_ids: list[str]) -> tuple[dict[str, tuple[ScoredItem, ...]], list[str]]:
        return self._lookup("similar", self.similar, item_ids)

    def cached_popular(self) -> tuple[ScoredItem, ...] | None:
        found = self.popular if self.enabled else None
        self.stats.count("popular", found is not None, found is None)
        return found

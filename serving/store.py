"""Reads of the online store for one request: pipelined Redis round trips, decoded with the feature
store's codecs, through the batch-version cache.

Who calls it: `serving.recommender` (requests and per-user prefetch) and `serving.app` (readiness).
Round trips of a recommendation request:
1. the batch pointer, the user's speed keys (recent items, session counters), the trending window,
   and (cache misses only) the user's batch keys and the popular list;
2. co-visitation neighbours of the recent items (speed layer), their batch similar-items lists
   (cache misses only) and the features/categories/genres of every candidate not cached;
3. only on a cold cache: features of neighbours first seen in step 2.
With a warm cache (or after a prefetch) a request takes two round trips. When the pointer has moved,
the cache is reset and the user's batch keys are re-read at the new version, so one answer never
mixes two batch versions.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import msgpack
import numpy as np

from feature_store.codecs import (
    CodecError,
    ScoredItem,
    decode_feature_rows,
    decode_features,
    decode_ids,
    decode_recs_plain,
)
from feature_store.ranking import (
    CANDIDATE_SOURCES,
    ITEM_INPUTS,
    NIGHTLY_INPUTS,
    POOL_INPUTS,
    USER_INPUTS,
)
from feature_store.redis_keys import RedisKeys
from serving.cache import EMPTY_USER, BatchCache, ItemBatch, UserBatch

log = logging.getLogger(__name__)


@dataclass
class UserView:
    """Everything round trip 1 returns for one user."""

    version: str | None
    user: UserBatch
    recent: list[tuple[str, float]]  # (item_id, event time ms), newest first
    session: dict[str, str]
    trending: list[tuple[str, float]]  # (item_id, weight), hottest first
    popular: tuple[ScoredItem, ...]


def _text(value: bytes | str | None) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else value


def _pairs(reply) -> list[tuple[str, float]]:
    """A raw `Z(REV)RANGE ... WITHSCORES` reply (flat member, score, ...) as (member, score) pairs.
    Sent through execute_command so redis-py's per-score conversion callback stays out of the way."""
    if not reply:
        return []
    if isinstance(reply[0], (list, tuple)):  # some redis-py versions pair them up anyway
        return [(member.decode(), float(score)) for member, score in reply]
    # C-level maps: a request decodes a few hundred of these
    return list(zip(map(bytes.decode, reply[0::2]), map(float, reply[1::2])))


def _top(key: str, count: int) -> tuple:
    """The `count` best members with their scores. A count of 0 reads none: the range 0..-1 would be
    all of them, so it asks for 1..0 (start past stop), an empty reply in the same pipeline slot."""
    start, stop = (0, count - 1) if count > 0 else (1, 0)
    return ("ZREVRANGE", key, start, stop, "WITHSCORES")


def _hash(reply) -> dict[str, str]:
    """An HGETALL reply (a flat field, value list, or redis-py's dict) as text."""
    if not reply:
        return {}
    if isinstance(reply, dict):
        return {_text(f): _text(v) for f, v in reply.items()}
    it = iter(reply)
    return {_text(f): _text(v) for f, v in zip(it, it)}


def _features(blob: bytes | None, length: int, key: str) -> np.ndarray | None:
    if blob is None:
        return None
    try:
        return decode_features(blob, length)
    except CodecError as exc:  # one bad value must not fail the request: treat it as missing
        log.warning("ignoring %s: %s", key, exc)
        return None


def _recs(blob: bytes | None, key: str) -> tuple[ScoredItem, ...]:
    """Plain (item_id, score, source) tuples (ScoredItem's fields, read by index): the cache keeps
    hundreds of thousands, and plain tuples cost the garbage collector nothing."""
    if blob is None:
        return ()
    try:
        return decode_recs_plain(blob)
    except CodecError as exc:
        log.warning("ignoring %s: %s", key, exc)
        return ()


def _genres(blob: bytes | None, item_id: str) -> tuple[str, ...]:
    if blob is None:
        return ()
    try:
        return tuple(decode_ids(blob))
    except CodecError as exc:
        log.warning("ignoring genres of %s: %s", item_id, exc)
        return ()


_SOURCE_COLUMN = {source: n for n, source in enumerate(CANDIDATE_SOURCES)}


def split_recs(entries: tuple[ScoredItem, ...]) -> tuple[tuple[ScoredItem, ...], np.ndarray | None]:
    """The recs value (spark_jobs.publish.rec_entries: each item once with the ranker's score, then
    `(item, score, source)` per nightly source) as the recommendations, best first, and their
    (rows, len(CANDIDATE_SOURCES)) per-source scores. An item listed only under a nightly source is a
    recommendation with that score too."""
    if not entries:
        return (), None
    row_of: dict[str, int] = {}
    recs: list[ScoredItem] = []
    scored: list[tuple[int, int, float]] = []
    for entry in entries:
        item, score, source = entry
        row = row_of.get(item)
        if row is None:
            row = row_of[item] = len(recs)
            recs.append(entry)
        column = _SOURCE_COLUMN.get(source)
        if column is not None:
            scored.append((row, column, score))
    scores = np.full((len(recs), len(CANDIDATE_SOURCES)), np.nan, dtype=np.float32)
    for row, column, score in scored:
        scores[row, column] = score
    return tuple(recs), scores


def nightly_inputs(source_scores: np.ndarray | None, pool: bytes | None, user_id: str) -> np.ndarray | None:
    """(rows, len(NIGHTLY_INPUTS)) of the recs: the sources' scores (split_recs), then the pool
    scorers' rows (RedisKeys.user_pool_inputs: one per batch item, the first rows of the recs); NaN
    where missing or unreadable."""
    if source_scores is None:
        return None
    rows = source_scores.shape[0]
    inputs = np.full((rows, len(NIGHTLY_INPUTS)), np.nan, dtype=np.float32)
    inputs[:, : len(CANDIDATE_SOURCES)] = source_scores
    if pool is not None:
        try:
            published = decode_feature_rows(pool, len(POOL_INPUTS))
        except CodecError as exc:
            log.warning("ignoring pool inputs of user %s: %s", user_id, exc)
            return inputs
        if published.shape[0] > rows:
            log.warning(
                "ignoring pool inputs of user %s: %d rows for %d recs", user_id, published.shape[0], rows
            )
            return inputs
        inputs[: published.shape[0], len(CANDIDATE_SOURCES) :] = published
    return inputs


def _shares(blob: bytes | None, what: str) -> dict[str, float]:
    """A msgpack map of shares (category affinity, genre profile); {} when missing or unreadable."""
    if blob is None:
        return {}
    try:
        raw = msgpack.unpackb(blob, raw=False)
        return {str(k): float(v) for k, v in raw.items()} if isinstance(raw, dict) else {}
    except (ValueError, TypeError, msgpack.ExtraData) as exc:
        log.warning("ignoring %s: %s", what, exc)
        return {}


def decode_user_batch(
    recs: bytes | None,
    feat: bytes | None,
    aff: bytes | None,
    seen: bytes | None,
    genres: bytes | None,
    pool: bytes | None,
    user_id: str,
) -> UserBatch:
    """The user's batch keys (any may be missing) as one UserBatch."""
    if recs is None and feat is None and aff is None and seen is None and genres is None and pool is None:
        return EMPTY_USER
    affinity = _shares(aff, f"affinity of user {user_id}")
    seen_ids: tuple[str, ...] = ()
    if seen is not None:
        try:
            seen_ids = tuple(decode_ids(seen))
        except CodecError as exc:
            log.warning("ignoring history of user %s: %s", user_id, exc)
    batch_recs, source_scores = split_recs(_recs(recs, f"recs of {user_id}"))
    return UserBatch(
        batch_recs,
        _features(feat, len(USER_INPUTS), f"features of {user_id}"),
        affinity,
        seen_ids,
        nightly_inputs(source_scores, pool, user_id),
        _shares(genres, f"genre profile of user {user_id}") or None,
    )


class OnlineStore:
    """`reader` runs command batches (`serving.resp`: PipelinedReader or RedisPyReader)."""

    def __init__(
        self,
        reader,
        keys: RedisKeys,
        cache: BatchCache,
        *,
        recent_items: int,
        trending_window: str,
        trending_candidates: int,
        neighbors_per_item: int,
    ) -> None:
        self.reader = reader
        self.keys = keys
        self.cache = cache
        self.recent_items = recent_items
        self.trending_window = trending_window
        self.trending_candidates = trending_candidates
        self.neighbors_per_item = neighbors_per_item
        # The local fallback when Redis is down: the last popular list read successfully.
        self.last_popular: tuple[ScoredItem, ...] = ()

    # -- batch version ---------------------------------------------------------------------
    def _observe_version(self, pointer: bytes | str | None) -> bool:
        """Record the pointer read in this round trip; True when it moved (cache reset)."""
        version = _text(pointer)
        if version != self.cache.version:
            log.info("batch pointer moved %s -> %s: cache reset", self.cache.version, version)
            self.cache.reset(version)
            return True
        return False

    async def read_version(self) -> str | None:
        (pointer,) = await self.reader.execute([("GET", self.keys.batch_pointer)])
        self._observe_version(pointer)
        return self.cache.version

    def _user_batch_command(self, version: str, user_id: str) -> tuple:
        k = self.keys
        return (
            "MGET",
            k.user_recs(version, user_id),
            k.user_features(version, user_id),
            k.user_category_affinity(version, user_id),
            k.user_history(version, user_id),
            k.user_genre_profile(version, user_id),
            k.user_pool_inputs(version, user_id),
        )

    def _keep_user(self, version: str | None, user_id: str, reply) -> UserBatch:
        user = decode_user_batch(*reply, user_id=user_id)
        if self.cache.accepts(version):
            self.cache.keep_user(user_id, user)
        return user

    def _keep_popular(self, version: str | None, blob: bytes | None) -> tuple[ScoredItem, ...]:
        popular = _recs(blob, "popular")
        if popular:
            self.last_popular = popular
        if self.cache.accepts(version):
            self.cache.popular = popular
        return popular

    # -- round trip 1 --------------------------------------------------------------------------
    async def read_user(self, user_id: str) -> UserView:
        for _ in range(2):  # a second pass only when the pointer moved under the first
            version = self.cache.version
            user = self.cache.user(user_id) if version is not None else EMPTY_USER
            popular = self.cache.cached_popular() if version is not None else ()
            k = self.keys
            commands = [
                ("GET", k.batch_pointer),
                _top(k.recent_items(user_id), self.recent_items),
                ("HGETALL", k.session_counters(user_id)),
                _top(k.trending(self.trending_window), self.trending_candidates),
            ]
            if user is None:
                commands.append(self._user_batch_command(version, user_id))
            if popular is None:
                commands.append(("GET", k.popular(version)))
            replies = await self.reader.execute(commands)
            if self._observe_version(replies[0]):
                continue
            at = 4
            if user is None:
                user = self._keep_user(version, user_id, replies[at])
                at += 1
            if popular is None:
                popular = self._keep_popular(version, replies[at])
            return UserView(version, user, _pairs(replies[1]), _hash(replies[2]), _pairs(replies[3]), popular)
        raise RuntimeError(
            "batch pointer moved twice during one request"
        )  # pragma: no cover - flips are minutes apart

    # -- round trips 2 and 3 -------------------------------------------------------------------
    async def read_neighbors_and_items(
        self, version: str | None, recent: list[str], item_ids: list[str], found: bool = True
    ) -> tuple[dict[str, list[tuple[str, float]]], dict[str, tuple[ScoredItem, ...]], dict[str, ItemBatch]]:
        """Co-visitation neighbours and batch similar lists of `recent`, and the batch data of
        `item_ids`, in one round trip (cached parts are not read). found=False: the items returned
        are only those read now (the caller takes cached ones from `cache.items`)."""
        similar, similar_missing = self.cache.lookup_similar(recent) if version is not None else ({}, [])
        items, items_missing = self.cache.lookup_items(item_ids, found) if version is not None else ({}, [])
        commands = [_top(self.keys.covisit(item_id), self.neighbors_per_item) for item_id in recent]
        if similar_missing:
            commands.append(("MGET", *[self.keys.item_similar(version, i) for i in similar_missing]))
        if items_missing:
            commands += self._item_commands(version, items_missing)
        replies = await self.reader.execute(commands)
        covisit = {item_id: _pairs(reply) for item_id, reply in zip(recent, replies)}
        at = len(recent)
        if similar_missing:
            for item_id, blob in zip(similar_missing, replies[at]):
                similar[item_id] = _recs(blob, f"similar of {item_id}")[: self.neighbors_per_item]
                if self.cache.accepts(version):
                    self.cache.similar.put(item_id, similar[item_id])
            at += 1
        if items_missing:
            items.update(self._keep_items(version, items_missing, *replies[at : at + 3]))
        if version is None:
            items.update({i: ItemBatch(None, None) for i in item_ids})
        return covisit, similar, items

    async def read_items(
        self, version: str | None, item_ids: list[str], found: bool = True, cached: bool = True
    ) -> dict[str, ItemBatch]:
        """Batch data of `item_ids` (found=False: only of those not cached; cached=False: read
        every one from Redis)."""
        if version is None or not item_ids:
            return {i: ItemBatch(None, None) for i in item_ids}
        hits, missing = self.cache.lookup_items(item_ids, found) if cached else ({}, item_ids)
        if missing:
            replies = await self.reader.execute(self._item_commands(version, missing))
            hits.update(self._keep_items(version, missing, *replies))
        return hits

    def _item_commands(self, version: str, item_ids: list[str]) -> list[tuple]:
        return [
            ("MGET", *[self.keys.item_features(version, i) for i in item_ids]),
            ("HMGET", self.keys.item_categories(version), *item_ids),
            ("MGET", *[self.keys.item_genres(version, i) for i in item_ids]),
        ]

    def _keep_items(self, version: str, item_ids: list[str], feats, cats, genres) -> dict[str, ItemBatch]:
        out: dict[str, ItemBatch] = {}
        keep = self.cache.accepts(version)
        for item_id, blob, category, genre_blob in zip(item_ids, feats, cats, genres):
            item = ItemBatch(
                _features(blob, len(ITEM_INPUTS), f"features of {item_id}"),
                _text(category),
                _genres(genre_blob, item_id),
            )
            out[item_id] = item
            if keep:
                self.cache.items.put(item_id, item)
        return out

    # -- prefetch ------------------------------------------------------------------------------
    async def warm_user(self, user_id: str) -> UserBatch | None:
        """Read the user's batch keys into the cache (prefetch); None when nothing is published."""
        version = self.cache.version
        if version is None or not self.cache.enabled:
            return None
        if user_id in self.cache.users:
            return UserBatch._make(self.cache.users.get(user_id))
        (reply,) = await self.reader.execute([self._user_batch_command(version, user_id)])
        return self._keep_user(version, user_id, reply)

    # -- status --------------------------------------------------------------------------------
    async def speed_status(self) -> dict[str, str]:
        (raw,) = await self.reader.execute([("HGETALL", self.keys.speed_status)])
        return _hash(raw)

    async def load_popular(self) -> tuple[ScoredItem, ...]:
        """Prime the fallback at start-up (best effort by the caller)."""
        version = await self.read_version()
        if version is None:
            return ()
        (blob,) = await self.reader.execute([("GET", self.keys.popular(version))])
        return self._keep_popular(version, blob)

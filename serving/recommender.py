"""One recommendation request, end to end: store reads, candidates, features, ranker, answer.

Who calls it: the routes of `serving.app`. The Redis part of a request runs under
`settings.serving.redis_budget_s`; when Redis fails or is slow the answer comes from the local
fallback (the last popular list read) with `degraded: true`, and a breaker keeps the next requests
away from Redis for `serving_redis_retry_s` before trying again, so an outage costs no timeouts per
request and recovery needs nobody. The breaker opens at once when Redis refuses or drops the
connection, but only after `serving_redis_timeouts_to_open` time-outs in a row: one late answer (a
busy machine stalling this process) must not send every request of the next half second to the
fallback.

Why one module: a request's path (breaker, reads, candidates, matrix, ranker, answer, fallback) is one
sequence under one time budget; the pure pieces it calls live in serving.candidates, serving.ranking and
serving.store.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import NamedTuple

import numpy as np
from redis.exceptions import RedisError

from feature_store.ranking import ITEM_INPUTS
from feature_store.realtime import from_neighbour_lists, from_neighbour_lists_by_recency, from_session
from feature_store.settings import Settings
from serving.batcher import MicroBatcher
from serving.cache import ItemBatch
from serving.candidates import SOURCES, CandidateColumns, merge_columns, priors_columns
from serving.metrics import ServingMetrics
from serving.models import ModelHolder
from serving.ranking import (
    assemble_matrix,
    genre_block,
    realtime_block,
    select_top_k,
    source_scores_block,
)
from serving.schemas import Recommendations, RecommendedItem, SimilarItems
from serving.store import OnlineStore, UserView

log = logging.getLogger(__name__)

_BATCH_AT = SOURCES.index("batch")
_N_ITEM = len(ITEM_INPUTS)


class RequestSignals(NamedTuple):
    """What the request's seeds (recent items, the context item first) bring: item -> summed
    co-visitation and similar-item scores, and the two weighted by the seeds' recency (the real-time
    inputs `rt_recent_covisit`/`rt_recent_similar`/`rt_recency_covisit`/`rt_recency_similar`)."""

    seeds: list[str]
    covisit: dict[str, float]
    similar: dict[str, float]
    covisit_by_recency: dict[str, float]
    similar_by_recency: dict[str, float]


def answer_items(
    candidates: CandidateColumns,
    chosen: list[int],
    scores: np.ndarray,
    primary: np.ndarray,
    categories: list[str | None],
) -> list[RecommendedItem]:
    """The answer's items: the `chosen` rows of the candidates, in that order, with their final score
    (rounded to 6 digits), primary source, every proposing source, cause and category."""
    ids, because = candidates.item_ids, candidates.because
    return [
        RecommendedItem(
            item_id=ids[i],
            score=round(float(scores[i]), 6),
            source=SOURCES[primary[i]],
            sources=candidates.sources(i),
            because=because[i],
            category=categories[i],
        )
        for i in chosen
    ]


# What a failing or slow online store looks like from here.
STORE_ERRORS = (RedisError, OSError, TimeoutError, asyncio.TimeoutError)


class RedisBreaker:
    """After an error, or `timeouts_to_open` time-outs in a row, skip Redis for `retry_s`; then let
    requests try again."""

    def __init__(self, retry_s: float, timeouts_to_open: int = 1) -> None:
        self.retry_s = retry_s
        self.timeouts_to_open = max(timeouts_to_open, 1)
        self.open_until = 0.0
        self.failures = 0
        self.timeouts_in_a_row = 0

    def allows(self) -> bool:
        return time.monotonic() >= self.open_until

    def failed(self, timed_out: bool = False) -> None:
        self.failures += 1
        self.timeouts_in_a_row = self.timeouts_in_a_row + 1 if timed_out else 0
        if not timed_out or self.timeouts_in_a_row >= self.timeouts_to_open:
            self.open_until = time.monotonic() + self.retry_s

    def succeeded(self) -> None:
        self.open_until = 0.0
        self.timeouts_in_a_row = 0


class Recommender:
    def __init__(
        self,
        settings: Settings,
        store: OnlineStore,
        holder: ModelHolder,
        metrics: ServingMetrics,
        batcher: MicroBatcher | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.holder = holder
        self.metrics = metrics
        self.batcher = batcher
        self.breaker = RedisBreaker(settings.serving.redis_retry_s, settings.serving.redis_timeouts_to_open)
        self._prefetching: set[asyncio.Task] = set()

    # -- recommendations ---------------------------------------------------------------------
    async def recommend(
        self,
        user_id: str,
        k: int,
        *,
        category: str | None = None,
        item_id: str | None = None,
        exclude: frozenset[str] = frozenset(),
    ) -> Recommendations:
        if not self.breaker.allows():
            return self._fallback(user_id, k, exclude, "redis_unavailable")
        try:
            async with asyncio.timeout(self.settings.serving.redis_budget_s):
                view, candidates, items, signals = await self._gather(user_id, item_id, exclude, k)
        except STORE_ERRORS as exc:
            self.breaker.failed(timed_out=isinstance(exc, TimeoutError))
            log.warning(
                "online store failed for user %s (%s: %s): answering from the fallback",
                user_id,
                type(exc).__name__,
                exc,
            )
            return self._fallback(
                user_id, k, exclude, "redis_timeout" if isinstance(exc, TimeoutError) else "redis_error"
            )
        self.breaker.succeeded()
        return await self._rank(user_id, k, view, candidates, items, signals, category)

    async def _gather(self, user_id: str, context_item: str | None, exclude: frozenset[str], k: int):
        settings = self.settings
        view = await self.store.read_user(user_id)
        recent = [item for item, _ in view.recent]
        seeds = recent[: settings.serving.recent_items]
        if context_item is not None and context_item not in seeds:
            seeds = [context_item, *seeds]
        consumed = set(view.user.seen) | set(recent) | set(exclude)
        if context_item is not None:
            consumed.add(context_item)
        use_popular = not view.user.recs
        known = [rec[0] for rec in view.user.recs] + [item for item, _ in view.trending]
        if use_popular:
            known += [rec[0] for rec in view.popular]
        known = [i for i in dict.fromkeys(known) if i not in consumed][: settings.serving.max_candidates]
        # Cached items are taken straight from the cache's item table (`_item_block`).
        covisit, similar, items = await self.store.read_neighbors_and_items(view.version, seeds, known, False)
        # Plain (item, score, because) tuples: hundreds per request. Batch and popular lists are
        # passed as they are: their third field (the stored source) is ignored for those sources.
        proposals = {
            "batch": view.user.recs,
            "covisit": [(n, s, seed) for seed in seeds for n, s in covisit.get(seed, ())],
            "similar": [(item, score, seed) for seed in seeds for item, score, _ in similar.get(seed, ())],
            "trending": [(item, score, None) for item, score in view.trending],
            "popular": view.popular if use_popular else (),
        }
        columns = merge_columns(proposals, consumed, settings.serving.max_candidates)
        if len(columns) < k and not use_popular:  # top up from popularity when the pool is thin
            columns = columns.top_up(view.popular, "popular", consumed)
        candidate_ids: list[str] = columns.item_ids
        table = self.store.cache.items.index
        missing = [i for i in candidate_ids if i not in items and i not in table]
        if missing:
            items.update(await self.store.read_items(view.version, missing, False))
        if not self.store.cache.accepts(view.version):
            # The pointer moved during this request: the table no longer holds this version, so read
            # what it held (one answer never mixes two batch versions).
            missing = [i for i in candidate_ids if i not in items]
            items.update(await self.store.read_items(view.version, missing, cached=False))
        neighbours = settings.serving.neighbors_per_item
        signals = RequestSignals(
            seeds,
            from_neighbour_lists(seeds, covisit, neighbours),
            from_neighbour_lists(seeds, similar, neighbours),
            from_neighbour_lists_by_recency(seeds, covisit, neighbours),
            from_neighbour_lists_by_recency(seeds, similar, neighbours),
        )
        return view, columns, items, signals

    async def _rank(
        self,
        user_id: str,
        k: int,
        view: UserView,
        candidates: CandidateColumns,
        items: dict[str, ItemBatch],
        signals: RequestSignals,
        category: str | None,
    ) -> Recommendations:
        """The champion's order over all candidates, or the priors' when there is none (or it failed:
        then `degraded`)."""
        settings = self.settings
        ids = candidates.item_ids
        block, categories, genres = self._item_block(view.version, ids, items)
        session_events, shares = from_session(view.session)
        prior, primary = priors_columns(candidates, shares, categories)
        ranker = self.holder.current if settings.serving.use_ranker else None  # held for the whole request
        model_scores = None
        if ranker is not None and ids:
            matrix = self._matrix(
                view, candidates, block, categories, genres, shares, session_events, signals
            )
            model_scores = await self._score(ranker, matrix)
        final = prior if model_scores is None else model_scores.astype(np.float64)
        chosen = select_top_k(final, categories, k, settings.serving.max_per_category, category)
        return Recommendations(
            user_id=user_id,
            items=answer_items(candidates, chosen, final, primary, categories),
            batch_version=view.version,
            model_version=ranker.version if model_scores is not None else None,
            ranked_by="model" if model_scores is not None else "priors",
            degraded=ranker is not None and bool(ids) and model_scores is None,
            candidates=len(ids),
        )

    def _matrix(
        self,
        view: UserView,
        candidates: CandidateColumns,
        block: np.ndarray,
        categories: list[str | None],
        genres: list[tuple[str, ...]],
        shares: dict[str, float],
        session_events: float,
        signals: RequestSignals,
    ) -> np.ndarray:
        """The ranker's input rows (RANKER_FEATURES order) of the request's candidates."""
        ids = candidates.item_ids
        affinity_source = view.user.affinity or shares
        # per distinct category (a few dozen), then one C-level pass over the candidates
        affinity = {c: affinity_source.get(c, np.nan) for c in set(categories) if c is not None}
        affinity[None] = np.nan
        affinities = np.fromiter(map(affinity.__getitem__, categories), dtype=np.float32, count=len(ids))
        batch_rows = np.flatnonzero(candidates.proposed[:, _BATCH_AT])
        rec_row = {rec[0]: n for n, rec in enumerate(view.user.recs)}
        rec_rows = np.fromiter(
            (rec_row[ids[row]] for row in batch_rows.tolist()), dtype=np.intp, count=len(batch_rows)
        )
        sources = source_scores_block(len(ids), batch_rows, rec_rows, view.user.source_scores)
        realtime = realtime_block(
            ids,
            categories,
            session_events,
            shares,
            signals.covisit,
            signals.similar,
            signals.covisit_by_recency,
            signals.similar_by_recency,
        )
        genre = genre_block(view.user.genre_profile, genres)
        return assemble_matrix(view.user.features, block, affinities, genre, sources, realtime)

    async def _score(self, ranker, matrix: np.ndarray) -> np.ndarray | None:
        """The ranker's scores of `matrix`; None when it fails (a ranker failure must not fail the
        request: the answer is ranked by priors)."""
        try:
            return await self.batcher.predict(ranker, matrix) if self.batcher else ranker.predict(matrix)
        except Exception as exc:
            self.metrics.model_errors.inc()
            log.error("ranker %s v%s failed: %s", ranker.name, ranker.version, exc)
            return None

    def _item_block(
        self, version: str | None, ids: list[str], items: dict[str, ItemBatch]
    ) -> tuple[np.ndarray, list[str | None], list[tuple[str, ...]]]:
        """Features (rows, len(ITEM_INPUTS)), categories and genres of `ids`: one take from the cache's
        item table when it holds this version, the request's own reads for the rest."""
        cache = self.store.cache
        if cache.accepts(version):
            table = cache.items
            rows = table.rows(ids)
            block = table.features[rows]
            categories = list(map(table.categories.__getitem__, rows))
            genres = list(map(table.genres.__getitem__, rows))
            if 0 not in rows:
                return block, categories, genres
            todo = [n for n, row in enumerate(rows) if row == 0]
        else:
            block = np.full((len(ids), _N_ITEM), np.nan, dtype=np.float32)
            categories = [None] * len(ids)
            genres = [()] * len(ids)
            todo = range(len(ids))
        for n in todo:
            item = items.get(ids[n])
            if item is not None:
                categories[n] = item.category
                genres[n] = item.genres
                if item.features is not None and item.features.shape[0] == _N_ITEM:
                    block[n] = item.features
        return block, categories, genres

    def _fallback(self, user_id: str, k: int, exclude: frozenset[str], reason: str) -> Recommendations:
        self.metrics.degraded.labels("recommendations", reason).inc()
        return Recommendations(
            user_id=user_id,
            items=self._fallback_items(k, exclude),
            batch_version=self.store.cache.version,
            model_version=None,
            ranked_by="priors",
            degraded=True,
            candidates=0,
        )

    def _fallback_items(self, k: int, exclude: frozenset[str]) -> list[RecommendedItem]:
        popular = [rec for rec in self.store.last_popular if rec[0] not in exclude][:k]
        best = max((rec[1] for rec in popular), default=0.0)
        return [
            RecommendedItem(
                item_id=rec[0],
                score=round(rec[1] / best, 6) if best > 0 else 0.0,
                source="popular",
                sources=["popular"],
            )
            for rec in popular
        ]

    # -- similar items -------------------------------------------------------------------------
    async def similar(self, item_id: str, k: int) -> SimilarItems:
        if not self.breaker.allows():
            return self._similar_fallback(item_id, k, "redis_unavailable")
        try:
            async with asyncio.timeout(self.settings.serving.redis_budget_s):
                version = self.store.cache.version
                if version is None:
                    version = await self.store.read_version()
                covisit, similar, _ = await self.store.read_neighbors_and_items(version, [item_id], [])
                proposals = {
                    "covisit": [(n, s, None) for n, s in covisit.get(item_id, ())],
                    "similar": [(r[0], r[1], None) for r in similar.get(item_id, ())],
                }
                candidates = merge_columns(proposals, {item_id}, self.settings.serving.max_candidates)
                items = await self.store.read_items(version, candidates.item_ids)
        except STORE_ERRORS as exc:
            self.breaker.failed(timed_out=isinstance(exc, TimeoutError))
            log.warning("online store failed for similar(%s): %s", item_id, exc)
            return self._similar_fallback(
                item_id, k, "redis_timeout" if isinstance(exc, TimeoutError) else "redis_error"
            )
        self.breaker.succeeded()
        prior, primary = priors_columns(candidates)
        ids = candidates.item_ids
        categories = [items[i].category if i in items else None for i in ids]
        chosen = select_top_k(prior, categories, k)
        return SimilarItems(
            item_id=item_id,
            items=answer_items(candidates, chosen, prior, primary, categories),
            batch_version=version,
            degraded=False,
        )

    def _similar_fallback(self, item_id: str, k: int, reason: str) -> SimilarItems:
        self.metrics.degraded.labels("similar", reason).inc()
        return SimilarItems(
            item_id=item_id,
            items=self._fallback_items(k, frozenset({item_id})),
            batch_version=self.store.cache.version,
            degraded=True,
        )

    # -- per-user prefetch ---------------------------------------------------------------------
    def schedule_prefetch(self, items_by_user: dict[str, list[str]]) -> None:
        """Warm the cache for users whose events just arrived (in the background: the event
        request does not wait). Their next recommendation finds their batch keys, the similar lists
        of the items they just touched and those neighbours' features in memory."""
        if (
            not (self.settings.serving.prefetch_enabled and self.store.cache.enabled)
            or not self.breaker.allows()
        ):
            return
        cache = self.store.cache
        for user_id, item_ids in items_by_user.items():
            if user_id in cache.users and all(i in cache.similar and i in cache.items for i in item_ids):
                continue  # already warm: a prefetch would only cost the next request CPU
            if len(self._prefetching) >= self.settings.serving.max_prefetches:
                # A burst of events must not become a burst of Redis reads competing with requests.
                self.metrics.prefetches.labels("skipped").inc()
                continue
            task = asyncio.create_task(self.prefetch(user_id, item_ids))
            self._prefetching.add(task)
            task.add_done_callback(self._prefetching.discard)

    async def prefetch(self, user_id: str, item_ids: list[str]) -> bool:
        try:
            async with asyncio.timeout(self.settings.serving.redis_budget_s * 5):
                version = self.store.cache.version
                if version is None:
                    version = await self.store.read_version()
                if version is None:
                    return False
                await self.store.warm_user(user_id)
                seeds = list(dict.fromkeys(item_ids))
                covisit, similar, items = await self.store.read_neighbors_and_items(version, seeds, seeds)
                neighbours = {n for pairs in covisit.values() for n, _ in pairs}
                neighbours |= {r[0] for recs in similar.values() for r in recs}
                await self.store.read_items(version, [n for n in neighbours if n not in items])
        except STORE_ERRORS as exc:
            self.metrics.prefetches.labels("failed").inc()
            log.info("prefetch for %s failed: %s", user_id, exc)
            return False
        self.metrics.prefetches.labels("done").inc()
        return True

    async def drain_prefetches(self) -> None:
        """Wait for running prefetches (tests, shutdown)."""
        while self._prefetching:
            await asyncio.gather(*list(self._prefetching), return_exceptions=True)

    async def stop(self) -> None:
        for task in list(self._prefetching):
            task.cancel()
        await asyncio.gather(*list(self._prefetching), return_exceptions=True)

"""Ranking of one request's candidates, as pure functions over columns: the ranker's input matrix
and the final top-k with an optional per-category cap.

Called by `serving.recommender`. The matrix follows `feature_store.ranking.RANKER_FEATURES` (the same
names and order training uses); a model whose feature list is a different order or a subset gets its
columns picked by name (`feature_store.registry.LoadedRanker.columns`). Each block means what it meant in
training: the nightly per-source scores come from the published recommendations of the user (never
from a real-time source), the real-time inputs from the speed layer's state through the readers of
`feature_store.realtime`. tests/serving_reference.py holds the per-candidate meaning the functions here
are compared with value for value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from feature_store.genres import GENRE_INPUTS, profile_norm
from feature_store.ranking import (
    CROSS_INPUTS,
    ITEM_INPUTS,
    NIGHTLY_INPUTS,
    RANKER_FEATURES,
    REALTIME_INPUTS,
    USER_INPUTS,
)

_N_USER = len(USER_INPUTS)
_N_ITEM = len(ITEM_INPUTS)
_CROSS_AT = _N_USER + _N_ITEM
_CAND_AT = _CROSS_AT + len(CROSS_INPUTS)
assert CROSS_INPUTS[1:] == GENRE_INPUTS
_RT_AT = _CAND_AT + len(NIGHTLY_INPUTS)
assert _RT_AT + len(REALTIME_INPUTS) == len(RANKER_FEATURES)


def source_scores_block(
    rows: int, batch_rows: np.ndarray, rec_rows: np.ndarray, source_scores: np.ndarray | None
) -> np.ndarray:
    """(rows, len(NIGHTLY_INPUTS)): the nightly inputs (sources' and pool scorers') of the candidates
    the published recommendations hold (`batch_rows`, their rows `rec_rows` in `source_scores`); NaN
    elsewhere."""
    block = np.full((rows, len(NIGHTLY_INPUTS)), np.nan, dtype=np.float32)
    if source_scores is not None and len(batch_rows):
        block[batch_rows] = source_scores[rec_rows]
    return block


def genre_block(profile: Mapping[str, float] | None, genres: Sequence[tuple[str, ...]]) -> np.ndarray:
    """(rows, len(GENRE_INPUTS)): feature_store.genres.genre_inputs of each candidate's genres against
    the user's profile, over all candidates' genres at once (one flat share array, reduced per row);
    NaN: missing."""
    rows = len(genres)
    block = np.full((rows, len(GENRE_INPUTS)), np.nan, dtype=np.float32)
    if not profile or not rows:
        return block
    lengths = np.fromiter(map(len, genres), dtype=np.intp, count=rows)
    present = lengths > 0
    if not present.any():
        return block
    share = profile.get
    flat = np.fromiter(
        (share(g, 0.0) for row in genres for g in row), dtype=np.float64, count=int(lengths.sum())
    )
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))[present]
    counts = lengths[present].astype(np.float64)
    totals = np.add.reduceat(flat, starts)
    block[present, 0] = totals / (profile_norm(profile) * np.sqrt(counts))
    block[present, 1] = np.maximum.reduceat(flat, starts)
    block[present, 2] = totals / counts
    return block


def realtime_block(
    ids: Sequence[str],
    categories: Sequence[str | None],
    session_events: float,
    category_shares: Mapping[str, float],
    covisit: Mapping[str, float],
    similar: Mapping[str, float],
    covisit_by_recency: Mapping[str, float],
    similar_by_recency: Mapping[str, float],
) -> np.ndarray:
    """(rows, len(REALTIME_INPUTS)) in REALTIME_INPUTS order: the session's event count, the share of
    the candidate's category in the session, its summed co-visitation and similar-item scores over
    the seeds, and its recency-weighted co-visitation and similar-item scores (feature_store.realtime.from_session /
    from_neighbour_lists / from_neighbour_lists_by_recency give these maps); 0 where none."""
    rows = len(ids)
    block = np.zeros((rows, len(REALTIME_INPUTS)), dtype=np.float32)
    block[:, 0] = session_events
    if category_shares:
        share = {c: category_shares.get(c, 0.0) for c in set(categories) if c is not None}
        share[None] = 0.0
        block[:, 1] = np.fromiter(map(share.__getitem__, categories), dtype=np.float32, count=rows)
    for column, scores in enumerate((covisit, similar, covisit_by_recency, similar_by_recency), start=2):
        if scores:
            block[:, column] = np.fromiter((scores.get(i, 0.0) for i in ids), dtype=np.float32, count=rows)
    return block


def assemble_matrix(
    user_features: np.ndarray | None,
    item_block: np.ndarray,
    affinities: np.ndarray,
    genres: np.ndarray,
    source_scores: np.ndarray,
    realtime: np.ndarray,
) -> np.ndarray:
    """One float32 row per candidate in RANKER_FEATURES order from blocks already in rows: item features
    (rows, len(ITEM_INPUTS)), the affinity column, `genre_block`, `source_scores_block` and
    `realtime_block`; NaN: missing."""
    rows = item_block.shape[0]
    matrix = np.empty((rows, len(RANKER_FEATURES)), dtype=np.float32)
    matrix[:, :_N_USER] = (
        user_features if user_features is not None and user_features.shape[0] == _N_USER else np.nan
    )
    matrix[:, _N_USER:_CROSS_AT] = item_block
    matrix[:, _CROSS_AT] = affinities
    matrix[:, _CROSS_AT + 1 : _CAND_AT] = genres
    matrix[:, _CAND_AT:_RT_AT] = source_scores
    matrix[:, _RT_AT:] = realtime
    return matrix


def select_top_k(
    scores: np.ndarray,
    categories: Sequence[str | None],
    k: int,
    max_per_category: int = 0,
    preferred_category: str | None = None,
) -> list[int]:
    """Indices of the answer, best first (ties keep candidate order).

    Items of `preferred_category` (the page's category) come before the others; with
    `max_per_category` > 0 no category gets more than that many slots while others still have items
    (the capped ones fill the remaining slots, so the answer is never shorter than it could be)."""
    scores = np.asarray(scores, dtype=np.float64)
    if preferred_category is None:
        order = np.argsort(-scores, kind="stable")
    else:
        preferred = np.fromiter(
            (c == preferred_category for c in categories), dtype=bool, count=len(categories)
        )
        order = np.lexsort((-scores, ~preferred))
    if max_per_category <= 0:
        return order[:k].tolist()
    return _capped(order.tolist(), categories, k, max_per_category)


def _capped(order: list[int], categories: Sequence[str | None], k: int, max_per_category: int) -> list[int]:
    """The first `k` of `order` with at most `max_per_category` per category while others remain."""
    chosen: list[int] = []
    overflow: list[int] = []
    per_category: dict[str, int] = {}
    for index in order:
        category = categories[index]
        if category is not None and per_category.get(category, 0) >= max_per_category:
            overflow.append(index)
            continue
        if category is not None:
            per_category[category] = per_category.get(category, 0) + 1
        chosen.append(index)
        if len(chosen) == k:
            return chosen
    return chosen + overflow[: k - len(chosen)]

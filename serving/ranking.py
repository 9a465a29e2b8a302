"""Ranking of one request's candidates, as pure functions: the ranker's input matrix, the blend of
ranker and prior scores, and the final top-k with an optional per-category cap.

Called by `serving.recommender`. The matrix follows `feature_store.ranking.RANKER_FEATURES` (the same
names and order training uses); a model whose feature list is a different order or a subset gets its
columns picked by name (`feature_store.registry.LoadedRanker.columns`).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from feature_store.ranking import CANDIDATE_SOURCES, ITEM_INPUTS, RANKER_FEATURES, USER_INPUTS
from serving.candidates import SOURCES

_N_USER = len(USER_INPUTS)
_N_ITEM = len(ITEM_INPUTS)
_CROSS_AT = _N_USER + _N_ITEM
_CAND_AT = _CROSS_AT + 1
# Which request source fills which candidate-score input. The batch recommendations carry the
# champion's score for the candidate source that proposed them (`als`, `covisit` or `popular` in the
# stored source field); real-time sources map onto the closest training-time source.
REQUEST_SOURCE_INPUT: dict[str, str] = {"covisit": "covisit", "similar": "covisit", "trending": "popular", "popular": "popular"}


def feature_matrix(
    user_features: np.ndarray | None,
    item_features: Sequence[np.ndarray | None],
    affinities: Sequence[float | None],
    candidate_scores: np.ndarray,
) -> np.ndarray:
    """One float32 row per candidate in RANKER_FEATURES order; missing values are NaN.

    `candidate_scores` is the (rows, len(CANDIDATE_SOURCES)) block built by `candidate_inputs`."""
    rows = len(item_features)
    matrix = np.full((rows, len(RANKER_FEATURES)), np.nan, dtype=np.float32)
    if rows == 0:
        return matrix
    if user_features is not None and user_features.shape[0] == _N_USER:
        matrix[:, :_N_USER] = user_features
    missing = _MISSING_ITEM
    # concatenate + reshape: vstack would wrap each of the ~200 vectors in atleast_2d first
    matrix[:, _N_USER:_CROSS_AT] = np.concatenate(
        [f if f is not None and f.shape[0] == _N_ITEM else missing for f in item_features]
    ).reshape(rows, _N_ITEM)
    matrix[:, _CROSS_AT] = np.array([np.nan if a is None else a for a in affinities], dtype=np.float32)
    matrix[:, _CAND_AT:] = candidate_scores
    return matrix


_MISSING_ITEM = np.full(_N_ITEM, np.nan, dtype=np.float32)
_INPUT_COLUMN = {source: i for i, source in enumerate(CANDIDATE_SOURCES)}
_REQUEST_COLUMN = {source: _INPUT_COLUMN[target] for source, target in REQUEST_SOURCE_INPUT.items()}


def candidate_inputs(scores: Sequence[Mapping[str, float]], batch_sources: Sequence[str | None]) -> np.ndarray:
    """The candidate-score inputs (`cand_als`, `cand_covisit`, `cand_popular`) of each candidate
    from the scores of the request's sources (the best when two map to one input); NaN where none does."""
    best: list[list[float]] = [[np.nan] * len(CANDIDATE_SOURCES) for _ in scores]
    als = _INPUT_COLUMN["als"]
    for row, (request_scores, batch_source) in enumerate(zip(scores, batch_sources)):
        values = best[row]
        for source, score in request_scores.items():
            column = _INPUT_COLUMN.get(batch_source, als) if source == "batch" else _REQUEST_COLUMN[source]
            if not values[column] >= score:  # NaN (unset) or lower
                values[column] = score
    return np.array(best, dtype=np.float32).reshape(len(scores), len(CANDIDATE_SOURCES))


def min_max(values: np.ndarray) -> np.ndarray:
    """Scale to [0, 1]; all-equal (or non-finite) inputs become 0.5 so they neither win nor lose."""
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    if not finite.any():
        return np.full(values.shape, 0.5)
    low, high = values[finite].min(), values[finite].max()
    if high - low <= 1e-12:
        out = np.full(values.shape, 0.5)
    else:
        out = (values - low) / (high - low)
    out[~finite] = 0.0
    return out


def blend(model_scores: np.ndarray | None, priors: Sequence[float], model_weight: float) -> np.ndarray:
    """Final scores: `model_weight` x the ranker's scores (min-max scaled within the request) +
    the rest x the candidates' priors. Without a ranker the priors alone."""
    prior = np.asarray(priors, dtype=np.float64)
    if model_scores is None:
        return prior
    return model_weight * min_max(model_scores) + (1.0 - model_weight) * prior


def select_top_k(
    scores: Sequence[float],
    categories: Sequence[str | None],
    k: int,
    max_per_category: int = 0,
    preferred_category: str | None = None,
) -> list[int]:
    """Indices of the answer, best first.

    Items of `preferred_category` (the page's category) come before the others; with
    `max_per_category` > 0 no category gets more than that many slots while others still have items
    (the capped ones fill the remaining slots, so the answer is never shorter than it could be)."""
    order = sorted(
        range(len(scores)),
        key=lambda i: (preferred_category is not None and categories[i] == preferred_category, scores[i]),
        reverse=True,
    )
    return _capped(order, categories, k, max_per_category)


def select_top_k_columns(
    scores: np.ndarray,
    categories: Sequence[str | None],
    k: int,
    max_per_category: int = 0,
    preferred_category: str | None = None,
) -> list[int]:
    """`select_top_k` with numpy's stable sort: the same indices (ties keep candidate order)."""
    if preferred_category is None:
        order = np.argsort(-scores, kind="stable")
    else:
        preferred = np.fromiter((c == preferred_category for c in categories), dtype=bool, count=len(categories))
        order = np.lexsort((-scores, ~preferred))
    if max_per_category <= 0:
        return order[:k].tolist()
    return _capped(order.tolist(), categories, k, max_per_category)


def _capped(order: list[int], categories: Sequence[str | None], k: int, max_per_category: int) -> list[int]:
    """The first `k` of `order` with at most `max_per_category` per category while others remain."""
    if max_per_category <= 0:
        return order[:k]
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


# -- the columnar path (see serving.candidates.CandidateColumns) -----------------------------------
_BATCH_AT = SOURCES.index("batch")
_REQUEST_SOURCE_AT: tuple[tuple[int, int], ...] = tuple(
    (at, _REQUEST_COLUMN[source]) for at, source in enumerate(SOURCES) if source != "batch"
)


def candidate_inputs_columns(scores: np.ndarray, batch_columns: np.ndarray) -> np.ndarray:
    """`candidate_inputs` from a (rows, len(SOURCES)) score block (NaN: not proposed) and, per row, the
    CANDIDATE_SOURCES column its batch score fills (`batch_input_column` of its stored source)."""
    rows = scores.shape[0]
    best = np.full((rows, len(CANDIDATE_SOURCES)), np.nan)
    for at, column in _REQUEST_SOURCE_AT:
        best[:, column] = np.fmax(best[:, column], scores[:, at])
    if rows:
        index = np.arange(rows)
        best[index, batch_columns] = np.fmax(best[index, batch_columns], scores[:, _BATCH_AT])
    return best.astype(np.float32)


def batch_input_column(batch_source: str | None) -> int:
    """The CANDIDATE_SOURCES column a batch recommendation's score fills (its stored source; `als` when unknown)."""
    return _INPUT_COLUMN.get(batch_source, _INPUT_COLUMN["als"])


def assemble_matrix(user_features: np.ndarray | None, item_block: np.ndarray, affinities: np.ndarray,
                    candidate_scores: np.ndarray) -> np.ndarray:
    """`feature_matrix` from an item block already in rows (rows, len(ITEM_INPUTS)) and an affinity
    column (NaN: none): one copy per block instead of one per candidate."""
    rows = item_block.shape[0]
    matrix = np.empty((rows, len(RANKER_FEATURES)), dtype=np.float32)
    matrix[:, :_N_USER] = user_features if user_features is not None and user_features.shape[0] == _N_USER else np.nan
    matrix[:, _N_USER:_CROSS_AT] = item_block
    matrix[:, _CROSS_AT] = affinities
    matrix[:, _CAND_AT:] = candidate_scores
    return matrix

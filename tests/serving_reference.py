"""The per-candidate meaning of serving's columnar functions: the oracle tests compare them with.

Serving keeps one implementation, over numpy columns (serving.candidates, serving.ranking); these
plain versions (one Python object per candidate) say the same thing slowly and readably, and the
unit tests assert that both give identical results.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from feature_store.genres import GENRE_INPUTS, genre_inputs
from feature_store.ranking import (
    ITEM_INPUTS,
    NIGHTLY_INPUTS,
    RANKER_FEATURES,
    REALTIME_INPUTS,
    USER_INPUTS,
)
from serving.candidates import _CAUSED, SOURCE_WEIGHTS, SOURCES


@dataclass(slots=True)
class Candidate:
    item_id: str
    scores: dict[str, float] = field(default_factory=dict)  # source -> raw score
    because: str | None = None  # the recent item behind a covisit/similar candidate


class Proposal(NamedTuple):
    """One source's proposal of an item (a tuple: hundreds are built per request)."""

    item_id: str
    score: float
    because: str | None = None


def merge_candidates(
    proposals: Mapping[str, Iterable[tuple[str, float, str | None]]],
    consumed: set[str] | frozenset[str],
    max_candidates: int,
) -> dict[str, Candidate]:
    """Union of the sources' proposals minus `consumed`, at most `max_candidates` items.

    Each proposal is `(item_id, score, because)` (a `Proposal` or any such tuple; `because` counts
    only for `covisit`/`similar`). Sources are taken in `SOURCES` order, so when the cap bites the
    strongest sources keep their items; an item proposed twice by one source keeps its best score."""
    merged: dict[str, Candidate] = {}
    for source in SOURCES:
        for item_id, score, because in proposals.get(source, ()):
            if item_id in consumed:
                continue
            candidate = merged.get(item_id)
            if candidate is None:
                if len(merged) >= max_candidates:
                    continue
                candidate = merged[item_id] = Candidate(
                    item_id, {source: score}, because if source in _CAUSED else None
                )
                continue
            scores = candidate.scores
            if score > scores.get(source, float("-inf")):
                scores[source] = score
                if because is not None and candidate.because is None and source in _CAUSED:
                    candidate.because = because
    return merged


def priors(
    candidates: list[Candidate],
    session_shares: Mapping[str, float] | None = None,
    categories: list[str | None] | None = None,
) -> tuple[list[float], list[str]]:
    """Prior score in [0, 1] and primary source of each candidate.

    With `session_shares` (category -> share of this session's events) and the candidates'
    categories, a candidate's prior is multiplied by (1 + share / 2), capped at 1: up to x1.5 for the
    category the session is about, so new users' trending/popular lists follow what they just did."""
    best: dict[str, float] = {}
    for candidate in candidates:
        for source, score in candidate.scores.items():
            if score > best.get(source, 0.0):
                best[source] = score
    boost = bool(session_shares) and categories is not None
    values: list[float] = []
    primary: list[str] = []
    # A candidate's scores are inserted in SOURCES order (merge_candidates), so on a tie the
    # stronger source stays primary.
    for index, candidate in enumerate(candidates):
        top_value, top_source = -1.0, "popular"
        for source, score in candidate.scores.items():
            scale = best.get(source, 0.0)
            normalized = score / scale if scale > 0 else 1.0
            weighted = SOURCE_WEIGHTS[source] * (
                1.0 if normalized > 1.0 else 0.0 if normalized < 0.0 else normalized
            )
            if weighted > top_value:
                top_value, top_source = weighted, source
        if boost:
            category = categories[index]
            if category is not None:
                top_value = min(1.0, top_value * (1.0 + 0.5 * session_shares.get(category, 0.0)))
        values.append(top_value)
        primary.append(top_source)
    return values, primary


def feature_rows(
    user_features: np.ndarray | None,
    item_features: Sequence[np.ndarray | None],
    affinities: Sequence[float | None],
    source_scores: Sequence[Mapping[str, float] | None],  # NIGHTLY_INPUTS name -> value
    realtime: Sequence[Sequence[float]],
    genre_profile: Mapping[str, float] | None = None,
    genres: Sequence[Sequence[str]] | None = None,
) -> np.ndarray:
    """One float32 row per candidate in RANKER_FEATURES order, built value by value; NaN: missing."""
    rows = []
    genres = genres if genres is not None else [()] * len(item_features)
    for item, affinity, scores, live, item_genres in zip(
        item_features, affinities, source_scores, realtime, genres
    ):
        row: dict[str, float] = {}
        if user_features is not None and len(user_features) == len(USER_INPUTS):
            row.update(zip(USER_INPUTS, map(float, user_features)))
        if item is not None and len(item) == len(ITEM_INPUTS):
            row.update(zip(ITEM_INPUTS, map(float, item)))
        if affinity is not None:
            row["ui_category_affinity"] = affinity
        row.update(zip(GENRE_INPUTS, genre_inputs(genre_profile or {}, item_genres)))
        for name, score in (scores or {}).items():
            assert name in NIGHTLY_INPUTS, name
            row[name] = score
        row.update(zip(REALTIME_INPUTS, live))
        rows.append([row.get(name, np.nan) for name in RANKER_FEATURES])
    return np.array(rows, dtype=np.float32).reshape(len(rows), len(RANKER_FEATURES))


def select_top_k(
    scores: Sequence[float],
    categories: Sequence[str | None],
    k: int,
    max_per_category: int = 0,
    preferred_category: str | None = None,
) -> list[int]:
    """Best first (stable on ties), the page's category first, at most `max_per_category` per
    category while others remain (the capped ones fill what is left)."""
    order = sorted(
        range(len(scores)),
        key=lambda i: (
            not (preferred_category is not None and categories[i] == preferred_category),
            -scores[i],
        ),
    )
    chosen: list[int] = []
    overflow: list[int] = []
    per_category: dict[str, int] = {}
    for index in order:
        category = categories[index]
        if (
            max_per_category > 0
            and category is not None
            and per_category.get(category, 0) >= max_per_category
        ):
            overflow.append(index)
            continue
        if category is not None:
            per_category[category] = per_category.get(category, 0) + 1
        chosen.append(index)
    return (chosen + overflow)[:k]

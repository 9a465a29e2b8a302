"""Candidate generation for one request, as pure functions over what the store returned.

Called by `serving.recommender`. Candidates are the union of the sources below, minus what the user
already consumed; each keeps the raw score of every source that proposed it, and gets a prior in
[0, 1]: the best over its sources of (source weight × score normalized by that source's best score in
this request). The prior orders candidates when no ranker is loaded and is blended with the ranker's
score otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping, NamedTuple

# Why these weights: what the user did seconds ago (co-visitation of their recent items) is the
# strongest signal, then the nightly personal recommendations, then neighbours from the batch
# similar-items lists, then what is hot right now, then all-time popularity (the fallback).
SOURCE_WEIGHTS: dict[str, float] = {"covisit": 1.0, "batch": 0.9, "similar": 0.7, "trending": 0.5, "popular": 0.3}
SOURCES: tuple[str, ...] = tuple(SOURCE_WEIGHTS)
_CAUSED = frozenset({"covisit", "similar"})  # sources whose candidates come from one recent item


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
                candidate = merged[item_id] = Candidate(item_id, {source: score}, because if source in _CAUSED else None)
                continue
            scores = candidate.scores
            if score > scores.get(source, float("-inf")):
                scores[source] = score
                if because is not None and candidate.because is None and source in _CAUSED:
                    candidate.because = because
    return merged


def priors(candidates: list[Candidate], session_shares: Mapping[str, float] | None = None,
           categories: list[str | None] | None = None) -> tuple[list[float], list[str]]:
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
            weighted = SOURCE_WEIGHTS[source] * (1.0 if normalized > 1.0 else 0.0 if normalized < 0.0 else normalized)
            if weighted > top_value:
                top_value, top_source = weighted, source
        if boost:
            category = categories[index]
            if category is not None:
                top_value = min(1.0, top_value * (1.0 + 0.5 * session_shares.get(category, 0.0)))
        values.append(top_value)
        primary.append(top_source)
    return values, primary


def session_category_shares(session: Mapping[str, str]) -> dict[str, float]:
    """Share of the current session's events per category, from the `cat:<category>` counters."""
    counts: dict[str, float] = {}
    for field_name, raw in session.items():
        if field_name.startswith("cat:"):
            try:
                counts[field_name[4:]] = float(raw)
            except ValueError:
                continue
    total = sum(v for v in counts.values() if v > 0)
    return {c: v / total for c, v in counts.items() if v > 0} if total else {}

"""Candidate generation for one request, as pure functions over what the store returned.

Called by `serving.recommender`. Candidates are the union of the sources below, minus what the user
already consumed; each keeps the raw score of every source that proposed it, and gets a prior in
[0, 1]: the best over its sources of (source weight × score normalized by that source's best score in
this request). The champion ranker orders the candidates; the prior orders them only when there is
no champion or it failed (the answer says `ranked_by: priors`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice, repeat

import numpy as np

# Why these weights: what the user did seconds ago (co-visitation of their recent items) is the
# strongest signal, then the nightly personal recommendations, then neighbours from the batch
# similar-items lists, then what is hot right now, then all-time popularity (the fallback).
SOURCE_WEIGHTS: dict[str, float] = {
    "covisit": 1.0,
    "batch": 0.9,
    "similar": 0.7,
    "trending": 0.5,
    "popular": 0.3,
}
SOURCES: tuple[str, ...] = tuple(SOURCE_WEIGHTS)
_CAUSED = frozenset({"covisit", "similar"})  # sources whose candidates come from one recent item


# -- columns -----------------------------------------------------------------------------------
# Merge and priors over numpy columns instead of one object per item: what a request pays per
# candidate is a share of one numpy call. tests/serving_reference.py holds the per-candidate meaning
# they are tested against value for value.
_SOURCE_COLUMN: dict[str, int] = {source: n for n, source in enumerate(SOURCES)}
_WEIGHTS = np.array([SOURCE_WEIGHTS[s] for s in SOURCES], dtype=np.float64)


@dataclass(slots=True)
class CandidateColumns:
    """Merged candidates, one row each in first-proposed order (as `merge_candidates`)."""

    item_ids: list[str]
    scores: np.ndarray  # (rows, len(SOURCES)) float64, the best raw score per source; NaN: not proposed
    proposed: np.ndarray  # (rows, len(SOURCES)) bool
    because: list[str | None]

    def __len__(self) -> int:
        return len(self.item_ids)

    def sources(self, row: int) -> list[str]:
        """The sources that proposed the row's item, in SOURCES order (as `Candidate.scores`)."""
        return [SOURCES[n] for n in np.flatnonzero(self.proposed[row])]

    def top_up(
        self, items: Iterable[tuple[str, float, str | None]], source: str, consumed: set[str] | frozenset[str]
    ) -> CandidateColumns:
        """Add the items not yet candidates nor consumed, `source` scoring them (the first score of an
        item listed twice), past any cap: the thin-pool top-up of `serving.recommender`."""
        known = set(self.item_ids)
        added: list[tuple[str, float]] = []
        for item_id, score, _ in items:
            if item_id not in consumed and item_id not in known:
                known.add(item_id)
                added.append((item_id, score))
        if not added:
            return self
        block = np.full((len(added), len(SOURCES)), np.nan)
        block[:, _SOURCE_COLUMN[source]] = [score for _, score in added]
        flags = np.zeros(block.shape, dtype=bool)
        flags[:, _SOURCE_COLUMN[source]] = True
        return CandidateColumns(
            self.item_ids + [item_id for item_id, _ in added],
            np.vstack([self.scores, block]),
            np.vstack([self.proposed, flags]),
            self.because + [None] * len(added),
        )


def merge_columns(
    proposals: Mapping[str, Sequence[tuple[str, float, str | None]]],
    consumed: set[str] | frozenset[str],
    max_candidates: int,
) -> CandidateColumns:
    """`merge_candidates` as columns: the same items in the same order with the same best score per
    source. `because` is the recent item of the item's first covisit/similar proposal that has one
    (the reference's answer whenever those sources' proposals all carry their recent item, as
    requests build them). Scores are finite in the online store; a NaN score counts as proposed
    without a score here."""
    ids: list[str] = []
    scores: list[float] = []
    counts: list[int] = []
    caused_at: list[tuple[int, tuple]] = []  # (offset into ids, the proposals' `because` values)
    for source in SOURCES:
        got = proposals.get(source)
        if not got:
            counts.append(0)
            continue
        source_ids, source_scores, source_because = zip(*got)
        if source in _CAUSED:
            caused_at.append((len(ids), source_because))
        ids += source_ids
        scores += source_scores
        counts.append(len(source_ids))
    fresh = [i for i in ids if i not in consumed] if consumed else ids
    item_ids = list(islice(dict.fromkeys(fresh), max_candidates))
    index = dict(zip(item_ids, range(len(item_ids))))
    rows = np.fromiter(map(index.get, ids, repeat(-1)), dtype=np.intp, count=len(ids))
    columns = np.repeat(np.arange(len(SOURCES)), counts)
    keep = rows >= 0
    rows_kept, columns_kept = rows[keep], columns[keep]
    matrix = np.full((len(item_ids), len(SOURCES)), np.nan)
    np.fmax.at(matrix, (rows_kept, columns_kept), np.asarray(scores, dtype=np.float64)[keep])
    proposed = np.zeros(matrix.shape, dtype=bool)
    proposed[rows_kept, columns_kept] = True
    because: list[str | None] = [None] * len(item_ids)
    for offset, values in caused_at:
        for row, value in zip(rows[offset : offset + len(values)].tolist(), values):
            if row >= 0 and value is not None and because[row] is None:
                because[row] = value
    return CandidateColumns(item_ids, matrix, proposed, because)


def priors_columns(
    candidates: CandidateColumns,
    session_shares: Mapping[str, float] | None = None,
    categories: Sequence[str | None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """`priors` as columns: the prior of each row (float64) and the SOURCES index of its primary source."""
    rows = len(candidates)
    if rows == 0:
        return np.zeros(0), np.zeros(0, dtype=np.intp)
    scores = candidates.scores
    best = np.fmax.reduce(scores, axis=0, initial=0.0)  # as the reference: at least 0, NaN ignored
    with np.errstate(invalid="ignore", divide="ignore"):
        normalized = np.where(best > 0, scores / np.where(best > 0, best, 1.0), 1.0)
    weighted = _WEIGHTS * np.clip(normalized, 0.0, 1.0)
    weighted[~candidates.proposed | np.isnan(weighted)] = -np.inf
    primary = weighted.argmax(axis=1)  # the first best: on a tie the stronger source (SOURCES order)
    values = weighted[np.arange(rows), primary]
    unscored = values == -np.inf
    if unscored.any():  # no usable score at all: the reference's -1 and "popular"
        values[unscored] = -1.0
        primary[unscored] = _SOURCE_COLUMN["popular"]
    if session_shares and categories is not None:
        per_category = {c: 1.0 + 0.5 * session_shares.get(c, 0.0) for c in set(categories) if c is not None}
        per_category[None] = np.nan
        factor = np.fromiter(map(per_category.__getitem__, categories), dtype=np.float64, count=rows)
        boosted = ~np.isnan(factor)
        values[boosted] = np.minimum(1.0, values[boosted] * factor[boosted])
    return values, primary

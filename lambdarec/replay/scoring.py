"""Hit and rank bookkeeping of the replay, and the baselines that are not the serving code.

Who calls it: `lambdarec.replay.runner` (and the unit tests). Every number comes from the ranking
metrics of spark_jobs.metrics (one relevant item per question: its NDCG is 1/log2(rank + 1), its
reciprocal rank 1/rank, both 0 past k); nothing here does I/O.

Models asked in a replay:
- `popularity`: items with the most distinct users before T, minus what the user consumed;
- `batch_only`: the serving code on an online store that holds the batch keys only (speed layer off);
- `batch_speed`: the serving code on the online store the streaming job is writing (the product);
- `speed_neighbours`: co-visitation neighbours (speed layer keys) of the user's recent items;
- `speed_trending`: the speed layer's trending window.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from spark_jobs.metrics import catalog_coverage, hit_rate_at_k, metric_key, ndcg_at_k, reciprocal_rank

MODELS: tuple[str, ...] = ("popularity", "batch_only", "batch_speed", "speed_neighbours", "speed_trending")
# The answers built from one signal alone: the stack must beat the best of them (issue 18).
SINGLE_SOURCES: tuple[str, ...] = ("popularity", "speed_neighbours", "speed_trending")
MODEL_TITLES: dict[str, str] = {
    "popularity": "popularity (before T)",
    "batch_only": "batch only (serving, speed layer off)",
    "batch_speed": "batch + speed (serving)",
    "speed_neighbours": "speed only: recent-item neighbours",
    "speed_trending": "speed only: trending",
}


@dataclass
class ModelTally:
    """Answers of one model, one per asked target, in ask order."""

    name: str
    k: int
    hits: list[float] = field(default_factory=list)
    ndcg: list[float] = field(default_factory=list)
    rr: list[float] = field(default_factory=list)
    answers: list[tuple[str, ...]] = field(default_factory=list)
    short: int = 0  # answers with fewer than k items
    degraded: int = 0  # serving answered from its fallback

    def add(self, ranked: Sequence[str], item: str, degraded: bool = False) -> None:
        relevance = {item: 1.0}
        self.hits.append(hit_rate_at_k(ranked, relevance, self.k))
        self.ndcg.append(ndcg_at_k(ranked, relevance, self.k))
        self.rr.append(reciprocal_rank(ranked, relevance, self.k))
        self.answers.append(tuple(ranked[: self.k]))
        self.short += len(ranked) < self.k
        self.degraded += bool(degraded)

    @property
    def asked(self) -> int:
        return len(self.hits)

    def summary(self, catalog_size: int) -> dict[str, float]:
        n = self.asked
        mean = lambda values: sum(values) / n if n else 0.0  # noqa: E731
        return {
            metric_key("hr", self.k): mean(self.hits),
            metric_key("ndcg", self.k): mean(self.ndcg),
            metric_key("mrr", self.k): mean(self.rr),
            metric_key("coverage", self.k): catalog_coverage(self.answers, catalog_size, self.k),
            "hr_se": standard_error(self.hits),
            "asked": n,
            "short_answers": self.short,
            "degraded": self.degraded,
        }


def standard_error(values: Sequence[float]) -> float:
    """Standard error of the mean (sample standard deviation / sqrt(n)); 0 for fewer than 2 values."""
    n = len(values)
    if n < 2:
        return 0.0
    mean = sum(values) / n
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n)


def paired_difference(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Mean of a - b over the same questions and its standard error (the noise of a comparison)."""
    if len(a) != len(b):
        raise ValueError(f"paired lists differ in length: {len(a)} vs {len(b)}")
    diffs = [x - y for x, y in zip(a, b)]
    return {"mean": sum(diffs) / len(diffs) if diffs else 0.0, "se": standard_error(diffs)}


# -- baselines -------------------------------------------------------------------------------
def hit_rate_by_moment(hits: Sequence[float], session_start: Sequence[bool]) -> dict[str, dict[str, float]]:
    """HR of the questions that open a session and of those asked in the middle of one (the same
    order of questions in both lists), each with its count and standard error."""
    if len(hits) != len(session_start):
        raise ValueError(f"{len(hits)} answers for {len(session_start)} questions")
    out = {}
    for name, wanted in (("session_start", True), ("in_session", False)):
        chosen = [hit for hit, opens in zip(hits, session_start) if opens == wanted]
        out[name] = {
            "asked": len(chosen),
            "hr": sum(chosen) / len(chosen) if chosen else 0.0,
            "hr_se": standard_error(chosen),
        }
    return out


def popularity_ranking(users: Iterable[str], items: Iterable[str]) -> list[str]:
    """Items by how many distinct users touched them (most first; ties by item id)."""
    pairs = set(zip(users, items))
    counts = Counter(item for _, item in pairs)
    return sorted(counts, key=lambda item: (-counts[item], item))


def top_unseen(ranked: Iterable[str], consumed: set[str] | frozenset[str], k: int) -> list[str]:
    """The first k items of a ranking that the user has not consumed."""
    out: list[str] = []
    for item in ranked:
        if item not in consumed:
            out.append(item)
            if len(out) == k:
                break
    return out


def neighbour_ranking(
    recent: Sequence[str],
    neighbours: Mapping[str, Sequence[tuple[str, float]]],
    consumed: set[str] | frozenset[str],
    k: int,
) -> list[str]:
    """Speed-only "recent-item neighbours": each recent item's co-visitation neighbours, weights
    normalised by that item's strongest neighbour, times the recent item's recency weight (1 for the
    newest, halving per step back, so the last item outweighs all older ones together), summed;
    minus consumed. `recent` is newest first."""
    scores: dict[str, float] = {}
    for position, seed in enumerate(recent):
        pairs = neighbours.get(seed, ())
        best = max((w for _, w in pairs), default=0.0)
        if best <= 0:
            continue
        recency = 0.5**position
        for item, weight in pairs:
            if item not in consumed and weight > 0:
                scores[item] = scores.get(item, 0.0) + recency * weight / best
    return sorted(scores, key=lambda item: (-scores[item], item))[:k]

"""Ranking quality metrics: pure functions over one user's ranked list and that user's relevant items.

Used by the batch evaluation (spark_jobs.evaluation calls them per user inside Spark tasks), by
`lambdarec evaluate` and by the benchmarks, so every number lambdarec reports comes from here.

Conventions (each function documents its range):
- `ranked` is the recommended list, best first; only its first `k` entries count.
- `relevance` maps each relevant item to its gain (> 0). Binary relevance is gain 1 for every
  relevant item; graded relevance (from event weights) only changes NDCG, every other metric treats
  any gain > 0 as relevant.
- A user without relevant items has no defined recall/NDCG/AP: callers leave such users out
  (`mean_metrics` does), the functions return 0.0 for them so they never raise.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

METRIC_NAMES: tuple[str, ...] = ("ndcg", "map", "precision", "recall", "hr", "mrr")


def _hits(ranked: Sequence[str], relevance: Mapping[str, float], k: int) -> list[bool]:
    return [relevance.get(item, 0.0) > 0 for item in ranked[:k]]


def dcg_at_k(ranked: Sequence[str], relevance: Mapping[str, float], k: int) -> float:
    """Discounted cumulative gain: sum of gain / log2(position + 1) over the first k positions."""
    return sum(relevance.get(item, 0.0) / math.log2(pos + 2) for pos, item in enumerate(ranked[:k]))


def ndcg_at_k(ranked: Sequence[str], relevance: Mapping[str, float], k: int) -> float:
    """DCG@k divided by the DCG@k of the ideal order of all relevant items. Range [0, 1]."""
    ideal = sorted((g for g in relevance.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(pos + 2) for pos, g in enumerate(ideal))
    return dcg_at_k(ranked, relevance, k) / idcg if idcg > 0 else 0.0


def precision_at_k(ranked: Sequence[str], relevance: Mapping[str, float], k: int) -> float:
    """Relevant items in the first k positions / k (a list shorter than k counts its gaps as misses). Range [0, 1]."""
    return sum(_hits(ranked, relevance, k)) / k if k > 0 else 0.0


def recall_at_k(ranked: Sequence[str], relevance: Mapping[str, float], k: int) -> float:
    """Relevant items in the first k positions / all relevant items. Range [0, 1]."""
    n_relevant = sum(1 for g in relevance.values() if g > 0)
    return sum(_hits(ranked, relevance, k)) / n_relevant if n_relevant else 0.0


def hit_rate_at_k(ranked: Sequence[str], relevance: Mapping[str, float], k: int) -> float:
    """1 if any of the first k positions is relevant, else 0."""
    return 1.0 if any(_hits(ranked, relevance, k)) else 0.0


def average_precision_at_k(ranked: Sequence[str], relevance: Mapping[str, float], k: int) -> float:
    """Sum of precision@i at each relevant position i <= k, divided by min(#relevant, k). Range [0, 1]."""
    n_relevant = sum(1 for g in relevance.values() if g > 0)
    if not n_relevant:
        return 0.0
    hits, total = 0, 0.0
    for pos, hit in enumerate(_hits(ranked, relevance, k)):
        if hit:
            hits += 1
            total += hits / (pos + 1)
    return total / min(n_relevant, k)


def reciprocal_rank(ranked: Sequence[str], relevance: Mapping[str, float], k: int) -> float:
    """1 / position of the first relevant item within the first k (0 when none). Range [0, 1]."""
    for pos, hit in enumerate(_hits(ranked, relevance, k)):
        if hit:
            return 1.0 / (pos + 1)
    return 0.0


def catalog_coverage(recommendations: Iterable[Sequence[str]], catalog_size: int, k: int) -> float:
    """Distinct items in anyone's first k recommendations / catalog size. Range [0, 1]."""
    if catalog_size <= 0:
        return 0.0
    distinct = {item for ranked in recommendations for item in ranked[:k]}
    return len(distinct) / catalog_size


def user_metrics(ranked: Sequence[str], relevance: Mapping[str, float], k: int) -> dict[str, float]:
    """Every per-user metric at k for one user, keyed by METRIC_NAMES."""
    return {
        "ndcg": ndcg_at_k(ranked, relevance, k),
        "map": average_precision_at_k(ranked, relevance, k),
        "precision": precision_at_k(ranked, relevance, k),
        "recall": recall_at_k(ranked, relevance, k),
        "hr": hit_rate_at_k(ranked, relevance, k),
        "mrr": reciprocal_rank(ranked, relevance, k),
    }


CANDIDATE_RECALL_CUTOFFS: tuple[int, ...] = (50, 100, 200)
UNION = "union"


def candidate_recall(
    pools: Mapping[str, Sequence[str]], relevance: Mapping[str, float], cutoffs: Sequence[int]
) -> dict[str, float]:
    """One user's candidate recall: for each N in `cutoffs`, the share of the relevant items found in
    each source's first N candidates (`<source>@N`) and in the union of every source's first N
    (`union@N`: the pool a ranker re-ranks, the ceiling of its recall). A source with fewer than N
    candidates counts all it has. Range [0, 1]; 0.0 for a user without relevant items."""
    relevant = {item for item, gain in relevance.items() if gain > 0}
    result = {}
    for n in cutoffs:
        union: set[str] = set()
        for source, ranked in pools.items():
            found = relevant.intersection(ranked[:n])
            union |= found
            result[metric_key(source, n)] = len(found) / len(relevant) if relevant else 0.0
        result[metric_key(UNION, n)] = len(union) / len(relevant) if relevant else 0.0
    return result


def metric_key(name: str, k: int) -> str:
    """How a metric is named in reports, MLflow and JSON: `ndcg@10`, `mrr@10`, `coverage@10`."""
    return f"{name}@{k}"


def parse_metric_key(key: str) -> tuple[str, int]:
    """`ndcg@10` -> ("ndcg", 10): the inverse of `metric_key`."""
    name, _, k = key.partition("@")
    if not k.isdigit():
        raise ValueError(f"{key!r} is not a metric key like 'ndcg@10'")
    return name, int(k)


def mean_metrics(
    rankings: Mapping[str, Sequence[str]],
    relevance: Mapping[str, Mapping[str, float]],
    k: int,
    catalog_size: int,
) -> dict[str, float]:
    """Mean of every per-user metric over the users that have relevant items, plus catalog coverage
    of the rankings of those users. A user with relevant items but no ranking counts as all misses."""
    users = [u for u, rel in relevance.items() if any(g > 0 for g in rel.values())]
    totals = dict.fromkeys(METRIC_NAMES, 0.0)
    for user in users:
        for name, value in user_metrics(rankings.get(user, ()), relevance[user], k).items():
            totals[name] += value
    result = {metric_key(name, k): (total / len(users) if users else 0.0) for name, total in totals.items()}
    result[metric_key("coverage", k)] = catalog_coverage(
        (rankings.get(u, ()) for u in users), catalog_size, k
    )
    result["users"] = float(len(users))
    return result

"""How sure a holdout comparison is: a seeded paired bootstrap of a per-user metric difference.

The promotion gate (spark_jobs.model_registry.evidence_gate) compares two models on the same holdout
users: the difference per user (challenger − baseline) is resampled with replacement and the
confidence interval of its mean is read off the resampled means (percentile method). Pure numpy;
the same seed, values and settings always give the same interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

# Resampled means are drawn this many resamples at a time, so memory stays at about
# BLOCK x users indices whatever the number of resamples.
BLOCK = 100


@dataclass(frozen=True)
class PairedDifference:
    """Mean per-user difference and its bootstrap confidence interval [low, high]."""

    users: int
    mean: float
    low: float
    high: float
    confidence: float
    resamples: int

    def as_dict(self) -> dict:
        return asdict(self)


def paired_bootstrap(
    challenger: Sequence[float],
    baseline: Sequence[float],
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> PairedDifference:
    """Bootstrap CI of mean(challenger - baseline) over users (the two sequences are aligned by user).
    No users gives an interval of NaNs."""
    if len(challenger) != len(baseline):
        raise ValueError(
            f"paired values need one value per user on both sides ({len(challenger)} vs {len(baseline)})"
        )
    if not 0 < confidence < 1:
        raise ValueError(f"confidence {confidence} must be strictly between 0 and 1")
    diff = np.asarray(challenger, dtype=float) - np.asarray(baseline, dtype=float)
    n = len(diff)
    if n == 0:
        return PairedDifference(0, float("nan"), float("nan"), float("nan"), confidence, resamples)
    rng = np.random.default_rng(seed)
    means = np.concatenate(
        [
            diff[rng.integers(0, n, size=(min(BLOCK, resamples - start), n))].mean(axis=1)
            for start in range(0, resamples, BLOCK)
        ]
    )
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return PairedDifference(n, float(diff.mean()), float(low), float(high), confidence, resamples)

"""The user's genre taste and what it says about one candidate: one definition, three engines.

An item's *genres* are the distinct entries of its catalogue `categories` (its main `category` when that
list is empty; none when the catalogue lacks the item). A user's *genre profile* as of a cut-off is each
genre's share of the user's implicit weight (silver `weight`) over their whole history before it, an
event counting once for every genre of its item. No decay: this is long-term taste; the decayed
main-category affinity (`ui_category_affinity`) and the session's category share carry the drift.

For a candidate with genres G and a profile p (a genre absent from p has share 0):

- `ui_genre_cosine` = sum over G of p[g] / (|p| * sqrt(|G|)), the cosine of p and G's indicator;
- `ui_genre_max_share` = the largest p[g] over G;
- `ui_genre_mean_share` = the mean of p[g] over G;

all three missing (NaN) when G or p is empty. Why these inputs: MovieLens items have several genres and
the one main-category affinity missed most of that signal; an offline study measured genre taste as the
only input group that lifts the ranker past its best source on its own (benchmarks/REPORT.md, issue 18).

Engines: `spark_jobs.features.genre_profile` and `spark_jobs.training_set.genre_columns` (training,
batch scoring), `serving.ranking.genre_block` (requests). `genre_inputs` below is the plain meaning the
tests compare both with.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

GENRE_INPUTS: tuple[str, ...] = ("ui_genre_cosine", "ui_genre_max_share", "ui_genre_mean_share")


def item_genres(categories: Sequence[str] | None, category: str | None) -> tuple[str, ...]:
    """The item's genres: its distinct `categories` in catalogue order, else its main category."""
    if categories:
        return tuple(dict.fromkeys(categories))
    return (category,) if category else ()


def genre_profile(weights: Iterable[tuple[Sequence[str], float]]) -> dict[str, float]:
    """Each genre's share of the weight of (item genres, event weight) pairs; {} without positive weight."""
    per_genre: dict[str, float] = {}
    for genres, weight in weights:
        for genre in genres:
            per_genre[genre] = per_genre.get(genre, 0.0) + weight
    positive = {g: w for g, w in per_genre.items() if w > 0}
    total = sum(positive.values())
    return {g: w / total for g, w in positive.items()} if total > 0 else {}


def profile_norm(profile: Mapping[str, float]) -> float:
    return math.sqrt(sum(share * share for share in profile.values()))


def genre_inputs(profile: Mapping[str, float], genres: Sequence[str]) -> tuple[float, float, float]:
    """(ui_genre_cosine, ui_genre_max_share, ui_genre_mean_share) of one candidate."""
    if not profile or not genres:
        return (math.nan, math.nan, math.nan)
    shares = [profile.get(genre, 0.0) for genre in genres]
    total = sum(shares)
    return (total / (profile_norm(profile) * math.sqrt(len(shares))), max(shares), total / len(shares))

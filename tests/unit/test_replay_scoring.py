"""Hit/rank bookkeeping and the non-serving baselines of the replay."""

from __future__ import annotations

import math

import pytest

from lambdarec.replay.scoring import (
    ModelTally,
    hit_rate_by_moment,
    neighbour_ranking,
    paired_difference,
    popularity_ranking,
    standard_error,
    top_unseen,
)


def test_tally_scores_one_relevant_item_per_question():
    tally = ModelTally("m", k=3)
    tally.add(["a", "b", "c"], "a")  # rank 1
    tally.add(["a", "b", "c"], "c")  # rank 3
    tally.add(["a", "b"], "z", degraded=True)  # miss, short, degraded
    tally.add(["a", "b", "c", "d"], "d")  # rank 4 > k: a miss
    summary = tally.summary(catalog_size=8)
    assert tally.hits == [1.0, 1.0, 0.0, 0.0]
    assert tally.rr == [1.0, pytest.approx(1 / 3), 0.0, 0.0]
    assert tally.ndcg == [1.0, pytest.approx(1 / math.log2(4)), 0.0, 0.0]
    assert summary == {
        "hr@3": 0.5,
        "ndcg@3": pytest.approx((1 + 0.5) / 4),
        "mrr@3": pytest.approx((1 + 1 / 3) / 4),
        "coverage@3": 3 / 8,  # a, b, c (d is past k)
        "hr_se": pytest.approx(standard_error([1.0, 1.0, 0.0, 0.0])),
        "asked": 4,
        "short_answers": 1,
        "degraded": 1,
    }


def test_empty_tally():
    assert ModelTally("m", k=10).summary(5)["hr@10"] == 0.0


def test_standard_error_and_paired_difference():
    assert standard_error([1.0]) == 0.0
    assert standard_error([0.0, 1.0]) == pytest.approx(0.5)
    assert paired_difference([1, 1, 0, 1], [0, 1, 0, 0]) == {
        "mean": 0.5,
        "se": pytest.approx(standard_error([1, 0, 0, 1])),
    }
    with pytest.raises(ValueError):
        paired_difference([1], [1, 0])


def test_popularity_counts_distinct_users():
    # x: 2 users (u1 twice), y: 2 users, z: 1 -> ties by id
    assert popularity_ranking(["u1", "u1", "u2", "u1", "u3", "u3"], ["x", "x", "x", "y", "y", "z"]) == [
        "x",
        "y",
        "z",
    ]


def test_top_unseen_skips_consumed():
    assert top_unseen(["a", "b", "c", "d"], {"b"}, 2) == ["a", "c"]
    assert top_unseen(["a"], set(), 3) == ["a"]


def test_neighbour_ranking_normalises_per_recent_item_and_weights_recency():
    neighbours = {
        "r1": [("x", 4.0), ("y", 2.0)],
        "r2": [("y", 4.0), ("z", 2.0)],
        "r3": [("z", 1.0)],
        "r4": [],
    }
    # newest first: r1 weight 1, r2 0.5, r3 0.25 -> x 1.0; y 0.5 + 0.5 = 1.0; z 0.25 + 0.25 = 0.5
    assert neighbour_ranking(["r1", "r2", "r3", "r4"], neighbours, {"r1", "r2", "r3"}, 10) == ["x", "y", "z"]
    # the newest item's best neighbour outweighs everything older together
    assert neighbour_ranking(["r3", "r1", "r2"], neighbours, set(), 1) == ["z"]
    assert neighbour_ranking(["r1", "r2"], neighbours, {"x"}, 1) == ["y"]
    assert neighbour_ranking([], neighbours, set(), 5) == []


def test_hit_rate_by_moment_splits_the_questions_that_open_a_session_from_the_others():
    got = hit_rate_by_moment([1.0, 0.0, 1.0, 1.0, 0.0], [True, True, False, False, False])
    assert got == {
        "session_start": {"asked": 2, "hr": 0.5, "hr_se": 0.5},
        "in_session": {"asked": 3, "hr": 2 / 3, "hr_se": pytest.approx(1 / 3)},
    }
    assert hit_rate_by_moment([], []) == {
        "session_start": {"asked": 0, "hr": 0.0, "hr_se": 0.0},
        "in_session": {"asked": 0, "hr": 0.0, "hr_se": 0.0},
    }
    with pytest.raises(ValueError, match="2 answers for 1 questions"):
        hit_rate_by_moment([1.0, 0.0], [True])

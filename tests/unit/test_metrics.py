import math

import pytest

from spark_jobs.metrics import (
    average_precision_at_k,
    candidate_recall,
    catalog_coverage,
    dcg_at_k,
    hit_rate_at_k,
    mean_metrics,
    metric_key,
    ndcg_at_k,
    parse_metric_key,
    precision_at_k,
    recall_at_k,
    reciprocal_rank,
    user_metrics,
)

BINARY = {"a": 1.0, "c": 1.0, "f": 1.0}
RANKED = ["a", "b", "c", "d", "e", "f"]


def test_perfect_ranking_scores_one_everywhere():
    ranked = ["a", "c", "f"]
    assert user_metrics(ranked, BINARY, 3) == {
        "ndcg": 1.0,
        "map": 1.0,
        "precision": 1.0,
        "recall": 1.0,
        "hr": 1.0,
        "mrr": 1.0,
    }


def test_no_hits_score_zero_everywhere():
    assert user_metrics(["x", "y", "z"], BINARY, 3) == {
        "ndcg": 0.0,
        "map": 0.0,
        "precision": 0.0,
        "recall": 0.0,
        "hr": 0.0,
        "mrr": 0.0,
    }


def test_hand_computed_values():
    # hits at positions 1, 3 and 6 of six; three relevant items.
    assert precision_at_k(RANKED, BINARY, 6) == pytest.approx(3 / 6)
    assert precision_at_k(RANKED, BINARY, 2) == pytest.approx(1 / 2)
    assert recall_at_k(RANKED, BINARY, 3) == pytest.approx(2 / 3)
    assert hit_rate_at_k(["b", "c"], BINARY, 1) == 0.0
    assert hit_rate_at_k(["b", "c"], BINARY, 2) == 1.0
    assert reciprocal_rank(["b", "d", "c"], BINARY, 3) == pytest.approx(1 / 3)
    assert reciprocal_rank(["b", "d", "c"], BINARY, 2) == 0.0
    # AP@6 = (1/1 + 2/3 + 3/6) / 3
    assert average_precision_at_k(RANKED, BINARY, 6) == pytest.approx((1 + 2 / 3 + 3 / 6) / 3)
    # AP@3 divides by min(3 relevant, k=3): (1 + 2/3) / 3
    assert average_precision_at_k(RANKED, BINARY, 3) == pytest.approx((1 + 2 / 3) / 3)
    # NDCG@3 binary: (1 + 1/log2(4)) / (1 + 1/log2(3) + 1/log2(4))
    assert ndcg_at_k(RANKED, BINARY, 3) == pytest.approx((1 + 0.5) / (1 + 1 / math.log2(3) + 0.5))


def test_ndcg_textbook_example_graded_relevance():
    # Wikipedia "Discounted cumulative gain": relevances 3, 2, 3, 0, 1, 2 -> DCG6 = 6.861, IDCG6 = 7.141.
    gains = {"d1": 3.0, "d2": 2.0, "d3": 3.0, "d4": 0.0, "d5": 1.0, "d6": 2.0}
    ranked = ["d1", "d2", "d3", "d4", "d5", "d6"]
    assert dcg_at_k(ranked, gains, 6) == pytest.approx(6.861, abs=5e-4)
    assert ndcg_at_k(ranked, gains, 6) == pytest.approx(6.861 / 7.141, abs=5e-4)
    assert ndcg_at_k(ranked, gains, 6) == pytest.approx(0.961, abs=5e-4)


def test_short_lists_count_missing_positions_as_misses():
    assert precision_at_k(["a"], BINARY, 10) == pytest.approx(0.1)
    assert user_metrics([], BINARY, 10)["ndcg"] == 0.0


def test_catalog_coverage():
    assert catalog_coverage([["a", "b", "c"], ["b", "c", "d"]], catalog_size=10, k=2) == pytest.approx(3 / 10)
    assert catalog_coverage([], catalog_size=10, k=2) == 0.0
    assert catalog_coverage([["a"]], catalog_size=0, k=2) == 0.0


def test_mean_metrics_skips_users_without_relevant_items_and_counts_missing_rankings_as_misses():
    rankings = {"u1": ["a", "b"], "u2": ["x", "y"], "u3": ["a"]}
    relevance = {"u1": {"a": 1.0}, "u2": {"y": 1.0}, "u3": {}, "u4": {"z": 1.0}}
    result = mean_metrics(rankings, relevance, k=2, catalog_size=4)
    # u1: hit at 1; u2: hit at 2; u4: no ranking -> misses; u3: no relevant items -> left out.
    assert result == pytest.approx(
        {
            "ndcg@2": (1.0 + 1 / math.log2(3) + 0.0) / 3,
            "map@2": (1.0 + 0.5 + 0.0) / 3,
            "precision@2": (0.5 + 0.5 + 0.0) / 3,
            "recall@2": (1.0 + 1.0 + 0.0) / 3,
            "hr@2": 2 / 3,
            "mrr@2": (1.0 + 0.5 + 0.0) / 3,
            "coverage@2": 4 / 4,
            "users": 3.0,
        }
    )


def test_candidate_recall_per_source_and_union_at_each_cutoff():
    pools = {"als": ["a", "x", "b"], "covisit": ["c"], "popular": ["y", "z", "a", "c"]}
    relevance = {"a": 1.0, "b": 2.0, "c": 1.0, "d": 1.0}
    assert candidate_recall(pools, relevance, (1, 3)) == {
        "als@1": 1 / 4,
        "covisit@1": 1 / 4,
        "popular@1": 0.0,
        "union@1": 2 / 4,
        # covisit has one candidate: its @3 is all it has; the union counts a and c once
        "als@3": 2 / 4,
        "covisit@3": 1 / 4,
        "popular@3": 1 / 4,
        "union@3": 3 / 4,
    }
    assert candidate_recall(pools, {}, (1,)) == {
        "als@1": 0.0,
        "covisit@1": 0.0,
        "popular@1": 0.0,
        "union@1": 0.0,
    }
    assert candidate_recall({"als": []}, {"a": 1.0}, (50,)) == {"als@50": 0.0, "union@50": 0.0}


def test_metric_keys_parse_back():
    assert parse_metric_key(metric_key("ndcg", 10)) == ("ndcg", 10)
    with pytest.raises(ValueError, match="metric key"):
        parse_metric_key("ndcg")

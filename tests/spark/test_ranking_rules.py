"""The ranking rules that batch scoring and evaluation share, each written once: the top-k window
(best score first, ties by item id), reciprocal-rank fusion, and the union of frames. Whole frames
compared with pyspark.testing.assertDataFrameEqual on three-row inputs."""

from __future__ import annotations

from datetime import date

import pytest
from pyspark.testing import assertDataFrameEqual

from spark_jobs.evaluation import rank_fusion, top_k_by_score
from spark_jobs.frames import union_all
from spark_jobs.scoring import fused_scores, top_n_scores

pytestmark = pytest.mark.spark

SCORED = "user_id string, item_id string, score double, sources array<string>"


def test_union_all_matches_columns_by_name(spark):
    a = spark.createDataFrame([("u1", 1)], "user_id string, rank int")
    b = spark.createDataFrame([(2, "u2")], "rank int, user_id string")
    assertDataFrameEqual(
        union_all([a, b, a]),
        spark.createDataFrame([("u1", 1), ("u2", 2), ("u1", 1)], "user_id string, rank int"),
    )


def test_top_k_keeps_the_best_scores_ties_by_item_id(spark):
    scored = spark.createDataFrame(
        [
            ("u1", "b", 0.5, ["als"]),
            ("u1", "a", 0.5, ["covisit"]),
            ("u1", "c", 0.9, ["als"]),
            ("u2", "a", 0.1, ["popular"]),
        ],
        SCORED,
    )
    assertDataFrameEqual(
        top_k_by_score(scored, 2),
        spark.createDataFrame(
            [("u1", "c", 1, 0.9), ("u1", "a", 2, 0.5), ("u2", "a", 1, 0.1)],
            "user_id string, item_id string, rank int, score double",
        ),
    )
    # batch scoring's rows are the same ranking, with what gold/batch_scores keeps of each row
    assertDataFrameEqual(
        top_n_scores(scored, 2, date(2026, 10, 19), "7"),
        spark.createDataFrame(
            [
                (date(2026, 10, 19), "u1", "c", 0.9, 1, ["als"], "7"),
                (date(2026, 10, 19), "u1", "a", 0.5, 2, ["covisit"], "7"),
                (date(2026, 10, 19), "u2", "a", 0.1, 1, ["popular"], "7"),
            ],
            "as_of date, user_id string, item_id string, score double, rank int, sources array<string>, model_version string",
        ),
    )


def test_reciprocal_rank_fusion(spark):
    ranked = "user_id string, item_id string, rank int"
    first = spark.createDataFrame([("u1", "a", 1), ("u1", "b", 2)], ranked)
    second = spark.createDataFrame([("u1", "b", 1), ("u1", "c", 2)], ranked)
    assertDataFrameEqual(
        fused_scores(union_all([first, second])),
        spark.createDataFrame(
            [("u1", "a", 1 / 61), ("u1", "b", 1 / 62 + 1 / 61), ("u1", "c", 1 / 62)],
            "user_id string, item_id string, score double",
        ),
    )
    assertDataFrameEqual(
        rank_fusion([first, second], 2),
        spark.createDataFrame(
            [("u1", "b", 1, 1 / 62 + 1 / 61), ("u1", "a", 2, 1 / 61)],
            "user_id string, item_id string, rank int, score double",
        ),
    )

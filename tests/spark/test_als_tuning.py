"""ALS tuning on a validation split of the history: the split, and the grid choosing the point that ranks."""

from pyspark.testing import assertDataFrameEqual

from spark_jobs.als_tuning import AlsGrid, tune_als, validation_split, validation_targets
from spark_jobs.candidates import CandidateParams
from tests.batch_models_data import interaction, interactions_df


def test_validation_split_holds_out_each_users_latest_share(spark):
    history = interactions_df(
        spark,
        [
            interaction("u1", "a", "2024-01-01 10:00", "purchase"),
            interaction("u1", "b", "2024-01-02 10:00", "purchase"),
            interaction("u1", "c", "2024-01-03 10:00", "purchase"),
            interaction("u1", "d", "2024-01-04 10:00", "purchase"),
            interaction(
                "u1", "a", "2024-01-04 10:00", "purchase", n=1
            ),  # same time as d: the later item id wins
            interaction("u2", "a", "2024-01-01 10:00", "purchase"),  # alone: stays in fit
            interaction("u3", "b", "2024-01-01 10:00"),
            interaction("u3", "c", "2024-01-02 10:00", "skip"),  # held out but not a positive: no target
        ],
    )
    fit, held_out = validation_split(history, share=0.5)
    assert sorted((r.user_id, r.item_id, r.ts.day) for r in fit.collect()) == [
        ("u1", "a", 1),
        ("u1", "b", 2),
        ("u1", "c", 3),
        ("u2", "a", 1),
        ("u3", "b", 1),
    ]
    assert sorted((r.user_id, r.item_id, r.ts.day) for r in held_out.collect()) == [
        ("u1", "a", 4),
        ("u1", "d", 4),
        ("u3", "c", 2),
    ]
    # a was touched again, but the user had it before: only d is new
    assertDataFrameEqual(
        validation_targets(fit, held_out),
        spark.createDataFrame([("u1", "d", 1.0)], "user_id STRING, item_id STRING, relevance DOUBLE"),
    )


def test_the_grid_keeps_the_point_that_finds_the_held_out_items(spark):
    # Two taste groups of five items; each user touched four of their group's, the latest is held out.
    data = []
    for g in ("x", "y"):
        items = [f"{g}{i}" for i in range(5)]
        for u in range(5):
            for day, item in enumerate(i for i in items if i != items[u]):
                data.append(interaction(f"{g}u{u}", item, f"2024-01-0{day + 1} 10:00", "purchase"))
    history = interactions_df(spark, data)
    params = CandidateParams(per_source=3, als_rank=4, als_max_iter=10, als_alpha=5.0)
    # an enormous regularisation shrinks every factor to ~0: its ranking is ties broken by item id
    grid = AlsGrid(ranks=(4,), reg_params=(1e4, 0.01), alphas=(5.0,), max_iters=(10,))
    chosen, table = tune_als(history, params, grid, share=0.25, metric="ndcg@10")
    assert [(row["als_reg_param"], row["users"]) for row in table] == [(1e4, 10.0), (0.01, 10.0)]
    assert sorted(table[0]) == [
        "als_alpha",
        "als_max_iter",
        "als_rank",
        "als_reg_param",
        "ndcg@10",
        "recall@3",
        "users",
    ]
    assert table[1]["ndcg@10"] > table[0]["ndcg@10"]
    assert (
        chosen.als_rank,
        chosen.als_reg_param,
        chosen.als_alpha,
        chosen.als_max_iter,
        chosen.per_source,
    ) == (4, 0.01, 5.0, 10, 3)


def test_a_one_point_grid_is_used_without_fitting(spark):
    grid = AlsGrid(ranks=(7,), reg_params=(0.2,), alphas=(3.0,), max_iters=(4,))
    chosen, table = tune_als(None, CandidateParams(), grid, share=0.2, metric="ndcg@10")
    assert (chosen.als_rank, chosen.als_reg_param, chosen.als_alpha, chosen.als_max_iter, table) == (
        7,
        0.2,
        3.0,
        4,
        [],
    )


def test_without_the_als_source_the_grid_is_not_fitted(spark):
    grid = AlsGrid(ranks=(7, 9), reg_params=(0.2,), alphas=(3.0,), max_iters=(4,))
    chosen, table = tune_als(None, CandidateParams(sources=("ease",)), grid, share=0.2, metric="ndcg@10")
    assert (chosen.sources, chosen.als_rank, table) == (("ease",), 7, [])

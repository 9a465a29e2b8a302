"""Batch scoring by a registered ranker: a champion trained before the newest ranker input existed
keeps scoring the inputs it was trained on (the nightly evaluates and scores with it after an upgrade)."""

import numpy as np
import xgboost

from feature_store.ranking import RANKER_FEATURES
from feature_store.registry import LoadedRanker, feature_columns
from spark_jobs.scoring import registered_model, score_inputs


def test_a_ranker_trained_on_fewer_inputs_scores_the_ones_it_knows(spark):
    rng = np.random.default_rng(3)
    older = list(RANKER_FEATURES[:-1])  # the vector before its last input was added
    x = rng.normal(size=(200, len(older))).astype(np.float32)
    train = xgboost.DMatrix(x, (x[:, 0] > 0).astype(int))
    train.set_group([20] * 10)
    booster = xgboost.train({"objective": "rank:ndcg", "max_depth": 3, "nthread": 1}, train, 5)
    loaded = LoadedRanker(
        name="ranker",
        version="7",
        backend="native:xgboost",
        columns=feature_columns(older),  # as load_ranker reads them from the version's meta
        run=booster.predict,
        kind="xgboost",
        native=bytes(booster.save_raw("json")),
    )
    model = registered_model(loaded)
    today = np.column_stack([x, rng.normal(size=200).astype(np.float32)])  # what the nightly builds now
    inputs = spark.createDataFrame(
        [(f"u{n // 20}", f"i{n}", today[n].tolist(), ["als"]) for n in range(200)],
        "user_id string, item_id string, features array<float>, sources array<string>",
    )
    got = {r.item_id: r.score for r in score_inputs(inputs, model).collect()}
    expected = booster.predict(xgboost.DMatrix(x, missing=np.nan))
    assert got == {f"i{n}": float(expected[n]) for n in range(200)}
    assert model.columns == tuple(range(len(older)))

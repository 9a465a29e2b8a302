"""`lambdarec evaluate` end to end: a small train/test split through the real command (real Spark, both
rankers), its JSON, its console tables and a predictions file an outside scorer recomputes the metrics from."""

from __future__ import annotations

import csv
import json
import random

import pytest
from typer.testing import CliRunner

from feature_store.ranking import CANDIDATE_SOURCES, POOL_SCORERS
from lambdarec.cli import build_app
from lambdarec.testing import spark_cache_is_empty
from spark_jobs.metrics import mean_metrics

pytestmark = [
    pytest.mark.integration,
    pytest.mark.long,
    pytest.mark.timeout(2400),
]  # both rankers on real Spark: slow on a shared machine

K = 5


def write_split(
    folder,
    users: int = 30,
    items_per_genre: int = 12,
    genres: int = 3,
    per_user: int = 10,
    test_per_user: int = 3,
    seed: int = 5,
):
    """train.csv and test.csv of ratings with taste: each user rates mostly items of a favourite genre,
    liked ones higher, one rating every ten minutes (one session, so co-visitation sees pairs); a
    user's last `test_per_user` ratings are the test part.
    Returns {user: set of test items} (every test item is new to its user)."""
    rng = random.Random(seed)
    header = "user_id,item_id,rating,timestamp\n"
    train, test, relevant = [], [], {}
    for u in range(users):
        favourite = u % genres
        chosen: list[str] = []
        while len(chosen) < per_user:
            genre = favourite if rng.random() < 0.8 else rng.randrange(genres)
            item = f"g{genre}i{min(int(rng.expovariate(0.25)), items_per_genre - 1)}"
            if item not in chosen:
                chosen.append(item)
        for step, item in enumerate(chosen):
            rating = 4.5 if item.startswith(f"g{favourite}") else 2.0
            (train if step < per_user - test_per_user else test).append(
                f"u{u},{item},{rating},{1704067200 + step * 600 + u * 7}\n"
            )
        relevant[f"u{u}"] = set(chosen[per_user - test_per_user :])
    (folder / "train.csv").write_text(header + "".join(train))
    (folder / "test.csv").write_text(header + "".join(test))
    return relevant


@pytest.fixture
def small_settings_env(monkeypatch, tmp_path):
    """Settings of the command through its environment: small models, the shared session's shape."""
    for name, value in {
        "DATA_DIR": str(tmp_path / "state"),
        "SPARK_MASTER": "local[2]",
        "SPARK_SHUFFLE_PARTITIONS": "2",
        "CANDIDATES_PER_SOURCE": "20",
        "ALS_RANKS": "[4]",
        "ALS_MAX_ITERS": "[3]",
        "ALS_REG_PARAMS": "[0.05]",  # a two-point grid: the command tunes ALS, with two fits, not four
        "ALS_ALPHAS": "[10.0, 40.0]",
        "RANKER_TREES": "10",
        "RANKER_MAX_DEPTH": "3",
        "MAX_NEGATIVES_PER_QUERY": "10",
        "TRAIN_NUM_WORKERS": "1",
    }.items():
        monkeypatch.setenv(f"LAMBDAREC_{name}", value)
    monkeypatch.setenv("COLUMNS", "220")  # rich wraps tables to the terminal width


def test_evaluate_writes_json_tables_and_predictions_an_outside_scorer_can_check(
    spark, tmp_path, small_settings_env
):
    relevant = write_split(tmp_path)
    output, predictions = tmp_path / "out" / "metrics.json", tmp_path / "out" / "top_k.csv"
    result = CliRunner().invoke(
        build_app(),
        [
            "evaluate",
            "--train",
            str(tmp_path / "train.csv"),
            "--test",
            str(tmp_path / "test.csv"),
            "--seed",
            "3",
            "--k",
            str(K),
            "--output",
            str(output),
            "--predictions",
            str(predictions),
        ],
    )
    assert result.exit_code == 0, result.output + repr(result.exception)
    # the command shares the session with whatever runs next (here: the rest of the test run)
    assert spark_cache_is_empty(spark)
    written = json.loads(output.read_text())
    models = (
        "popularity",
        "als",
        "covisit",
        "ease",
        *(f"{s}_pool" for s in POOL_SCORERS),
        "xgboost",
        "lightgbm",
        "blend",
    )
    assert (written["k"], written["split"], written["ratio"], written["seed"]) == (K, "given", None, 3)
    assert set(written["models"]) == set(written["warm_models"]) == set(models)
    assert [
        (row["als_rank"], row["als_reg_param"], row["als_alpha"], row["als_max_iter"])
        for row in written["als_tuning"]
    ] == [(4, 0.05, 10.0, 3), (4, 0.05, 40.0, 3)]
    counts = written["counts"]
    assert (counts["train_ratings"], counts["test_ratings"]) == (30 * 7, 30 * 3)
    assert counts["test_users_with_relevant_items"] == counts["warm_test_users_with_relevant_items"] == 30
    for label in models:
        assert written["models"][label]["users"] == 30.0

    # Candidate recall: every source and the union at 50/100/200; 20 candidates per source, so the
    # three cut-offs see the same lists, and the union finds at least what any source finds.
    recall = written["candidate_recall"]
    sources = (*CANDIDATE_SOURCES, "union")
    assert set(recall) == {f"{s}@{n}" for s in sources for n in (50, 100, 200)} | {"users"}
    assert recall["users"] == 30.0
    for source in sources:
        assert recall[f"{source}@50"] == recall[f"{source}@100"] == recall[f"{source}@200"]
        assert 0.0 <= recall[f"{source}@50"] <= recall["union@50"] <= 1.0

    # The predictions file: every model's top k per test user; the project's metric functions over
    # it give the JSON's numbers.
    with predictions.open() as handle:
        assert handle.readline().strip() == "model,user_id,item_id,rank,score"
        rows = list(csv.DictReader(predictions.open()))
    assert {r["model"] for r in rows} == set(models)
    ranked: dict[str, dict[str, list[tuple[int, str]]]] = {}
    for r in rows:
        ranked.setdefault(r["model"], {}).setdefault(r["user_id"], []).append((int(r["rank"]), r["item_id"]))
        float(r["score"])
    for label in models:
        lists = {user: [item for _, item in sorted(pairs)] for user, pairs in ranked[label].items()}
        assert set(lists) <= set(relevant) and all(len(items) <= K for items in lists.values())
        gains = {user: dict.fromkeys(items, 1.0) for user, items in relevant.items()}
        recomputed = mean_metrics(lists, gains, K, counts["train_items"])
        for metric in (f"ndcg@{K}", f"recall@{K}", f"map@{K}", f"hr@{K}", f"coverage@{K}"):
            assert recomputed[metric] == pytest.approx(
                written["models"][label][metric], rel=1e-9, abs=1e-12
            ), (label, metric)

    lines = result.output.splitlines()
    assert any(f"metrics@{K} (given), 30 test users" in line for line in lines), result.output
    assert any("warm test users only (30 with train history)" in line for line in lines)
    assert any("candidate recall (30 test users)" in line for line in lines)
    for label in models:
        row = next(line for line in lines if line.strip("│ ").startswith(label + " "))
        assert f"{written['models'][label][f'ndcg@{K}']:.4f}" in row
    union = next(line for line in lines if line.strip("│ ").startswith("union "))
    assert f"{recall['union@100']:.4f}" in union
    assert f"written {output}" in " ".join(result.output.split())

"""`lambdarec evaluate`'s protocol pieces: reading ratings, the three splits, ratings as silver
interactions, and the CLI's argument checks."""

from datetime import date, datetime

import pytest
from pyspark.testing import assertDataFrameEqual
from typer.testing import CliRunner

from feature_store.settings import Settings
from spark_jobs.offline_eval import (
    RatingsFileError,
    any_rating_labels,
    cutoff_after,
    read_ratings,
    silver,
    split_ratings,
    warm_only,
)


@pytest.fixture
def ratings_csv(tmp_path):
    rows = [
        # user, item, rating, epoch seconds (2024-01-01 00:00 UTC = 1704067200)
        ("1", "a", 4.0, 1704067200),
        ("1", "b", 2.0, 1704067260),
        ("1", "c", 5.0, 1704153600),
        ("1", "d", 3.5, 1704240000),
        ("2", "a", 5.0, 1704067300),
        ("2", "c", 1.0, 1704326400),
        ("2", "e", 4.5, 1704412800),
        ("3", "a", 3.0, 1704499200),
    ]
    path = tmp_path / "ratings.csv"
    path.write_text(
        "user_id,item_id,rating,timestamp\n" + "".join(f"{u},{i},{r},{t}\n" for u, i, r, t in rows)
    )
    return path


def pairs(df):
    return sorted((r.user_id, r.item_id) for r in df.collect())


def test_read_ratings_parses_epoch_seconds_and_iso(spark, tmp_path, ratings_csv):
    got = read_ratings(spark, str(ratings_csv)).orderBy("ts").first()
    assert (got.user_id, got.item_id, got.rating, got.ts) == ("1", "a", 4.0, datetime(2024, 1, 1, 0, 0))
    iso = tmp_path / "iso.csv"
    iso.write_text("user_id,item_id,rating,timestamp\nu,i,3.0,2024-02-03T04:05:06Z\n")
    assert read_ratings(spark, str(iso)).first().ts == datetime(2024, 2, 3, 4, 5, 6)
    bad = tmp_path / "bad.csv"
    bad.write_text("userId,movieId,rating,timestamp\n1,2,3,4\n")
    with pytest.raises(RatingsFileError, match="user_id,item_id,rating,timestamp"):
        read_ratings(spark, str(bad))


def test_time_split_is_one_global_cutoff(spark, ratings_csv):
    train, test = split_ratings(read_ratings(spark, str(ratings_csv)), "time", 0.75, seed=42)
    # 8 ratings: the 0.75 quantile is the 6th timestamp (2024-01-04 00:00, user 2 item c)
    assert pairs(train) == [("1", "a"), ("1", "b"), ("1", "c"), ("1", "d"), ("2", "a"), ("2", "c")]
    assert pairs(test) == [("2", "e"), ("3", "a")]
    assert cutoff_after(train) == date(2024, 1, 5)


def test_stratified_splits_keep_the_ratio_per_user_or_item(spark, ratings_csv):
    ratings = read_ratings(spark, str(ratings_csv))
    train, test = split_ratings(ratings, "stratified-user", 0.75, seed=42)
    per_user = {u: sum(1 for r in train.collect() if r.user_id == u) for u in ("1", "2", "3")}
    assert per_user == {"1": 3, "2": 2, "3": 1}  # round(4*.75)=3, round(3*.75)=2, at least one
    assert sorted(pairs(train) + pairs(test)) == pairs(ratings)
    assert split_ratings(ratings, "stratified-user", 0.75, seed=42)[0].collect() == train.collect()  # seeded
    train_items, _ = split_ratings(ratings, "stratified-item", 0.5, seed=1)
    per_item = {i: sum(1 for r in train_items.collect() if r.item_id == i) for i in "abcde"}
    assert per_item == {"a": 2, "b": 1, "c": 1, "d": 1, "e": 1}  # 3 -> round(1.5)=2; 2 -> 1; 1 -> 1
    with pytest.raises(ValueError, match="ratio"):
        split_ratings(ratings, "time", 1.0, seed=1)


def test_ratings_become_rating_interactions_and_any_rating_is_relevant(spark, ratings_csv):
    interactions = silver(read_ratings(spark, str(ratings_csv)).where("user_id = '1'"), Settings())
    got = sorted((r.item_id, r.event_type, r.weight, r.label) for r in interactions.collect())
    # weight = rating - 3.5 + 1 (at least 0); label = rating >= 3.5
    assert got == [
        ("a", "rating", 1.5, 1),
        ("b", "rating", 0.0, 0),
        ("c", "rating", 2.5, 1),
        ("d", "rating", 1.0, 1),
    ]
    assertDataFrameEqual(
        any_rating_labels(interactions),
        spark.createDataFrame(
            [("1", "a", 1.0), ("1", "b", 1.0), ("1", "c", 1.0), ("1", "d", 1.0)],
            "user_id STRING, item_id STRING, relevance DOUBLE",
        ),
    )


def test_warm_view_keeps_only_test_users_the_train_part_saw(spark, ratings_csv):
    # time split at 0.75: user 3's only rating is the last one, so user 3 is a cold test user
    train, test = split_ratings(read_ratings(spark, str(ratings_csv)), "time", 0.75, 7)
    assert pairs(test) == [("2", "e"), ("3", "a")]
    warm = warm_only(test, train.select("user_id").distinct())
    assert pairs(warm) == [("2", "e")]


def test_evaluate_cli_refuses_ambiguous_inputs(tmp_path, ratings_csv):
    from lambdarec.cli import build_app

    runner = CliRunner()
    app = build_app()

    def text(result):  # the error box wraps lines: compare words only
        return " ".join(result.output.replace("│", " ").split())

    both = runner.invoke(
        app,
        [
            "evaluate",
            "--ratings",
            str(ratings_csv),
            "--train",
            str(ratings_csv),
            "--test",
            str(ratings_csv),
            "--output",
            str(tmp_path / "m.json"),
        ],
    )
    assert both.exit_code != 0 and "either --ratings" in text(both)
    split = runner.invoke(
        app,
        [
            "evaluate",
            "--ratings",
            str(ratings_csv),
            "--split",
            "random",
            "--output",
            str(tmp_path / "m.json"),
        ],
    )
    assert split.exit_code != 0 and "stratified-user" in text(split)
    missing = runner.invoke(
        app, ["evaluate", "--ratings", str(tmp_path / "nope.csv"), "--output", str(tmp_path / "m.json")]
    )
    assert missing.exit_code != 0 and "does not exist" in text(missing)

"""The MovieLens rule written once (feature_store.movielens): the Spark reader of the batch ingest and
the Python rule of the replay make the same event of every ratings.csv line, tricky ones included."""

from __future__ import annotations

import json

import pytest

from feature_store.movielens import is_skipped, rating_event
from spark_jobs.sources import movielens_ratings_to_raw

pytestmark = pytest.mark.spark

LINES = [
    "userId,movieId,rating,timestamp",
    "1,31,2.5,1260759144",
    " 2 , 7 , 4 , 100 ",
    "3,7,-1,1e3",
    "4,8,nan,5",
    "5,9,04,6",
    ",10,3.0,7",
    "6,,3.0,",
    "7,11,3.5,+5",
    "1,31,2.5",
    "a,b,c,d,e",
    "   ",
]


def test_spark_reader_and_python_rule_agree_line_for_line(spark):
    lines = spark.createDataFrame(
        [(line, f"row{n:02d}") for n, line in enumerate(LINES)], "line string, source string"
    )
    raw = {r.source: r.raw for r in movielens_ratings_to_raw(lines).collect()}
    expected = {}
    for n, line in enumerate(LINES):
        if is_skipped(line):
            continue
        event = rating_event(line)
        expected[f"row{n:02d}"] = event if event is not None else line
    assert {
        source: (json.loads(text) if text.startswith("{") else text) for source, text in raw.items()
    } == expected
    assert expected["row01"] == {
        "event_id": "ml-1-31-1260759144",
        "user_id": "1",
        "item_id": "31",
        "event_type": "rating",
        "ts": 1260759144000,
        "value": 2.5,
    }
    assert sorted(raw) == [f"row{n:02d}" for n in range(1, 11)]

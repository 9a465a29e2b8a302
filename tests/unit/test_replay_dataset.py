"""Reading the replay's input, choosing the cut-off and writing the batch layer's pre-T input."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import orjson
import pytest

from feature_store.movielens import is_skipped, rating_event
from lambdarec.replay.dataset import (
    ReplayInputError,
    check_cutoff,
    cutoff_for_fraction,
    load_source,
    midnight_ms,
    parse_cutoff,
    split_at,
    write_batch_input,
)

NOW = datetime(2026, 11, 1, tzinfo=UTC)
DAY = 86_400_000
D1 = midnight_ms(date(2026, 10, 1))


def _jsonl(path: Path, rows: list) -> None:
    path.write_bytes(b"".join((row if isinstance(row, bytes) else orjson.dumps(row)) + b"\n" for row in rows))


def test_jsonl_events_are_validated_deduped_and_time_ordered(tmp_path: Path):
    rows = [
        {"event_id": "e2", "user_id": "u", "item_id": "b", "event_type": "view", "ts": D1 + 5},
        {
            "event_id": "e1",
            "user_id": "u",
            "item_id": "a",
            "event_type": "click",
            "ts": "2026-10-01T00:00:00.005Z",
        },
        # a re-send: the first copy wins, though this one says an earlier time and another item
        {"event_id": "e2", "user_id": "u", "item_id": "z", "event_type": "view", "ts": D1 + 1},
        b"{not json",
        {"event_id": "e3", "user_id": "u", "item_id": "c", "event_type": "hover", "ts": D1},  # unknown type
        {
            "event_id": "e4",
            "user_id": "v",
            "item_id": "c",
            "event_type": "rating",
            "ts": D1 + DAY,
            "value": 4.5,
            "context": {"device": "ios"},
        },
        {
            "event_id": "e5",
            "user_id": "v",
            "item_id": "c",
            "event_type": "view",
            "ts": "2099-01-01T00:00:00Z",
        },  # future
    ]
    (tmp_path / "events").mkdir()
    _jsonl(tmp_path / "events" / "part-0.jsonl", rows)
    _jsonl(tmp_path / "items.jsonl", [{"item_id": "a"}, {"item_id": "b"}, {"category": "x"}])
    source = load_source(tmp_path, "jsonl", NOW)
    assert [(e.event_id, e.ts_ms, e.order) for e in source.events] == [
        ("e2", D1 + 5, 0),
        ("e1", D1 + 5, 1),
        ("e4", D1 + DAY, 5),
    ]
    assert source.events[2].wire() == {
        "event_id": "e4",
        "user_id": "v",
        "item_id": "c",
        "event_type": "rating",
        "ts": D1 + DAY,
        "value": 4.5,
        "context": {"device": "ios"},
    }
    assert source.duplicates == 1
    assert len(source.bad_lines) == 3
    assert source.catalog_items == frozenset({"a", "b"})


def test_movielens_rows_become_the_batch_readers_events(tmp_path: Path):
    assert rating_event("1,31,2.5,1260759144") == {
        "event_id": "ml-1-31-1260759144",
        "user_id": "1",
        "item_id": "31",
        "event_type": "rating",
        "ts": 1260759144000,
        "value": 2.5,
    }
    assert rating_event("1,31,2.5") is None
    # what is not a plain number stays text, for the event contract to reject; empty fields are missing
    assert rating_event(" 2 ,, 04 ,+5") == {
        "event_id": None,
        "user_id": "2",
        "item_id": None,
        "event_type": "rating",
        "ts": "+5",
        "value": "04",
    }
    assert rating_event("3,7,-1,1e3")["ts"] == "1e3" and rating_event("3,7,nan,1")["value"] == "nan"
    assert [is_skipped(line) for line in ("userId,movieId,rating,timestamp", "  ", "1,31,2.5,1")] == [
        True,
        True,
        False,
    ]
    (tmp_path / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n1,31,2.5,200\n2,31,x,100\n1,10,4,100\n"
    )
    (tmp_path / "movies.csv").write_text(
        'movieId,title,genres\n31,"Dangerous Minds, The (1995)",Drama\n10,GoldenEye (1995),Action\n'
    )
    source = load_source(tmp_path / "ratings.csv", "movielens", NOW)
    assert [(e.user_id, e.item_id, e.ts_ms, e.value) for e in source.events] == [
        ("1", "10", 100_000, 4.0),
        ("1", "31", 200_000, 2.5),
    ]
    assert source.bad_lines == [b"2,31,x,100"]
    assert source.catalog_items == frozenset({"31", "10"})


def test_unusable_inputs_say_what_is_wrong(tmp_path: Path):
    with pytest.raises(ReplayInputError, match="ratings CSV"):
        load_source(tmp_path / "nope.csv", "movielens", NOW)
    (tmp_path / "r.csv").write_text("userId,movieId,rating,timestamp\nbad\n")
    with pytest.raises(ReplayInputError, match="no valid event"):
        load_source(tmp_path / "r.csv", "movielens", NOW)
    with pytest.raises(ReplayInputError, match="unknown format"):
        load_source(tmp_path, "parquet", NOW)  # type: ignore[arg-type]


def test_cutoff_for_fraction_picks_the_closest_midnight():
    times = [D1 + 10, D1 + 20, D1 + DAY + 1, D1 + DAY + 2, D1 + 2 * DAY + 5]  # 2, 2, 1 per day
    assert cutoff_for_fraction(times, 0.2) == date(2026, 10, 3)  # 1/5 after
    assert cutoff_for_fraction(times, 0.5) == date(2026, 10, 2)  # 3/5 is closer than 1/5
    assert cutoff_for_fraction(times, 0.4) == date(2026, 10, 3)  # a tie: the later midnight
    assert cutoff_for_fraction(times, 0.6) == date(2026, 10, 2)  # 3/5 after
    with pytest.raises(ReplayInputError, match="one day"):
        cutoff_for_fraction([D1, D1 + 5], 0.1)
    with pytest.raises(ReplayInputError, match="between 0 and 1"):
        cutoff_for_fraction(times, 1.5)


def test_cutoff_parsing_and_checks():
    assert parse_cutoff("2017-06-21") == date(2017, 6, 21)
    with pytest.raises(ReplayInputError, match="not a date"):
        parse_cutoff("2017-06-21T10:00")
    check_cutoff([D1, D1 + DAY], date(2026, 10, 2))
    with pytest.raises(ReplayInputError, match="no event after"):
        check_cutoff([D1, D1 + DAY], date(2026, 10, 5))
    with pytest.raises(ReplayInputError, match="no event before"):
        check_cutoff([D1, D1 + DAY], date(2026, 10, 1))


def test_batch_input_holds_the_events_before_the_cutoff_and_the_rejected_lines(tmp_path: Path):
    src = tmp_path / "src"
    src.mkdir()
    rows = [
        {"event_id": "a", "user_id": "u", "item_id": "x", "event_type": "view", "ts": D1 + 1},
        {"event_id": "b", "user_id": "u", "item_id": "y", "event_type": "view", "ts": D1 + DAY},
        b"garbage",
    ]
    _jsonl(src / "e.jsonl", rows)
    _jsonl(src / "items.jsonl", [{"item_id": "x"}])
    source = load_source(src / "e.jsonl", "jsonl", NOW)
    before, after = split_at(source.events, date(2026, 10, 2))
    assert [e.event_id for e in before] == ["a"] and [e.event_id for e in after] == ["b"]
    out = write_batch_input(source, date(2026, 10, 2), tmp_path / "batch")
    assert (out / "events" / "part-00000.jsonl").read_bytes() == orjson.dumps(rows[0]) + b"\n" + b"garbage\n"
    assert (out / "items.jsonl").read_bytes() == (src / "items.jsonl").read_bytes()

    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,5,3,10\n1,6,4,900000\n")
    ml = load_source(tmp_path / "ratings.csv", "movielens", NOW)
    out = write_batch_input(ml, date(1970, 1, 2), tmp_path / "ml")
    assert (out / "ratings.csv").read_text() == "userId,movieId,rating,timestamp\n1,5,3,10\n"

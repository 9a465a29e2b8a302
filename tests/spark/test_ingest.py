"""Ingest: the Spark rules equal feature_store.events.validate_event_dict, duplicates, bronze/quarantine
writes (re-ingest adds nothing), the catalog upsert, MovieLens, and a generated file with bad rows.

Why one module: one step (spark_jobs.ingest) and its tables, on the shared Spark session.
"""

import json
from collections import Counter
from datetime import UTC, date, datetime, timedelta

import pytest
from pyspark.testing import assertDataFrameEqual

from feature_store.events import BUS_ENTRY_REASONS, QuarantineReason, first_copies, validate_event_dict
from feature_store.tables import BRONZE_EVENTS, ITEMS, QUARANTINE
from lambdarec.datagen import GeneratorConfig, Manifest, generate
from spark_jobs.ingest import ingest, split_valid_events, upsert_items, validate_raw_events
from spark_jobs.sources import movielens_ratings_to_raw

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
TOLERANCE = timedelta(minutes=10)


def naive(text: str) -> datetime:
    return datetime.fromisoformat(text)


def good(n: int, **overrides) -> dict:
    row = {
        "event_id": f"e{n}",
        "user_id": "u1",
        "item_id": "i1",
        "event_type": "view",
        "ts": "2026-11-01T10:00:00Z",
    }
    row.update(overrides)
    return row


# One row per rule and edge: every QuarantineReason, every ts form, value coercions, context handling.
AGREEMENT_CASES = [
    good(1),
    good(2, event_id=123),
    good(3, event_id=True),
    good(4, event_id="abc\n"),
    good(5, event_id=""),
    good(6, event_id=None),
    {k: v for k, v in good(7).items() if k != "event_id"},
    good(8, user_id=None),
    good(9, user_id=""),
    good(10, item_id=""),
    {k: v for k, v in good(11).items() if k != "item_id"},
    good(12, item_id="x" * 128),
    good(13, item_id="x" * 129),
    good(14, user_id="bad id with spaces"),
    good(15, event_type="teleport"),
    good(16, event_type=5),
    good(17, event_type="VIEW"),
    {k: v for k, v in good(18).items() if k != "event_type"},
    good(19, ts="soon"),
    good(20, ts=None),
    good(21, ts=True),
    good(22, ts=""),
    good(23, ts=1_793_527_200_000),
    good(24, ts=1.5e12),
    good(25, ts="1793527200000.5"),
    good(26, ts=" 1793527200000 "),
    good(27, ts="2026-11-01T10:00:00.1234567Z"),
    good(28, ts="2026-11-01T10:00:00.123+0100"),
    good(29, ts="2026-11-01T10:00:00+23:59"),
    good(30, ts="2026-11-01T10:00:00+24:00"),
    good(31, ts="2026-11-01T24:00:00Z"),
    good(32, ts="2026-11-01T10:00:60Z"),
    good(33, ts="2026-02-30T10:00:00Z"),
    good(34, ts="0000-01-01T00:00:00Z"),
    good(35, ts=1e20),
    good(36, ts=-1e15),
    good(37, ts="2026-11-01 10:00:00"),
    good(38, ts="2026-11-01t10:00:00"),
    good(39, ts="2026-11-01T10:00:00-00:30"),
    good(40, ts="2026-11-01T10:00:00+01:75"),
    good(41, ts="2026-11-01T12:10:00Z"),  # exactly now + tolerance: still fine
    good(42, ts="2026-11-01T12:10:00.000001Z"),  # one microsecond later: future
    good(43, ts="2099-01-01T00:00:00Z", value="a lot"),  # a bad value outranks a future ts
    good(44, value=True),
    good(45, value="3.5"),
    good(46, value=" 3.5 "),
    good(47, value="1_000"),
    good(48, value="1d"),
    good(49, value="inf"),
    good(50, value=[1]),
    good(51, value={"a": 1}),
    good(52, event_type="rating"),
    good(53, event_type="rating", value=4.5),
    good(54, event_type="rating", value=None),
    good(55, context="x"),
    good(56, context=[1]),
    good(57, context={"device": "ios", "gone": None, "position": "3"}),
    good(58, context=None),
    good(59, event_id=None, event_type="teleport", ts="soon"),  # several problems: the first by priority
    good(60, user_id="u 1", event_type="teleport"),
    good(61, context="x", event_id=None),
    good(62, context={f"k{n}": "v" for n in range(32)}),  # at the key limit
    good(63, context={f"k{n}": "v" for n in range(33)}),
    good(64, context={"page": "\u00e9" * 2046}),  # 4,096 UTF-8 bytes: at the byte limit
    good(65, context={"page": "\u00e9" * 2047}),
    good(
        66, context={"page": "p" * 5000, "gone": None}, ts="2099-01-01T00:00:00Z"
    ),  # too large outranks a future ts
    good(67, context={"page": "p" * 5000}, event_type="teleport"),
]
NOT_OBJECTS = ["not json", "[1, 2]", '"a string"', "42", '{"event_id": "e99", "user_id"']
# A repeated key keeps its last value, in Spark as in Python's json (not an unparseable row).
DUPLICATE_KEYS = [
    '{"event_id": "e70", "user_id": "u1", "item_id": "i1", "event_type": "rating", "value": 1, "value": 4.5, "ts": "2026-11-01T10:00:00Z"}',
    '{"event_id": "e71", "user_id": "u1", "item_id": "i1", "event_type": "view", "event_type": "teleport", "ts": "2026-11-01T10:00:00Z"}',
    '{"event_id": "e72", "user_id": "u1", "item_id": "i1", "event_type": "view", "ts": "soon", "ts": "2026-11-01T09:00:00Z"}',
]


def python_verdict(raw: str):
    try:
        decoded = json.loads(raw)
    except ValueError:
        decoded = raw
    return validate_event_dict(decoded, now=NOW, future_tolerance=TOLERANCE)


def test_spark_rules_agree_with_validate_event_dict(spark):
    raws = [json.dumps(case) for case in AGREEMENT_CASES] + NOT_OBJECTS + DUPLICATE_KEYS
    df = arrived_in_order(spark, raws, "test")
    got = {row["raw"]: row for row in validate_raw_events(df, NOW, TOLERANCE).collect()}

    def spark_view(row):
        ts = row["ts"].replace(tzinfo=UTC) if row["reason"] is None else None
        return (
            row["reason"],
            ts,
            row["value"] if row["reason"] is None else None,
            row["context"] if row["reason"] is None else None,
        )

    def python_view(raw):
        event, reason, _ = python_verdict(raw)
        if event is None:
            return (reason.value, None, None, None)
        return (None, event.ts, event.value, event.context)

    assert {raw: spark_view(got[raw]) for raw in raws} == {raw: python_view(raw) for raw in raws}
    # Every reason but the duplicate (which needs two rows) and the bus entry's own is covered above.
    assert {got[raw]["reason"] for raw in raws} - {None} == {
        r.value for r in QuarantineReason if r not in BUS_ENTRY_REASONS
    } - {"duplicate_event_id"}
    assert all(got[raw]["detail"] for raw in raws if got[raw]["reason"])
    oversize = [raw for raw in raws if got[raw]["reason"] == "context_too_large"]
    assert [got[raw]["detail"] for raw in oversize] == [python_verdict(raw)[2] for raw in oversize]


def test_split_gives_bronze_rows_and_quarantine_rows_with_reasons(spark):
    raws = [
        json.dumps(good(1, ts=1_793_527_200_000, value=2, context={"device": "web"})),
        json.dumps(good(2, ts="2026-10-31T23:30:00-01:00", event_type="rating", value="4.5", user_id="u2")),
        json.dumps(good(3, event_type="hover")),
        "garbage",
    ]
    df = arrived_in_order(spark, raws, "file:/in.jsonl")
    events, quarantine = split_valid_events(df, NOW, TOLERANCE)
    # the bronze shape, column for column (names, order, types) and row for row
    assertDataFrameEqual(
        events,
        spark.createDataFrame(
            [
                (
                    "e1",
                    "u1",
                    "i1",
                    "view",
                    naive("2026-11-01 10:00:00"),
                    2.0,
                    {"device": "web"},
                    "file:/in.jsonl",
                    naive("2026-11-01 12:00:00"),
                    date(2026, 11, 1),
                ),
                (
                    "e2",
                    "u2",
                    "i1",
                    "rating",
                    naive("2026-11-01 00:30:00"),
                    4.5,
                    None,
                    "file:/in.jsonl",
                    naive("2026-11-01 12:00:00"),
                    date(2026, 11, 1),
                ),
            ],
            BRONZE_EVENTS.ddl,
        ),
    )
    assert list(quarantine.columns) == list(QUARANTINE.columns)
    assert sorted((r["raw"], r["reason"], r["source"], r["ingest_date"]) for r in quarantine.collect()) == [
        ("garbage", "malformed", "file:/in.jsonl", date(2026, 11, 1)),
        (raws[2], "unknown_event_type", "file:/in.jsonl", date(2026, 11, 1)),
    ]


def arrived_in_order(spark, raws, source):
    """(raw, source, arrival): the rows of one input, arrived in list order."""
    return spark.createDataFrame(
        [(raw, source, n) for n, raw in enumerate(raws)], "raw STRING, source STRING, arrival BIGINT"
    )


def test_the_first_copy_of_an_event_id_to_arrive_wins(spark):
    early = json.dumps(good(1, ts="2026-11-01T09:00:00Z"))
    resent_later = json.dumps(good(1, ts="2026-11-01T09:05:00Z", item_id="i2"))
    copy_b = json.dumps(good(2, item_id="b"))
    copy_a = json.dumps(good(2, item_id="a"))
    bad_same_id = json.dumps(good(2, event_type="hover"))  # a bad row with the id does not count as a copy
    twin = json.dumps(good(3))
    raws = [bad_same_id, resent_later, early, copy_b, copy_a, twin, twin]
    events, quarantine = split_valid_events(arrived_in_order(spark, raws, "s"), NOW, TOLERANCE)
    winners = [
        ("e1", "i2", "2026-11-01 09:05:00"),
        ("e2", "b", "2026-11-01 10:00:00"),
        ("e3", "i1", "2026-11-01 10:00:00"),
    ]
    assert sorted((r["event_id"], r["item_id"], r["ts"]) for r in events.collect()) == [
        (event_id, item_id, naive(ts)) for event_id, item_id, ts in winners
    ]
    q = sorted((r["raw"], r["reason"], r["detail"], r["row_key"]) for r in quarantine.collect())
    assert [(raw, reason, detail) for raw, reason, detail, _ in q] == sorted(
        [
            (early, "duplicate_event_id", "event_id e1 came earlier in this input"),
            (copy_a, "duplicate_event_id", "event_id e2 came earlier in this input"),
            (
                bad_same_id,
                "unknown_event_type",
                'event_type "hover" is not one of view, click, play, add_to_cart, like, purchase, skip, rating',
            ),
            (twin, "duplicate_event_id", "event_id e3 came earlier in this input"),
        ]
    )
    assert len({key for *_, key in q}) == 4
    # the event contract's rule, as the streaming job applies it to a bus batch, keeps the same copies
    decoded = [json.loads(raw) for raw in raws if raw != bad_same_id]
    assert (
        sorted(
            (e["event_id"], e["item_id"], e["ts"].replace("T", " ").removesuffix("Z"))
            for e in first_copies(decoded, lambda e: e["event_id"])
        )
        == winners
    )


def write_lines(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def table_rows(spark, settings, table, *cols):
    df = spark.read.format("delta").load(settings.table_path(table.name))
    return sorted(tuple(r[c] for c in cols) for r in df.collect())


def test_reingest_adds_nothing_and_reports_it(spark, table_settings, tmp_path):
    source = write_lines(
        tmp_path / "in" / "events" / "part-0.jsonl",
        [
            json.dumps(good(1)),
            json.dumps(good(2, ts="2026-10-30T08:00:00Z")),
            "",
            json.dumps(good(3, user_id=None)),
            "{broken",
        ],
    )
    write_lines(
        tmp_path / "in" / "items.jsonl",
        [json.dumps({"item_id": "i1", "category": "books", "title": "A book"})],
    )
    first = ingest(spark, table_settings, tmp_path / "in", "jsonl", NOW)
    again = ingest(spark, table_settings, tmp_path / "in", "jsonl", NOW + timedelta(hours=1))

    assert (
        first.rows_read,
        first.ingested,
        first.already_present,
        first.quarantined,
        first.quarantine_added,
    ) == (4, 2, 0, {"missing_user_id": 1, "malformed": 1}, 2)
    assert (
        again.rows_read,
        again.ingested,
        again.already_present,
        again.quarantined,
        again.quarantine_added,
    ) == (4, 0, 2, {"missing_user_id": 1, "malformed": 1}, 0)
    assert (first.items_inserted, again.items_inserted, again.items_updated) == (1, 0, 1)
    assert first.event_files == (str(source),)
    assert table_rows(
        spark, table_settings, BRONZE_EVENTS, "event_id", "event_date", "ingest_time", "source"
    ) == [
        ("e1", date(2026, 11, 1), naive("2026-11-01 12:00:00"), f"file:{source}"),
        ("e2", date(2026, 10, 30), naive("2026-11-01 12:00:00"), f"file:{source}"),
    ]
    assert table_rows(spark, table_settings, QUARANTINE, "reason", "ingest_time") == [
        ("malformed", naive("2026-11-01 12:00:00")),
        ("missing_user_id", naive("2026-11-01 12:00:00")),
    ]
    assert table_rows(spark, table_settings, ITEMS, "item_id", "category", "categories", "title") == [
        ("i1", "books", ["books"], "A book")
    ]


def test_catalog_upsert_overwrites_known_items_and_fills_unknown_category(spark, table_settings):
    first = spark.createDataFrame(
        [("i1", "books", ["books"], "Old title", {}, None), ("i2", None, None, "No category", None, None)],
        ITEMS.ddl,
    )
    second = spark.createDataFrame(
        [("i1", "music", ["music", "books"], "New title", {"year": "2001"}, None)], ITEMS.ddl
    )
    from spark_jobs.sources import catalog_rows

    assert upsert_items(spark, table_settings, catalog_rows(first)) == {"inserted": 2, "updated": 0}
    assert upsert_items(spark, table_settings, catalog_rows(second)) == {"inserted": 0, "updated": 1}
    assert table_rows(
        spark, table_settings, ITEMS, "item_id", "category", "categories", "title", "attributes"
    ) == [
        ("i1", "music", ["music", "books"], "New title", {"year": "2001"}),
        ("i2", "unknown", ["unknown"], "No category", None),
    ]


def test_movielens_ratings_become_rating_events_and_movies_the_catalog(spark, table_settings, tmp_path):
    folder = tmp_path / "ml"
    write_lines(
        folder / "ratings.csv",
        [
            "userId,movieId,rating,timestamp",
            "1,31,2.5,1260759144",
            "1,1029,3.0,1260759179",
            "2,10,oops,1260759200",
            "3,10",
        ],
    )
    write_lines(
        folder / "movies.csv",
        [
            "movieId,title,genres",
            "31,Dangerous Minds (1995),Drama",
            '1029,"Dumbo, The (1941)",Animation|Children|Drama',
            "10,Nothing,(no genres listed)",
        ],
    )
    report = ingest(spark, table_settings, folder, "movielens", NOW)
    assert (report.rows_read, report.ingested, report.quarantined, report.items_inserted) == (
        4,
        2,
        {"malformed": 1, "bad_value": 1},
        3,
    )
    assert table_rows(
        spark, table_settings, BRONZE_EVENTS, "event_id", "user_id", "item_id", "event_type", "ts", "value"
    ) == [
        ("ml-1-1029-1260759179", "1", "1029", "rating", naive("2009-12-14 02:52:59"), 3.0),
        ("ml-1-31-1260759144", "1", "31", "rating", naive("2009-12-14 02:52:24"), 2.5),
    ]
    assert table_rows(spark, table_settings, QUARANTINE, "raw", "reason") == [
        ("3,10", "malformed"),
        (
            '{"event_id":"ml-2-10-1260759200","user_id":"2","item_id":"10","event_type":"rating","ts":1260759200000,"value":"oops"}',
            "bad_value",
        ),
    ]
    assert table_rows(
        spark, table_settings, ITEMS, "item_id", "category", "categories", "title", "attributes"
    ) == [
        ("10", "unknown", [], "Nothing", {}),
        ("1029", "Animation", ["Animation", "Children", "Drama"], "Dumbo, The (1941)", {"year": "1941"}),
        ("31", "Drama", ["Drama"], "Dangerous Minds (1995)", {"year": "1995"}),
    ]


def test_movielens_csv_to_raw_keeps_the_header_out(spark):
    lines = spark.createDataFrame(
        [("userId,movieId,rating,timestamp", "r"), ("7,8,4.0,10", "r")], "line STRING, source STRING"
    )
    assertDataFrameEqual(
        movielens_ratings_to_raw(lines),
        spark.createDataFrame(
            [
                (
                    '{"event_id":"ml-7-8-10","user_id":"7","item_id":"8","event_type":"rating","ts":10000,"value":4.0}',
                    "r",
                )
            ],
            "raw STRING, source STRING",
        ),
    )


def test_generated_file_with_bad_rows_lands_row_for_row(spark, table_settings, tmp_path):
    """5% bad rows: every good row in bronze, every bad row in quarantine with its reason, counts add up."""
    out = tmp_path / "gen"
    manifest = generate(
        GeneratorConfig(events=1_500, users=60, items=80, days=4, bad_fraction=0.05, shards=2, seed=11), out
    )
    assert manifest.bad_total > 0 and manifest.good_rows == 1_500
    ingest_time = datetime(2026, 11, 29, tzinfo=UTC)
    report = ingest(spark, table_settings, out, "jsonl", ingest_time)

    # Independent oracle: the Python event contract over the same lines; per id the first copy in
    # (file path, line) order wins.
    expected_bad, good_by_id = Counter(), {}
    for path in sorted((out / "events").glob("*.jsonl")):
        for line in path.read_text().splitlines():
            event, reason, _ = python_verdict_at(line, ingest_time)
            if reason is not None:
                expected_bad[(line, reason.value)] += 1
            elif event.event_id in good_by_id:
                expected_bad[(line, "duplicate_event_id")] += 1
            else:
                good_by_id[event.event_id] = (event.item_id, event.ts)
    assert len(list((out / "events").glob("*.jsonl"))) == 2

    assert report.rows_read == manifest.rows_total
    assert report.ingested == manifest.good_rows == len(good_by_id)
    assert report.quarantined == {k: v for k, v in manifest.bad_rows.items() if v}
    assert report.ingested + report.already_present + report.quarantined_total == report.rows_read
    assert {
        (event_id, item_id, ts.replace(tzinfo=UTC))
        for event_id, item_id, ts in table_rows(
            spark, table_settings, BRONZE_EVENTS, "event_id", "item_id", "ts"
        )
    } == {(event_id, item_id, ts) for event_id, (item_id, ts) in good_by_id.items()}
    assert Counter(table_rows(spark, table_settings, QUARANTINE, "raw", "reason")) == expected_bad
    assert Manifest.read(out).bad_rows == manifest.bad_rows


def python_verdict_at(raw: str, now: datetime):
    try:
        decoded = json.loads(raw)
    except ValueError:
        decoded = raw
    return validate_event_dict(decoded, now=now, future_tolerance=TOLERANCE)


def test_unknown_format_and_missing_files_are_clear_errors(spark, table_settings, tmp_path):
    from spark_jobs.sources import SourceError

    with pytest.raises(SourceError, match="unknown format 'csv'"):
        ingest(spark, table_settings, tmp_path, "csv", NOW)
    with pytest.raises(SourceError, match="no ratings.csv"):
        ingest(spark, table_settings, tmp_path, "movielens", NOW)
    with pytest.raises(SourceError, match="no \\*.jsonl event files"):
        ingest(spark, table_settings, tmp_path, "jsonl", NOW)

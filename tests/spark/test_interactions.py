"""Silver interactions: dedupe, labels, sessions (gaps, midnight), the window, idempotent reruns."""

from datetime import date, datetime, timedelta

from feature_store.tables import BRONZE_EVENTS, INTERACTIONS
from spark_jobs.interactions import build_interactions, run_interactions

INGESTED = datetime(2026, 11, 2, 12, 0)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def bronze_row(event_id, user, item, when, event_type="view", value=None, ingest=INGESTED, source="s"):
    moment = at(when)
    return (event_id, user, item, event_type, moment, value, None, source, ingest, moment.date())


def bronze_df(spark, rows):
    return spark.createDataFrame(rows, BRONZE_EVENTS.ddl)


def silver(df, *cols):
    return sorted(tuple(r[c] for c in cols) for r in df.collect())


def test_labels_weights_and_ratings(spark):
    rows = [
        bronze_row("v", "u1", "i1", "2026-11-01 10:00", "view"),
        bronze_row("c", "u1", "i1", "2026-11-01 10:01", "click"),
        bronze_row("a", "u1", "i1", "2026-11-01 10:02", "add_to_cart", 9.99),
        bronze_row("p", "u1", "i1", "2026-11-01 10:03", "purchase", 9.99),
        bronze_row("s", "u1", "i2", "2026-11-01 10:04", "skip"),
        bronze_row("r5", "u1", "i1", "2026-11-01 10:05", "rating", 5.0),
        bronze_row("r35", "u1", "i3", "2026-11-01 10:06", "rating", 3.5),
        bronze_row("r3", "u1", "i4", "2026-11-01 10:07", "rating", 3.0),
        bronze_row("r1", "u1", "i5", "2026-11-01 10:08", "rating", 1.0),
        bronze_row(
            "rnan", "u1", "i6", "2026-11-01 10:09", "rating", float("nan")
        ),  # not a usable rating: left out
    ]
    out = build_interactions(
        bronze_df(spark, rows), date(2026, 11, 1), date(2026, 11, 2), positive_rating_threshold=3.5
    )
    assert out.columns == list(INTERACTIONS.columns)
    assert silver(out, "event_id", "weight", "rating", "is_explicit", "label") == [
        ("a", 4.0, None, False, 1),
        ("c", 2.0, None, False, 1),
        ("p", 8.0, None, False, 1),
        ("r1", 0.0, 1.0, True, 0),
        ("r3", 0.5, 3.0, True, 0),
        ("r35", 1.0, 3.5, True, 1),
        ("r5", 2.5, 5.0, True, 1),
        ("s", -1.0, None, False, 0),
        ("v", 1.0, None, False, 1),
    ]


def test_dedupe_keeps_the_copy_that_reached_bronze_first(spark):
    rows = [
        bronze_row(
            "e0", "u1", "i0", "2026-11-01 09:00", source="re-sent", ingest=INGESTED + timedelta(hours=2)
        ),
        bronze_row("e0", "u1", "i0", "2026-11-01 09:30", source="first"),
        bronze_row("e1", "u1", "i1", "2026-11-01 10:05", source="late"),
        bronze_row("e1", "u1", "i1", "2026-11-01 10:00", source="early"),
        bronze_row(
            "e1",
            "u1",
            "i1",
            "2026-11-01 10:00",
            source="same-time-later-ingest",
            ingest=INGESTED + timedelta(hours=1),
        ),
        bronze_row("e2", "u1", "i2", "2026-11-01 10:10"),
    ]
    out = build_interactions(bronze_df(spark, rows), date(2026, 11, 1), date(2026, 11, 2))
    assert silver(out, "event_id", "ts") == [
        ("e0", at("2026-11-01 09:30")),
        ("e1", at("2026-11-01 10:00")),
        ("e2", at("2026-11-01 10:10")),
    ]


def test_sessions_split_on_gaps_of_at_least_the_session_gap_and_keep_their_id_past_midnight(spark):
    rows = [
        # u1: 23:50 the day before the window, 23:59 (9 min), 00:20 (21 min): one session from the day before.
        bronze_row("a", "u1", "i1", "2026-10-31 23:50"),
        bronze_row("b", "u1", "i2", "2026-10-31 23:59"),
        bronze_row("c", "u1", "i3", "2026-11-01 00:20"),
        # 29:59 later: same session; then exactly 30:00 later: a new one; then 31 minutes: another.
        bronze_row("d", "u1", "i4", "2026-11-01 00:49:59"),
        bronze_row("e", "u1", "i5", "2026-11-01 01:19:59"),
        bronze_row("f", "u1", "i6", "2026-11-01 01:50:59"),
        # u2: two events at the same instant share the session.
        bronze_row("g2", "u2", "i1", "2026-11-01 12:00"),
        bronze_row("g1", "u2", "i2", "2026-11-01 12:00"),
        # Outside the window: neither read as history (two days back) nor written.
        bronze_row("old", "u2", "i3", "2026-10-30 11:59"),
        bronze_row("next", "u1", "i1", "2026-11-02 00:00"),
    ]
    out = build_interactions(
        bronze_df(spark, rows), date(2026, 11, 1), date(2026, 11, 2), session_gap=timedelta(minutes=30)
    )
    ms = lambda text: int((at(text) - datetime(1970, 1, 1)).total_seconds() * 1000)  # noqa: E731
    assert silver(out, "event_id", "session_id", "event_date") == [
        ("c", f"u1:{ms('2026-10-31 23:50')}", date(2026, 11, 1)),
        ("d", f"u1:{ms('2026-10-31 23:50')}", date(2026, 11, 1)),
        ("e", f"u1:{ms('2026-11-01 01:19:59')}", date(2026, 11, 1)),
        ("f", f"u1:{ms('2026-11-01 01:50:59')}", date(2026, 11, 1)),
        ("g1", f"u2:{ms('2026-11-01 12:00')}", date(2026, 11, 1)),
        ("g2", f"u2:{ms('2026-11-01 12:00')}", date(2026, 11, 1)),
    ]


def test_run_interactions_overwrites_exactly_its_window(spark, table_settings):
    from spark_jobs.ingest import write_bronze

    write_bronze(
        spark,
        table_settings,
        bronze_df(
            spark,
            [
                bronze_row("a", "u1", "i1", "2026-11-01 10:00"),
                bronze_row("b", "u1", "i2", "2026-11-02 10:00"),
                bronze_row("c", "u2", "i2", "2026-11-03 10:00"),
            ],
        ),
    )
    path = table_settings.table_path(INTERACTIONS.name)
    first = run_interactions(spark, table_settings, date(2026, 11, 1), date(2026, 11, 4))
    again = run_interactions(spark, table_settings, date(2026, 11, 1), date(2026, 11, 4))
    assert (first.rows_written, again.rows_written) == (3, 3)
    assert silver(spark.read.format("delta").load(path), "event_id", "event_date") == [
        ("a", date(2026, 11, 1)),
        ("b", date(2026, 11, 2)),
        ("c", date(2026, 11, 3)),
    ]
    # A late event for 11-02 arrives; rebuilding only [11-02, 11-03) touches only that date.
    write_bronze(
        spark,
        table_settings,
        bronze_df(spark, [bronze_row("late", "u3", "i9", "2026-11-02 23:00", "purchase")]),
    )
    assert run_interactions(spark, table_settings, date(2026, 11, 2), date(2026, 11, 3)).rows_written == 2
    assert silver(spark.read.format("delta").load(path), "event_id", "event_date", "weight") == [
        ("a", date(2026, 11, 1), 1.0),
        ("b", date(2026, 11, 2), 1.0),
        ("c", date(2026, 11, 3), 1.0),
        ("late", date(2026, 11, 2), 8.0),
    ]

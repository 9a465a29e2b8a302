"""Gold features: every user and item feature on a tiny history, the point-in-time boundary (an event
at exactly 00:00 of as_of is excluded), windows by age in days, folding of old days, category
affinity, genre profiles and item genres, a table gaining new columns, and idempotent reruns/backfills
of `run_features`.

Why one module: every test reads the same tiny history and catalogue fixtures and the builders of one
module (spark_jobs.features); split, each file would rebuild them.
"""

from datetime import date, datetime

import pytest

from feature_store.events import EventTypes
from feature_store.features import item_feature_names, user_feature_names
from feature_store.genres import genre_profile
from feature_store.tables import BRONZE_EVENTS, INTERACTIONS, ITEM_FEATURES, ITEMS, USER_FEATURES
from spark_jobs.features import (
    AFFINITY_HALF_LIFE_DAYS,
    build_item_features,
    build_user_features,
    run_features,
    silver_window_to_refresh,
)

WEIGHTS = EventTypes().weights()
START, END = date(2026, 11, 10), date(2026, 11, 12)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def interaction(event_id, user, item, when, event_type="view", rating=None):
    moment = at(when)
    explicit = event_type == "rating"
    weight = max(rating - 3.5 + 1, 0.0) if explicit else WEIGHTS[event_type]
    label = int(rating >= 3.5) if explicit else int(weight > 0)
    return (
        event_id,
        user,
        item,
        event_type,
        moment,
        rating,
        None,
        weight,
        rating,
        explicit,
        label,
        f"{user}:0",
        moment.date(),
    )


HISTORY = [
    interaction("a", "u1", "i1", "2026-11-09 23:59:59"),  # one second before as_of 11-10
    interaction("b", "u1", "i1", "2026-11-10 00:00:00", "click"),  # exactly as_of 11-10: only for 11-11
    interaction("c", "u1", "i2", "2026-11-04 12:00:00", "purchase"),  # 6 days before 11-10, 7 before 11-11
    interaction("d", "u1", "i3", "2026-10-12 12:00:00"),  # 29 / 30 days before
    interaction("e", "u1", "i3", "2026-10-11 12:00:00"),  # 30 / 31 days before
    interaction("f", "u1", "i2", "2026-09-01 12:00:00", "rating", 4.0),  # old: lifetime only (folded)
    interaction("g", "u2", "i1", "2026-11-10 08:00:00", "rating", 2.0),
    interaction("h", "u3", "i1", "2026-11-11 09:00:00", "purchase"),  # on the last as_of: never visible
]
CATALOG = [
    ("i1", "books", ["books"], "A book", None, None),
    ("i2", "music", ["music"], "A record", None, None),
]


@pytest.fixture(scope="module")
def history(spark):
    return spark.createDataFrame(HISTORY, INTERACTIONS.ddl)


@pytest.fixture(scope="module")
def catalog(spark):
    return spark.createDataFrame(CATALOG, ITEMS.ddl)


def user_vector(**values):
    vector = {name: 0.0 for name in user_feature_names()}
    vector.update({"user_avg_rating": None})
    vector.update({k: (float(v) if v is not None else None) for k, v in values.items()})
    return vector


def item_vector(**values):
    vector = {name: 0.0 for name in item_feature_names()}
    vector.update({"item_avg_rating": None})
    vector.update({k: (float(v) if v is not None else None) for k, v in values.items()})
    return vector


def test_user_features_point_in_time(history, catalog):
    rows = {
        (r["as_of"], r["user_id"]): dict(r["features"])
        for r in build_user_features(history, catalog, START, END).collect()
    }
    assert rows == {
        (date(2026, 11, 10), "u1"): user_vector(
            user_view_1d=1,
            user_view_7d=1,
            user_view_30d=3,
            user_purchase_7d=1,
            user_purchase_30d=1,
            user_events_1d=1,
            user_events_7d=2,
            user_events_30d=4,
            user_lifetime_events=5,
            user_distinct_items_30d=3,
            user_recency_s=1,
            user_avg_rating=4.0,
            user_rating_count=1,
        ),
        (date(2026, 11, 11), "u1"): user_vector(
            user_view_7d=1,
            user_view_30d=2,
            user_click_1d=1,
            user_click_7d=1,
            user_click_30d=1,
            user_purchase_7d=1,
            user_purchase_30d=1,
            user_events_1d=1,
            user_events_7d=3,
            user_events_30d=4,
            user_lifetime_events=6,
            user_distinct_items_30d=3,
            user_recency_s=86_400,
            user_avg_rating=4.0,
            user_rating_count=1,
        ),
        (date(2026, 11, 11), "u2"): user_vector(
            user_rating_1d=1,
            user_rating_7d=1,
            user_rating_30d=1,
            user_events_1d=1,
            user_events_7d=1,
            user_events_30d=1,
            user_lifetime_events=1,
            user_distinct_items_30d=1,
            user_recency_s=16 * 3600,
            user_avg_rating=2.0,
            user_rating_count=1,
        ),
    }


def test_category_affinity_is_the_decayed_share_of_positive_weight(history, catalog):
    rows = {
        (r["as_of"], r["user_id"]): dict(r["category_affinity"])
        for r in build_user_features(history, catalog, START, END).collect()
    }

    def decayed(weight, days_before_start):
        return weight * 2 ** (-days_before_start / AFFINITY_HALF_LIFE_DAYS)

    books = decayed(1, 1)
    music = decayed(8, 6) + decayed(1.5, 70)
    unknown = decayed(1, 29) + decayed(1, 30)
    total = books + music + unknown
    assert rows[(date(2026, 11, 10), "u1")] == pytest.approx(
        {"books": books / total, "music": music / total, "unknown": unknown / total}
    )
    books_11 = books + decayed(2, 0)
    total_11 = books_11 + music + unknown
    assert rows[(date(2026, 11, 11), "u1")] == pytest.approx(
        {"books": books_11 / total_11, "music": music / total_11, "unknown": unknown / total_11}
    )
    assert rows[(date(2026, 11, 11), "u2")] == {}  # a 2.0 rating has no positive weight


def test_genre_profiles_and_item_genres_follow_the_one_definition(spark, history):
    # i1 has two genres; i2 lists none, so its main category is its genre; i3 is not in the catalogue
    catalog = spark.createDataFrame(
        [
            ("i1", "books", ["books", "music", "books"], "A songbook", None, None),
            ("i2", "music", [], "A record", None, None),
        ],
        ITEMS.ddl,
    )
    profiles = {
        (r["as_of"], r["user_id"]): dict(r["genre_profile"])
        for r in build_user_features(history, catalog, START, END).collect()
    }
    books_music, music = ("books", "music"), ("music",)
    # before 11-10: a view of i1 (1), a purchase (8) and a 4-star rating (1.5) of i2; i3's views count nowhere
    assert profiles[(date(2026, 11, 10), "u1")] == pytest.approx(
        genre_profile([(books_music, 1.0), (music, 8.0), (music, 1.5)]), rel=1e-12
    )
    assert profiles[(date(2026, 11, 10), "u1")] == pytest.approx({"books": 1 / 11.5, "music": 10.5 / 11.5})
    # the click on i1 at 00:00 of 11-10 counts from 11-11 on; no decay
    assert profiles[(date(2026, 11, 11), "u1")] == pytest.approx({"books": 3 / 15.5, "music": 12.5 / 15.5})
    assert profiles[(date(2026, 11, 11), "u2")] == {}  # a 2.0 rating has no positive weight
    genres = {
        (r["as_of"], r["item_id"]): list(r["genres"])
        for r in build_item_features(history, catalog, START, END).collect()
    }
    assert genres[(date(2026, 11, 10), "i1")] == ["books", "music"]
    assert genres[(date(2026, 11, 10), "i2")] == ["music"]
    assert genres[(date(2026, 11, 10), "i3")] == []


def test_item_features_point_in_time(history, catalog):
    rows = {
        (r["as_of"], r["item_id"]): (r["category"], dict(r["features"]))
        for r in build_item_features(history, catalog, START, END).collect()
    }
    trend_all_recent = 30 / 7
    expected = {
        (date(2026, 11, 10), "i1"): (
            "books",
            item_vector(
                item_events_1d=1,
                item_events_7d=1,
                item_events_30d=1,
                item_users_1d=1,
                item_users_7d=1,
                item_users_30d=1,
                item_weight_30d=1,
                item_trend_7d=trend_all_recent,
                item_age_days=1 / 86_400,
                item_lifetime_events=1,
            ),
        ),
        (date(2026, 11, 10), "i2"): (
            "music",
            item_vector(
                item_events_7d=1,
                item_events_30d=1,
                item_users_7d=1,
                item_users_30d=1,
                item_weight_30d=8,
                item_trend_7d=trend_all_recent,
                item_age_days=69.5,
                item_lifetime_events=2,
                item_avg_rating=4.0,
                item_rating_count=1,
            ),
        ),
        (date(2026, 11, 10), "i3"): (
            "unknown",
            item_vector(
                item_events_30d=2,
                item_users_30d=1,
                item_weight_30d=2,
                item_age_days=29.5,
                item_lifetime_events=2,
            ),
        ),
        (date(2026, 11, 11), "i1"): (
            "books",
            item_vector(
                item_events_1d=2,
                item_events_7d=3,
                item_events_30d=3,
                item_users_1d=2,
                item_users_7d=2,
                item_users_30d=2,
                item_weight_30d=3,
                item_ctr_30d=1.0,
                item_trend_7d=trend_all_recent,
                item_age_days=1 + 1 / 86_400,
                item_lifetime_events=3,
                item_avg_rating=2.0,
                item_rating_count=1,
            ),
        ),
        (date(2026, 11, 11), "i2"): (
            "music",
            item_vector(
                item_events_7d=1,
                item_events_30d=1,
                item_users_7d=1,
                item_users_30d=1,
                item_weight_30d=8,
                item_trend_7d=trend_all_recent,
                item_age_days=70.5,
                item_lifetime_events=2,
                item_avg_rating=4.0,
                item_rating_count=1,
            ),
        ),
        (date(2026, 11, 11), "i3"): (
            "unknown",
            item_vector(
                item_events_30d=1,
                item_users_30d=1,
                item_weight_30d=1,
                item_age_days=30.5,
                item_lifetime_events=2,
            ),
        ),
    }
    assert rows.keys() == expected.keys()
    for key, (category, vector) in expected.items():
        assert rows[key][0] == category
        assert rows[key][1] == pytest.approx(vector), key


def test_conversion_rates_divide_by_views(spark):
    rows = [
        interaction("v1", "u1", "i1", "2026-11-09 10:00"),
        interaction("v2", "u2", "i1", "2026-11-09 10:00"),
        interaction("v3", "u3", "i1", "2026-11-09 10:00"),
        interaction("v4", "u4", "i1", "2026-11-09 10:00"),
        interaction("c1", "u1", "i1", "2026-11-09 10:01", "click"),
        interaction("c2", "u2", "i1", "2026-11-09 10:01", "click"),
        interaction("k1", "u1", "i1", "2026-11-09 10:02", "add_to_cart"),
        interaction("p1", "u1", "i1", "2026-11-09 10:03", "purchase"),
    ]
    out = build_item_features(
        spark.createDataFrame(rows, INTERACTIONS.ddl), None, START, date(2026, 11, 11)
    ).collect()
    assert [(r["item_id"], r["category"]) for r in out] == [("i1", "unknown")]
    features = dict(out[0]["features"])
    assert {
        k: features[k]
        for k in ("item_ctr_30d", "item_cart_rate_30d", "item_purchase_rate_30d", "item_users_1d")
    } == {
        "item_ctr_30d": 0.5,
        "item_cart_rate_30d": 0.25,
        "item_purchase_rate_30d": 0.25,
        "item_users_1d": 4.0,
    }


def test_silver_refresh_window():
    d = date
    assert silver_window_to_refresh(None, None, d(2026, 11, 10), d(2026, 11, 12)) is None
    # No silver yet: everything bronze has up to the end.
    assert silver_window_to_refresh(d(2026, 9, 1), None, d(2026, 11, 10), d(2026, 11, 12)) == (
        d(2026, 9, 1),
        d(2026, 11, 12),
    )
    # Silver up to date: the day before the window (late events) and the window.
    assert silver_window_to_refresh(d(2026, 9, 1), d(2026, 11, 11), d(2026, 11, 10), d(2026, 11, 12)) == (
        d(2026, 11, 9),
        d(2026, 11, 12),
    )
    # Silver stopped earlier: from its first missing day.
    assert silver_window_to_refresh(d(2026, 9, 1), d(2026, 11, 2), d(2026, 11, 10), d(2026, 11, 12)) == (
        d(2026, 11, 3),
        d(2026, 11, 12),
    )


def test_run_features_reruns_and_backfills_are_idempotent(spark, table_settings):
    from spark_jobs.ingest import upsert_items, write_bronze

    bronze = spark.createDataFrame(
        [(r[0], r[1], r[2], r[3], r[4], r[5], None, "test", datetime(2026, 11, 20), r[12]) for r in HISTORY],
        BRONZE_EVENTS.ddl,
    )
    write_bronze(spark, table_settings, bronze)
    upsert_items(spark, table_settings, spark.createDataFrame(CATALOG, ITEMS.ddl))

    def gold(table):
        df = spark.read.format("delta").load(table_settings.table_path(table.name))
        key = "user_id" if table is USER_FEATURES else "item_id"
        return sorted(
            (r["as_of"], r[key], sorted(r["features"].items(), key=lambda kv: kv[0])) for r in df.collect()
        )

    first = run_features(spark, table_settings, START, END)
    users_first, items_first = gold(USER_FEATURES), gold(ITEM_FEATURES)
    again = run_features(spark, table_settings, START, END)
    backfill = run_features(spark, table_settings, date(2026, 11, 11), END)

    assert (first.silver_window, first.silver_rows, first.user_rows, first.item_rows) == (
        ("2026-09-01", "2026-11-12"),
        8,
        3,
        6,
    )
    assert (again.silver_window, again.user_rows, again.item_rows) == (("2026-11-09", "2026-11-12"), 3, 6)
    assert (backfill.silver_window, backfill.user_rows, backfill.item_rows) == (
        ("2026-11-10", "2026-11-12"),
        2,
        3,
    )
    assert gold(USER_FEATURES) == users_first
    assert gold(ITEM_FEATURES) == items_first
    assert [(as_of, user) for as_of, user, _ in users_first] == [
        (date(2026, 11, 10), "u1"),
        (date(2026, 11, 11), "u1"),
        (date(2026, 11, 11), "u2"),
    ]


def test_a_gold_table_written_before_the_genre_columns_gains_them_on_its_next_write(spark, table_settings):
    from dataclasses import replace

    from spark_jobs.delta_io import read_table, replace_window

    # the table as the previous release created and filled it: no genre_profile column
    old = replace(USER_FEATURES, ddl=USER_FEATURES.ddl.rsplit(", genre_profile", 1)[0])
    first = spark.createDataFrame([(date(2026, 11, 9), "u1", {"f": 1.0}, {"c": 1.0})], old.ddl)
    replace_window(spark, table_settings, old, first, "as_of", date(2026, 11, 9), date(2026, 11, 10))
    new = spark.createDataFrame(
        [(date(2026, 11, 10), "u1", {"f": 2.0}, {"c": 1.0}, {"g": 1.0})], USER_FEATURES.ddl
    )
    replace_window(spark, table_settings, USER_FEATURES, new, "as_of", START, date(2026, 11, 11))
    rows = read_table(spark, table_settings, USER_FEATURES).orderBy("as_of").collect()
    assert [(r.as_of, r.genre_profile) for r in rows] == [(date(2026, 11, 9), None), (START, {"g": 1.0})]

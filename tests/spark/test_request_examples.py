"""Request-time training examples: candidates as serving would have proposed them at each moment,
batch inputs as of the nightly, real-time inputs at t, labels from (t, t + horizon]; nothing after t
moves a feature."""

from dataclasses import replace
from datetime import UTC, date, datetime

from feature_store.genres import GENRE_INPUTS, genre_inputs
from feature_store.ranking import RANKER_FEATURES
from feature_store.realtime import REALTIME_INPUTS
from spark_jobs.request_examples import build_request_time_set, request_time_inputs
from tests.batch_models_data import interaction, interactions_df
from tests.realtime_data import PARAMS
from tests.spark.test_training_set import BEFORE, ITEM_GENRES, U1_GENRES, as_none, gold

T, END = date(2024, 1, 10), date(2024, 1, 11)
HOUR = 3_600_000
P = replace(PARAMS, session_gap_ms=30 * 60_000, ttl_ms=7 * 24 * HOUR)


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


T1, T2 = ms("2024-01-10 10:00"), ms("2024-01-10 10:20")
DAY = [
    interaction("u1", "d", "2024-01-10 10:00"),
    interaction("u1", "c", "2024-01-10 10:20", "purchase"),
    interaction("u1", "e", "2024-01-10 10:30", "click"),
]
NIGHTLY = [
    (T, "als", "u1", "c", 0.9, 1),
    (T, "popular", "u1", "f", 2.0, 1),
    (date(2024, 1, 11), "als", "u1", "e", 99.0, 1),
]


def tables(spark):
    candidates = spark.createDataFrame(
        NIGHTLY, "as_of date, source string, user_id string, item_id string, score double, rank int"
    )
    similar = spark.createDataFrame(
        [(T, "d", "e", 0.5, 1)], "as_of date, item_id string, similar_item_id string, score double, rank int"
    )
    users, items = gold(spark)
    return candidates, users, items, similar


def vector(item=None, affinity=None, cand=None, rt=(0.0, 0.0, 0.0, 0.0, 0.0, 0.0), genres=()):
    values = {
        "user_events_7d": 2.0,
        "user_lifetime_events": 2.0,
        **(item or {}),
        **{f"cand_{s}": v for s, v in (cand or {}).items()},
        **dict(zip(REALTIME_INPUTS, rt)),
    }
    if affinity is not None:
        values["ui_category_affinity"] = affinity
    if genres:
        values.update(zip(GENRE_INPUTS, genre_inputs(U1_GENRES, genres)))
    return [values.get(name) for name in RANKER_FEATURES]


C, F_ = {"item_events_7d": 3.0, "item_avg_rating": 4.5}, {"item_events_7d": 7.0}


def examples(spark, *, session_starts: bool, without_speed: int = 0, next_item: int = 0) -> dict:
    candidates, users, items, similar = tables(spark)
    got = build_request_time_set(
        candidates,
        users,
        items,
        similar,
        interactions_df(spark, BEFORE + DAY),
        T,
        END,
        P,
        horizon_ms=HOUR,
        moments_per_user=10,
        max_negatives=5,
        session_start_moments=session_starts,
        moments_without_speed_per_user=without_speed,
        next_item_relevance=next_item,
    )
    return {(r.user_id, r.item_id): (as_none(r.features), r.relevance) for r in got.collect()}


def test_examples_are_asked_at_the_users_events(spark):
    rows = examples(spark, session_starts=False)
    # at 10:00 (after d): d and b are the recent items (excluded, as a, b seen before the nightly), e
    # is d's similar item; c and f come from the nightly sources. At 10:20 c is recent too. At 10:30
    # nothing follows within the hour: no positive, no query.
    assert rows == {
        (f"u1@{T1}", "c"): (
            vector(C, 0.25, {"als": 1.0}, (1.0, 0.0, 0.0, 0.0, 0.0, 0.0), ITEM_GENRES["c"]),
            8.0,
        ),
        (f"u1@{T1}", "e"): (vector(rt=(1.0, 0.0, 0.0, 0.5, 0.0, 1.0)), 2.0),
        (f"u1@{T1}", "f"): (vector(F_, None, {"popular": 1.0}, (1.0, 0.0, 0.0, 0.0, 0.0, 0.0)), 0.0),
        (f"u1@{T2}", "e"): (vector(rt=(2.0, 0.0, 0.0, 0.5, 0.0, 0.5)), 2.0),
        (f"u1@{T2}", "f"): (vector(F_, None, {"popular": 1.0}, (2.0, 0.0, 0.0, 0.0, 0.0, 0.0)), 0.0),
    }


def test_the_next_item_can_be_graded_above_the_rest_of_the_hour(spark):
    """At 10:00 the user turns to c first (purchase, 8 -> 10), e later keeps its click's 2; at 10:20 e
    is the next item (2 -> 10). Negatives stay 0; the inputs do not move."""
    graded = examples(spark, session_starts=False, next_item=10)
    plain = examples(spark, session_starts=False)
    assert {key: relevance for key, (_, relevance) in graded.items()} == {
        (f"u1@{T1}", "c"): 10.0,
        (f"u1@{T1}", "e"): 2.0,
        (f"u1@{T1}", "f"): 0.0,
        (f"u1@{T2}", "e"): 10.0,
        (f"u1@{T2}", "f"): 0.0,
    }
    assert {key: features for key, (features, _) in graded.items()} == {
        key: features for key, (features, _) in plain.items()
    }


def test_a_session_start_is_asked_too(spark):
    """The moment before 10:00's session (a user opening the app) is asked: its state is the
    previous session's (a and b, yesterday: no category, no neighbour left), its label the new session."""
    start = T1 - 1
    every = examples(spark, session_starts=True)
    asked = {key: value for key, value in every.items() if key[0] == f"u1@{start}"}
    assert asked == {
        (f"u1@{start}", "c"): (
            vector(C, 0.25, {"als": 1.0}, (2.0, 0.0, 0.0, 0.0, 0.0, 0.0), ITEM_GENRES["c"]),
            8.0,
        ),
        (f"u1@{start}", "f"): (vector(F_, None, {"popular": 1.0}, (2.0, 0.0, 0.0, 0.0, 0.0, 0.0)), 0.0),
    }
    assert every.keys() - asked.keys() == examples(spark, session_starts=False).keys()


def test_no_event_after_t_moves_a_feature(spark):
    """Rewrite every event after the moment (other users co-visiting the candidates, the user's own
    later events): every input at t is unchanged."""
    candidates, users, items, similar = tables(spark)
    moments = spark.createDataFrame([("u1", T1)], "user_id string, t_ms long")
    later = [
        interaction("u1", "f", "2024-01-10 10:01", "purchase"),
        *[
            e
            for n in range(3)
            for e in (
                interaction(f"n{n}", "d", "2024-01-10 10:05"),
                interaction(f"n{n}", "f", "2024-01-10 10:06"),
            )
        ],
        interaction("u1", "a", "2024-01-10 12:00", "purchase"),
    ]

    def inputs(rows):
        got = request_time_inputs(
            candidates, users, items, similar, interactions_df(spark, rows), moments, T, P
        ).collect()
        return {(r.item_id, r.t_ms): as_none(r.features) for r in got}

    assert inputs(BEFORE + DAY[:1]) == inputs(BEFORE + DAY[:1] + later) == inputs(BEFORE + DAY)
    assert len(inputs(BEFORE + DAY)) == 3


def test_moments_without_the_speed_layer_hold_only_nightly_candidates_and_no_real_time_input(spark):
    """Asked as serving is when the speed layer holds nothing for the user: e (proposed only by the
    recent items' neighbours) is gone, every real-time input is 0; the recent items stay excluded
    (a product backend passes what the user just consumed). At 10:20 only f is left: no positive."""
    every = examples(spark, session_starts=True, without_speed=10)
    blind = {key: value for key, value in every.items() if key[0].endswith("@without_speed")}
    cold = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    assert blind == {
        (f"u1@{t}@without_speed", item): value
        for t in (T1 - 1, T1)
        for item, value in (
            ("c", (vector(C, 0.25, {"als": 1.0}, cold, ITEM_GENRES["c"]), 8.0)),
            ("f", (vector(F_, None, {"popular": 1.0}, cold), 0.0)),
        )
    }
    assert every.keys() - blind.keys() == examples(spark, session_starts=True).keys()

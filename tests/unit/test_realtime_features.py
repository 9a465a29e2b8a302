"""The meaning of the real-time ranker inputs (feature_store.realtime) on a hand-checked history, and
the serving-side readers of the speed layer's state."""

from feature_store.realtime import (
    REALTIME_INPUTS,
    covisit_pairs,
    from_neighbour_lists,
    from_neighbour_lists_by_recency,
    from_session,
    reference_features,
    reference_seeds,
)
from tests.realtime_data import CATEGORIES, EVENTS, MIN, PARAMS, SIMILAR, START_MS


def test_inputs_are_declared_once_in_order():
    assert REALTIME_INPUTS == (
        "rt_session_events",
        "rt_session_category_share",
        "rt_recent_covisit",
        "rt_recent_similar",
        "rt_recency_covisit",
        "rt_recency_similar",
    )


def test_covisit_pairs_follow_the_speed_layer_rule():
    pairs = [(a, b, (ts - START_MS) / MIN) for a, b, ts in covisit_pairs(EVENTS, PARAMS)]
    # a skip pairs nothing and is nobody's partner; u1's "e" 27 minutes later starts a new session
    assert pairs == [
        ("b", "a", 1.0),
        ("a", "b", 1.0),
        ("b", "a", 1.5),
        ("a", "b", 1.5),
        ("e", "b", 2.5),
        ("b", "e", 2.5),
        ("e", "a", 2.5),
        ("a", "e", 2.5),
        ("d", "b", 3.0),
        ("b", "d", 3.0),
        ("d", "a", 3.0),
        ("a", "d", 3.0),
    ]


def test_an_item_seen_positively_in_the_gap_pairs_once():
    from tests.realtime_data import event

    events = [event("u", "a", 0), event("u", "b", 1), event("u", "a", 2, "click"), event("u", "a", 20)]
    assert [(a, b) for a, b, _ in covisit_pairs(events, PARAMS)] == [("b", "a"), ("a", "b")]


def test_reference_features_in_a_new_session():
    got = reference_features(EVENTS, "u1", START_MS + 31 * MIN, ["a", "b", "c"], CATEGORIES, SIMILAR, PARAMS)
    assert reference_seeds([e for e in EVENTS if e.user_id == "u1"], START_MS + 31 * MIN, PARAMS) == [
        "e",
        "d",
    ]
    # seeds e (newest), d: each pairs with a and b once, so by recency 1 + 0.5; similar by recency:
    # e's list over its best 0.5 (c 1, a 0.5), d's over 0.1 at weight 0.5 (c 0.5)
    assert got == {
        "a": (1.0, 0.0, 2.0, 0.25, 1.5, 0.5),
        "b": (1.0, 0.0, 2.0, 0.0, 1.5, 0.0),
        "c": (1.0, 0.0, 0.0, 0.6, 0.0, 1.5),
    }


def test_reference_features_at_an_event_include_it_and_nothing_later():
    got = reference_features(EVENTS, "u1", START_MS + 3 * MIN, ["a", "e"], CATEGORIES, SIMILAR, PARAMS)
    # session a, b, c, d (c has no category); seeds d, c; d's neighbours a and b (1 each)
    assert got == {"a": (4.0, 2 / 3, 1.0, 0.0, 1.0, 0.0), "e": (4.0, 1 / 3, 0.0, 0.0, 0.0, 0.0)}


def test_serving_readers_of_the_stored_state():
    assert from_session(
        {"type:view": "3", "type:click": "1", "cat:x": "3", "cat:y": "1", "session_id": "u:1", "last_ts": "5"}
    ) == (4.0, {"x": 0.75, "y": 0.25})
    assert from_session({}) == (0.0, {})
    lists = {
        "s1": [("a", 2.0, "covisit"), ("b", 1.0, "covisit"), ("c", 9.0, "covisit")],
        "s2": [("a", 0.5, "covisit")],
    }
    assert from_neighbour_lists(["s1", "s2", "s3"], lists, 2) == {"a": 2.5, "b": 1.0}
    # s1 (newest): a 2/2, b 1/2; s2 (weight 0.5): a 0.5/0.5; s3 has no list
    assert from_neighbour_lists_by_recency(["s1", "s2", "s3"], lists, 2) == {"a": 1.5, "b": 0.5}
    assert from_neighbour_lists_by_recency(["s3", "s2"], lists, 2) == {"a": 0.5}

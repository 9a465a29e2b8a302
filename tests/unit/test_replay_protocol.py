"""The replay protocol's pure parts: targets, rounds (slices), pacing, bus ids, the catch-up condition."""

from __future__ import annotations

import pytest

from lambdarec.replay.protocol import (
    ReplayProtocolError,
    ReplaySpeed,
    Round,
    caught_up,
    first_time_targets,
    plan_rounds,
    positive_types,
    sample_targets,
    session_start_targets,
    stream_ids,
)


def test_positive_types_are_weighted_or_explicit():
    assert positive_types() == frozenset(
        {"view", "click", "play", "add_to_cart", "like", "purchase", "rating"}
    )


def test_targets_are_first_touches_of_positive_types_after_start():
    users = ["a", "a", "b", "a", "a", "b", "b"]
    items = ["x", "y", "x", "y", "z", "x", "w"]
    types = ["view", "view", "view", "click", "skip", "view", "view"]
    # index 0, 1 are warm-up (before start); a's y at 3 repeats; a's z at 4 is a skip; b's x at 5 repeats index 2
    assert first_time_targets(users, items, types, 2, {"a": ["x", "y"], "b": []}, positive_types()) == [2, 6]


def test_targets_exclude_items_consumed_before_the_cutoff():
    assert first_time_targets(
        ["u", "u"], ["old", "new"], ["view", "view"], 0, {"u": {"old"}}, positive_types()
    ) == [1]


def test_sampling_is_seeded_uniform_and_ordered():
    indices = list(range(100))
    sample = sample_targets(indices, 10, seed=7)
    assert sample == sorted(sample) and len(set(sample)) == 10
    assert sample_targets(indices, 10, seed=7) == sample
    assert sample_targets(indices, 10, seed=8) != sample
    assert sample_targets(indices, None, seed=7) == indices
    assert sample_targets([1, 2], 5, seed=0) == [1, 2]
    with pytest.raises(ReplayProtocolError):
        sample_targets(indices, 0, seed=0)


def test_a_slice_is_cut_before_a_target_whose_user_is_already_in_it():
    users = ["a", "b", "a", "c", "b"]
    times = [0, 1, 2, 3, 4]
    # target 2 (a) follows a's event 0 in the slice: cut; target 4 (b) follows b's 1, which is in the
    # previous slice, so it stays in the slice that starts at 2.
    assert plan_rounds(users, times, [1, 2, 4], max_slice_ms=1_000) == [
        Round(0, 0, (1,)),
        Round(0, 2, (2, 4)),
    ]


def test_a_slice_is_cut_when_a_target_is_too_far_after_its_start():
    users = ["a", "b", "c", "d"]
    times = [0, 50, 100, 180]
    assert plan_rounds(users, times, [1, 2, 3], max_slice_ms=100) == [Round(0, 0, (1, 2)), Round(0, 3, (3,))]
    # with slice 0 every target sees everything before it (equal times share a slice)
    assert plan_rounds(["a", "b", "c"], [0, 5, 5], [1, 2], max_slice_ms=0) == [Round(0, 1, (1, 2))]


def test_rounds_publish_each_event_once_in_order_and_never_a_target_before_its_ask():
    users = ["a", "b", "a", "a", "c", "b", "c", "a"]
    times = [0, 10, 20, 30, 40, 50, 60, 70]
    targets = [2, 3, 5, 6, 7]
    rounds = plan_rounds(users, times, targets, max_slice_ms=25)
    published = []
    for rnd in rounds:
        assert rnd.publish_from == len(published)
        published += range(rnd.publish_from, rnd.publish_to)
        for ask in rnd.asks:
            assert ask >= rnd.publish_to
            # every earlier event of the asked user is already published
            assert all(i in published for i in range(ask) if users[i] == users[ask])
            # other users' unpublished events before it are within the slice size
            assert all(times[ask] - times[i] <= 25 for i in range(rnd.publish_to, ask))
    assert sorted(a for r in rounds for a in r.asks) == targets
    assert plan_rounds(users, times, [], max_slice_ms=25) == []
    with pytest.raises(ReplayProtocolError):
        plan_rounds(users, times, targets, max_slice_ms=-1)


def test_speed_parsing_and_pacing():
    assert ReplaySpeed.parse("max") == ReplaySpeed(None)
    assert ReplaySpeed.parse("realtime-x60") == ReplaySpeed(60.0)
    assert str(ReplaySpeed.parse("realtime-x1.5")) == "realtime-x1.5"
    for bad in ("fast", "realtime-x0", "realtime-60", "x60"):
        with pytest.raises(ReplayProtocolError):
            ReplaySpeed.parse(bad)
    assert ReplaySpeed(None).wait_s(0, 100.0, 3_600_000, 100.0) == 0.0
    # one hour of event time at x60 is due one minute after the start
    assert ReplaySpeed(60.0).wait_s(0, 100.0, 3_600_000, 130.0) == pytest.approx(30.0)
    assert ReplaySpeed(60.0).wait_s(0, 100.0, 3_600_000, 200.0) == 0.0


def test_stream_ids_carry_event_time_and_increase():
    assert stream_ids([5, 5, 7, 7, 7, 9]) == ["5-0", "5-1", "7-0", "7-1", "7-2", "9-0"]
    assert stream_ids([7, 8], after="7-3") == ["7-4", "8-0"]
    assert stream_ids([0, 0]) == ["0-1", "0-2"]  # 0-0 is not a valid entry id
    assert stream_ids([3], after="5-0") == ["5-1"]  # never goes backwards


def test_caught_up_compares_stream_ids():
    assert caught_up({"last_entry_id": "20-0"}, "20-0")
    assert caught_up({"last_entry_id": "20-3"}, "20-1")
    assert caught_up({"last_entry_id": "100-0"}, "99-7")
    assert not caught_up({"last_entry_id": "20-0"}, "20-1")
    assert not caught_up({"last_entry_id": "9-9"}, "10-0")
    assert not caught_up({}, "1-0")


def test_a_target_opens_a_session_when_its_users_previous_event_is_more_than_a_gap_before():
    users = ["a", "b", "a", "a", "c", "b"]
    times = [1_000, 1_000, 1_500, 5_000, 6_000, 6_000]
    # a: 1_000 (no earlier event), 1_500 (500 after), 5_000 (3_500 after); b's 6_000 is 5_000 after
    # its 1_000, c's is its first event but c had one at 5_500 before the replay
    assert session_start_targets(users, times, [0, 2, 3, 4, 5], 1_000, {"c": 5_500}) == {0, 3, 5}
    assert session_start_targets(users, times, [2], 1_000, {}) == frozenset()
    assert session_start_targets(users, times, [3], 3_500, {}) == frozenset()  # exactly a gap: same session

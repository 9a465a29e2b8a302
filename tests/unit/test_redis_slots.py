"""The pure parts of running on a Redis Cluster: hash slots and slot tags (feature_store.redis_cluster),
splitting a batch of reads per slot and putting the replies back (serving.cluster), grouping the speed
layer's operations per slot (speed_features.slot_ops, redis_apply.shared_slot_ops), and the readiness
rule of the local cluster (lambdarec.redis_server)."""

from __future__ import annotations

import pytest

from feature_store.redis_cluster import SLOTS, group_by_slot, key_slot, slot_tag
from feature_store.redis_keys import RedisKeys
from lambdarec.redis_server import cluster_ready
from serving.cluster import assemble, is_redirect, node_url, slot_owners, split_by_slot
from spark_jobs.streaming.redis_apply import shared_slot_ops
from spark_jobs.streaming.speed_features import SpeedEvent, SpeedParams, slot_ops

KEYS = RedisKeys()


@pytest.mark.parametrize(
    ("key", "slot"),
    [
        # what `CLUSTER KEYSLOT` answers (the first two are the examples of Redis's documentation)
        ("somekey", 11058),
        ("foo{hash_tag}", 2515),
        ("foo", 12182),
        ("{user1000}.following", 3443),  # the tag alone: user1000
        ("foo{}{bar}", 8363),  # an empty first tag: the whole key
        ("foo{{bar}}zap", 4015),  # the tag is `{bar`
        ("lr:b:v1:{u:u1}:recs", 11658),
        ("lr:events", 15314),
    ],
)
def test_key_slot_is_redis_clusters_slot(key, slot):
    assert key_slot(key) == slot
    assert key_slot(key.encode()) == slot


def test_one_users_keys_share_a_slot_and_a_window_shares_its_buckets_slot():
    user_keys = [
        KEYS.user_recs("v1", "u1"),
        KEYS.user_features("v1", "u1"),
        KEYS.user_category_affinity("v1", "u1"),
        KEYS.user_history("v1", "u1"),
        KEYS.recent_items("u1"),
        KEYS.recent_meta("u1"),
        KEYS.session_counters("u1"),
        KEYS.recent_event_ids("u1"),
    ]
    assert {key_slot(k) for k in user_keys} == {key_slot("u:u1")}
    assert (
        key_slot(KEYS.trending("15m")) == key_slot(KEYS.trending_bucket("15m", 29_000_000)) == key_slot("15m")
    )
    assert key_slot(KEYS.stream_committed("lr:events")) == key_slot("lr:events")


def test_slot_tag_lands_in_its_slot_for_every_slot():
    assert [slot_tag(s) for s in (0, 1, 7, SLOTS - 1)] == ["3560", "22179", "41432", "39296"]
    assert all(key_slot("{" + slot_tag(s) + "}") == s for s in range(SLOTS))
    assert KEYS.applied_slot("speed", 7) == "lr:s:applied:speed:{41432}"
    assert key_slot(KEYS.applied_slot("speed", 7)) == 7
    with pytest.raises(ValueError, match="hash slot"):
        slot_tag(SLOTS)


def test_group_by_slot_keeps_the_order_within_a_slot():
    keys = ["{a}1", "{b}1", "{a}2", "{c}1", "{b}2"]
    assert group_by_slot(keys) == {
        key_slot("a"): ["{a}1", "{a}2"],
        key_slot("b"): ["{b}1", "{b}2"],
        key_slot("c"): ["{c}1"],
    }


# -- serving.cluster ---------------------------------------------------------------------------------
def fake_slot(key) -> int:
    """Slot = the key's first letter (a=0, b=1, ...): readable parts in the expected values."""
    text = key.decode() if isinstance(key, bytes) else key
    return ord(text[0]) - ord("a")


def test_split_by_slot_splits_mget_per_slot_and_keeps_other_commands_whole():
    commands = [
        ("GET", "pointer"),
        ("MGET", "a1", "b1", "a2", "c1", "b2"),
        ("ZREVRANGE", "c-zset", 0, 9, "WITHSCORES"),
        ("HMGET", "b-hash", "f1", "f2"),
    ]
    parts, how = split_by_slot(commands, fake_slot)
    assert parts == [
        (ord("p") - ord("a"), ("GET", "pointer")),
        (0, ("MGET", "a1", "a2")),
        (1, ("MGET", "b1", "b2")),
        (2, ("MGET", "c1")),
        (2, ("ZREVRANGE", "c-zset", 0, 9, "WITHSCORES")),
        (1, ("HMGET", "b-hash", "f1", "f2")),
    ]
    assert how == [0, [(1, 0), (2, 0), (1, 1), (3, 0), (2, 1)], 4, 5]


def test_assemble_puts_every_reply_back_in_the_commands_order():
    how = [0, [(1, 0), (2, 0), (1, 1), (3, 0), (2, 1)], 4, 5]
    part_replies = [b"v1", [b"A1", None], [b"B1", b"B2"], [b"C1"], [b"x", b"1"], [b"f1", None]]
    assert assemble(how, part_replies) == [
        b"v1",
        [b"A1", b"B1", None, b"C1", b"B2"],
        [b"x", b"1"],
        [b"f1", None],
    ]


def test_split_by_slot_refuses_commands_it_cannot_route():
    with pytest.raises(ValueError, match="does not route MSET"):
        split_by_slot([("MSET", "a", "1", "b", "2")], fake_slot)


def test_slot_owners_maps_every_slot_to_its_master():
    reply = [
        [0, 5460, [b"127.0.0.1", 7000, b"id-a", []]],
        [5461, 10922, [b"", 7001, b"id-b"], [b"127.0.0.1", 7101, b"id-b2"]],  # a replica is ignored
        [10923, 16383, [b"10.0.0.3", 7002, b"id-c"]],
    ]
    owners = slot_owners(reply, "127.0.0.9")
    assert len(owners) == SLOTS
    assert (owners[0], owners[5460], owners[5461], owners[10922], owners[10923], owners[16383]) == (
        ("127.0.0.1", 7000),
        ("127.0.0.1", 7000),
        ("127.0.0.9", 7001),  # no host: the one that was asked
        ("127.0.0.9", 7001),
        ("10.0.0.3", 7002),
        ("10.0.0.3", 7002),
    )
    assert slot_owners([[0, 99, [b"h", 1, b"id"]]], "x")[100] is None  # not served


def test_node_url_keeps_credentials_db_and_tls_options():
    assert node_url("redis://127.0.0.1:7000/0", "127.0.0.1", 7002) == "redis://127.0.0.1:7002/0"
    assert (
        node_url("rediss://api:s%40cret@seed:7000/0?ssl_ca_certs=/ca.pem", "10.0.0.3", 7001)
        == "rediss://api:s%40cret@10.0.0.3:7001/0?ssl_ca_certs=/ca.pem"
    )


def test_redirects_are_moved_and_ask_replies():
    from redis.exceptions import ResponseError

    assert is_redirect(ResponseError("MOVED 3999 127.0.0.1:7001"))
    assert is_redirect(ResponseError("ASK 3999 127.0.0.1:7001"))
    assert not is_redirect(ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"))


# -- the speed layer's operations per slot --------------------------------------------------------------
def test_slot_ops_groups_each_users_operations_under_the_slot_of_the_users_keys():
    params = SpeedParams(trend_windows=(), trend_weights={})
    events = [
        SpeedEvent("1-0", "e1", "u2", "a", "view", 1_000, 1_000),
        SpeedEvent("2-0", "e2", "u1", "b", "view", 2_000, 2_000),
        SpeedEvent("3-0", "e3", "u2", "c", "view", 3_000, 3_000),
    ]
    grouped = slot_ops(KEYS, params, events)
    assert list(grouped) == sorted([key_slot("u:u1"), key_slot("u:u2")])
    u2 = grouped[key_slot("u:u2")]
    assert [op[0] for op in u2] == ["d", "e", "d", "e", "u"]
    assert [op[2] for op in u2 if op[0] == "e"] == ["a", "c"]
    assert [op[2] for op in grouped[key_slot("u:u1")] if op[0] == "e"] == ["b"]


def test_shared_slot_ops_groups_by_the_key_of_each_operation_in_order():
    ops = [
        ["c", KEYS.covisit("a"), "b"],
        ["z", KEYS.trending_bucket("15m", 7), "a", 1.0, 960],
        ["c", KEYS.covisit("b"), "a"],
        ["h", KEYS.speed_status, "duplicates", 1],
        ["z", KEYS.trending_bucket("15m", 8), "b", 2.0, 960],
        ["U", KEYS.trending("15m"), 900, KEYS.trending_bucket("15m", 7), KEYS.trending_bucket("15m", 8)],
    ]
    assert shared_slot_ops(ops) == {
        key_slot(KEYS.covisit("a")): [ops[0]],
        key_slot("15m"): [ops[1], ops[4], ops[5]],
        key_slot(KEYS.covisit("b")): [ops[2]],
        key_slot(KEYS.speed_status): [ops[3]],
    }


def test_cluster_ready_needs_state_ok_every_slot_and_every_master():
    ok = {"cluster_state": "ok", "cluster_slots_ok": "16384", "cluster_known_nodes": "3"}
    assert cluster_ready(ok, 3)
    assert not cluster_ready({**ok, "cluster_state": "fail"}, 3)
    assert not cluster_ready({**ok, "cluster_slots_ok": "10923"}, 3)
    assert not cluster_ready({**ok, "cluster_known_nodes": "2"}, 3)
    assert not cluster_ready({}, 3)

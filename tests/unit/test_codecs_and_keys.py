import inspect
import math
import re

import numpy as np
import pytest

from feature_store.codecs import (
    CodecError,
    ScoredItem,
    decode_features,
    decode_ids,
    decode_recs,
    encode_features,
    encode_ids,
    encode_recs,
)
from feature_store.redis_keys import RedisKeys
from feature_store.settings import project_root
from feature_store.tables import ALL_TABLES, BRONZE_EVENTS, QUARANTINE


def test_features_round_trip_with_missing_as_nan():
    blob = encode_features([1.5, None, -2.0])
    assert len(blob) == 1 + 3 * 4
    out = decode_features(blob, expected_length=3)
    assert out[0] == 1.5 and math.isnan(out[1]) and out[2] == -2.0


def test_features_reject_wrong_codec_and_length():
    with pytest.raises(CodecError):
        decode_features(b"\x09" + np.zeros(2, "<f4").tobytes())
    with pytest.raises(CodecError):
        decode_features(encode_features([1.0, 2.0]), expected_length=3)


def test_recs_and_ids_round_trip():
    recs = [("i1", 0.9, "batch"), ("i2", 0.5, "trending")]
    assert decode_recs(encode_recs(recs)) == [
        ScoredItem("i1", 0.9, "batch"),
        ScoredItem("i2", 0.5, "trending"),
    ]
    assert decode_ids(encode_ids(["a", "b"])) == ["a", "b"]
    with pytest.raises(CodecError):
        decode_ids(encode_recs(recs)[:3])


def test_user_keys_share_one_hash_tag():
    keys = RedisKeys("lr")
    user_keys = [
        keys.user_recs("v1", "u7"),
        keys.user_features("v1", "u7"),
        keys.user_history("v1", "u7"),
        keys.recent_items("u7"),
        keys.recent_meta("u7"),
        keys.session_counters("u7"),
    ]
    assert {re.search(r"\{(.*?)\}", k).group(1) for k in user_keys} == {"u:u7"}
    assert keys.user_recs("v1", "u7") == "lr:b:v1:{u:u7}:recs"
    assert keys.recent_items("u7") == "lr:s:{u:u7}:recent"


def test_every_sized_key_has_its_scope_and_kind_and_the_rest_have_none():
    keys = RedisKeys("lr")
    user, item = "u:7", "i:9"  # ids with the separator in them
    assert {
        key: keys.kind_of(key)
        for key in (
            keys.user_recs("v1", user),
            keys.user_pool_inputs("v1", user),
            keys.user_features("v1", user),
            keys.user_category_affinity("v1", user),
            keys.user_genre_profile("v1", user),
            keys.user_history("v1", user),
            keys.item_features("v1", item),
            keys.item_genres("v1", item),
            keys.item_similar("v1", item),
            keys.item_categories("v1"),
            keys.popular("v1"),
            keys.batch_meta("v1"),
            keys.recent_items(user),
            keys.recent_meta(user),
            keys.session_counters(user),
            keys.recent_event_ids(user),
            keys.covisit(item),
            keys.trending("1h"),
            keys.trending_bucket("15m", 42),
            keys.batch_pointer,
            keys.batch_versions,
            keys.speed_status,
            keys.applied_batch("speed"),
            "other:b:v1:popular",
        )
    } == {
        "lr:b:v1:{u:u:7}:recs": ("batch_user", "recs"),
        "lr:b:v1:{u:u:7}:pool": ("batch_user", "pool"),
        "lr:b:v1:{u:u:7}:feat": ("batch_user", "feat"),
        "lr:b:v1:{u:u:7}:aff": ("batch_user", "aff"),
        "lr:b:v1:{u:u:7}:genres": ("batch_user", "genres"),
        "lr:b:v1:{u:u:7}:seen": ("batch_user", "seen"),
        "lr:b:v1:i:i:9:feat": ("batch_item", "feat"),
        "lr:b:v1:i:i:9:genres": ("batch_item", "genres"),
        "lr:b:v1:i:i:9:sim": ("batch_item", "sim"),
        "lr:b:v1:categories": ("batch_global", "categories"),
        "lr:b:v1:popular": ("batch_global", "popular"),
        "lr:b:v1:meta": ("batch_global", "meta"),
        "lr:s:{u:u:7}:recent": ("speed_user", "recent"),
        "lr:s:{u:u:7}:recent_meta": ("speed_user", "recent_meta"),
        "lr:s:{u:u:7}:session": ("speed_user", "session"),
        "lr:s:{u:u:7}:event_ids": ("speed_user", "event_ids"),
        "lr:s:covisit:i:9": ("speed_item", "covisit"),
        "lr:s:trending:{1h}": ("speed_global", "trending"),
        "lr:s:trending:{15m}:42": ("speed_global", "trending"),
        "lr:batch:current": None,
        "lr:batch:versions": None,
        "lr:s:status": None,
        "lr:s:applied:speed": None,
        "other:b:v1:popular": None,
    }


def test_every_key_is_documented():
    doc = (project_root() / "docs" / "redis-key-layout.md").read_text()
    keys = RedisKeys("<p>")
    for name in dir(RedisKeys):
        if name.startswith("_") or name in ("prefix", "kind_of"):
            continue
        attr = getattr(keys, name)
        # "\0" marks where a name's variable part starts; a slot number is a number
        args = [] if isinstance(attr, str) else inspect.signature(attr).parameters.values()
        sample = (
            attr if isinstance(attr, str) else attr(*[0 if a.annotation == "int" else "\0" for a in args])
        )
        fixed_part = sample.split("\0")[0]
        assert f"`{fixed_part}" in doc, f"{name} ({sample!r}) is not in docs/redis-key-layout.md"


def test_table_layout_columns():
    assert BRONZE_EVENTS.columns == (
        "event_id",
        "user_id",
        "item_id",
        "event_type",
        "ts",
        "value",
        "context",
        "source",
        "ingest_time",
        "event_date",
    )
    assert QUARANTINE.partition_by == ("ingest_date",)
    assert len({t.name for t in ALL_TABLES}) == len(ALL_TABLES)

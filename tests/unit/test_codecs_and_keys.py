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


def test_every_key_is_documented():
    doc = (project_root() / "docs" / "redis-key-layout.md").read_text()
    keys = RedisKeys("<p>")
    for name in dir(RedisKeys):
        if name.startswith("_") or name == "prefix":
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

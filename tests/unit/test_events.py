import json
from datetime import UTC, datetime, timedelta

import pytest

from feature_store.event_bus import encode_event
from feature_store.events import (
    CONTEXT_MAX_KEYS,
    ID_MAX_LENGTH,
    MAX_EVENT_WIRE_BYTES,
    Event,
    EventType,
    EventTypes,
    QuarantineReason,
    event_spark_ddl,
    first_copies,
    parse_event_time,
    validate_event_dict,
)

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
TOLERANCE = timedelta(minutes=10)


def good(**overrides):
    row = {
        "event_id": "e1",
        "user_id": "u1",
        "item_id": "i1",
        "event_type": "view",
        "ts": "2026-11-01T10:00:00Z",
    }
    row.update(overrides)
    return row


def check(raw, types=None):
    return validate_event_dict(raw, now=NOW, future_tolerance=TOLERANCE, event_types=types)


def test_iso_and_epoch_millis_parse_to_the_same_utc_instant():
    assert parse_event_time("2026-11-01T10:00:00Z") == datetime(2026, 11, 1, 10, tzinfo=UTC)
    assert parse_event_time("2026-11-01T11:00:00+01:00") == datetime(2026, 11, 1, 10, tzinfo=UTC)
    assert parse_event_time("2026-11-01 10:00:00") == datetime(2026, 11, 1, 10, tzinfo=UTC)
    assert parse_event_time(1_793_527_200_000) == datetime(2026, 11, 1, 10, tzinfo=UTC)
    assert parse_event_time("1793527200000") == datetime(2026, 11, 1, 10, tzinfo=UTC)


@pytest.mark.parametrize("raw", ["yesterday", "2026-13-45T00:00:00", "", None, True])
def test_unparseable_times_are_errors(raw):
    with pytest.raises(ValueError):
        parse_event_time(raw)


def test_good_event_validates():
    event, reason, detail = check(good(value=3, context={"device": "ios", "position": 2}))
    assert reason is None and detail == ""
    assert event == Event(
        event_id="e1",
        user_id="u1",
        item_id="i1",
        event_type="view",
        ts=datetime(2026, 11, 1, 10, tzinfo=UTC),
        value=3.0,
        context={"device": "ios", "position": "2"},
    )
    assert event.to_json_dict()["ts"] == 1_793_527_200_000


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("not an object", QuarantineReason.MALFORMED),
        (good(event_id=None), QuarantineReason.MISSING_EVENT_ID),
        (good(event_id=""), QuarantineReason.MISSING_EVENT_ID),
        (good(user_id=None), QuarantineReason.MISSING_USER_ID),
        (good(item_id=""), QuarantineReason.MISSING_ITEM_ID),
        (good(item_id="x" * 129), QuarantineReason.INVALID_ID),
        (good(user_id="bad id with spaces"), QuarantineReason.INVALID_ID),
        (good(event_type="teleport"), QuarantineReason.UNKNOWN_EVENT_TYPE),
        (good(ts="soon"), QuarantineReason.BAD_TIMESTAMP),
        (good(ts="2026-11-01T12:11:00Z"), QuarantineReason.FUTURE_TIMESTAMP),
        (good(value="a lot"), QuarantineReason.BAD_VALUE),
        (good(event_type="rating"), QuarantineReason.BAD_VALUE),
        (good(event_id=None, event_type="teleport"), QuarantineReason.MISSING_EVENT_ID),
    ],
)
def test_each_bad_row_gets_its_reason(raw, reason):
    event, got, detail = check(raw)
    assert (event, got) == (None, reason)
    assert detail


def test_context_is_bounded_by_key_count_and_bytes():
    at_keys = {f"k{n}": "v" for n in range(32)}
    at_bytes = {"page": "p" * (4096 - 4)}  # 4 + 4092 UTF-8 bytes
    wide_bytes = {"page": "é" * 2046}  # 4 + 4092 bytes: counted in UTF-8, not characters
    assert check(good(context=at_keys))[1] is None
    assert check(good(context=at_bytes))[1] is None
    assert check(good(context=wide_bytes))[1] is None

    too_many = check(good(context={**at_keys, "k32": "v"}))
    too_big = check(good(context={"page": "p" * 4093}))
    too_wide = check(good(context={"page": "é" * 2047}))
    assert too_many == (None, QuarantineReason("context_too_large"), "context has 33 keys; at most 32")
    assert too_big == (
        None,
        QuarantineReason("context_too_large"),
        "context holds 4097 bytes of keys and values; at most 4096",
    )
    assert too_wide == (
        None,
        QuarantineReason("context_too_large"),
        "context holds 4098 bytes of keys and values; at most 4096",
    )
    # An earlier rule still names the reason of a row with several problems.
    assert (
        check(good(event_type="teleport", context={"page": "p" * 5000}))[1]
        == QuarantineReason.UNKNOWN_EVENT_TYPE
    )


def test_the_largest_valid_event_fits_a_bus_entry_with_room_to_spare():
    """Every field at its contract limit, with characters JSON escapes as six bytes each: the bus
    limit for one entry (MAX_EVENT_WIRE_BYTES) is far above what a valid event can need."""
    ident = "i" * ID_MAX_LENGTH
    # 32 keys of 3 bytes and values of 125: 4,096 bytes of control characters ("\u0001" in JSON)
    context = {f"{n:02d}\x01": "\x01" * 125 for n in range(CONTEXT_MAX_KEYS)}
    longest_type = max(EventTypes().names, key=len)
    event, reason, _ = check(
        good(event_id=ident, user_id=ident, item_id=ident, event_type=longest_type, context=context)
    )
    assert reason is None
    event = event.model_copy(update={"value": -1.7976931348623157e308})
    assert len(encode_event(event)) == 24_964
    assert len(json.dumps(event.to_json_dict())) == 25_040  # a producer that escapes like Python's json
    assert MAX_EVENT_WIRE_BYTES == 65_536


def test_event_types_are_extensible():
    types = EventTypes().with_types(EventType("share", 6.0))
    assert check(good(event_type="share"), types)[1] is None
    assert check(good(event_type="share"))[1] == QuarantineReason.UNKNOWN_EVENT_TYPE
    assert types.weights()["share"] == 6.0
    assert EventTypes().explicit_names() == ("rating",)


def test_default_weights_follow_the_funnel():
    w = EventTypes().weights()
    assert w["view"] < w["click"] < w["add_to_cart"] < w["purchase"]
    assert w["skip"] < 0


def test_spark_ddl_is_derived_from_the_model():
    assert event_spark_ddl() == (
        "event_id STRING, user_id STRING, item_id STRING, event_type STRING, ts TIMESTAMP, "
        "value DOUBLE, context MAP<STRING, STRING>"
    )
    assert "ts STRING" in event_spark_ddl(raw_ts=True)


def test_the_first_copy_of_an_event_id_to_arrive_wins():
    arrivals = [("e1", "first"), ("e2", "only"), ("e1", "re-sent"), ("e3", "first"), ("e3", "re-sent")]
    assert first_copies(arrivals, lambda a: a[0]) == [("e1", "first"), ("e2", "only"), ("e3", "first")]
    assert first_copies([], lambda a: a[0]) == []

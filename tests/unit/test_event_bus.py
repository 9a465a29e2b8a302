import orjson
import pytest

from feature_store.event_bus import (
    EVENT_FIELD,
    BadEntryId,
    EntryId,
    committed_key,
    decode_payload,
    encode_event,
    encode_payload,
    entry_fields,
    entry_payload,
    entry_time_ms,
    max_entry_id,
    parse_entry_id,
)
from feature_store.events import Event


def _event(**over):
    base = dict(
        event_id="e1",
        user_id="u1",
        item_id="i1",
        event_type="view",
        ts=1_700_000_000_123,
        context={"category": "books"},
    )
    return Event.model_validate({**base, **over})


def test_event_encodes_to_its_wire_form():
    assert orjson.loads(encode_event(_event())) == {
        "event_id": "e1",
        "user_id": "u1",
        "item_id": "i1",
        "event_type": "view",
        "ts": 1_700_000_000_123,
        "value": None,
        "context": {"category": "books"},
    }
    assert entry_fields(_event()) == {EVENT_FIELD: encode_event(_event())}


def test_round_trip_through_entry_fields_with_bytes_or_str_keys():
    fields = entry_fields(_event(value=4.5, event_type="rating"))
    as_redis_returns = {k.encode(): v for k, v in fields.items()}
    decoded = decode_payload(entry_payload(as_redis_returns))
    assert Event.model_validate(decoded) == _event(value=4.5, event_type="rating")
    assert entry_payload({"event": '{"a": 1}'}) == '{"a": 1}'
    assert entry_payload({b"other": b"x"}) is None


def test_raw_payloads_are_sent_verbatim():
    assert encode_payload('{"broken"') == b'{"broken"'
    assert encode_payload(b"xyz") == b"xyz"
    assert orjson.loads(encode_payload({"event_id": "e9"})) == {"event_id": "e9"}
    with pytest.raises(ValueError, match="not JSON"):
        decode_payload(b'{"broken"')


def test_entry_ids_parse_compare_and_give_bus_time():
    assert parse_entry_id(b"1700000000000-7") == EntryId(1_700_000_000_000, 7)
    assert parse_entry_id("5") == EntryId(5, 0)
    assert str(EntryId(12, 3)) == "12-3"
    assert entry_time_ms("1700000000123-0") == 1_700_000_000_123
    assert max_entry_id(["9-1", "10-0", b"9-12"]) == "10-0"
    assert max_entry_id([]) is None
    with pytest.raises(BadEntryId):
        parse_entry_id("abc-1")


def test_committed_key_follows_the_stream_name_and_shares_its_hash_slot():
    from feature_store.redis_cluster import key_slot

    assert committed_key("lr:events") == "lr:events:{lr:events}:committed"
    assert key_slot(committed_key("lr:events")) == key_slot("lr:events") == 15314
    # a stream named with a hash tag keeps it: the first {...} of the committed key is the stream's
    assert committed_key("lr:{bus}") == "lr:{bus}:{lr:{bus}}:committed"
    assert key_slot(committed_key("lr:{bus}")) == key_slot("bus")

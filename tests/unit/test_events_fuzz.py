"""Property-based fuzzing of the event contract: any decoded JSON is either a good event or one
quarantine reason with a detail, never an exception (seeded: the same examples every run)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feature_store.events import Event, QuarantineReason, validate_event_dict

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
FIELDS = ("event_id", "user_id", "item_id", "event_type", "ts", "value", "context")
GOOD = {
    "event_id": "e1",
    "user_id": "u1",
    "item_id": "i1",
    "event_type": "view",
    "ts": "2026-11-01T10:00:00Z",
}
# An event with some fields replaced by anything JSON can hold (so most examples get past the first rule).
EVENTS = st.builds(
    lambda changes, dropped: {k: v for k, v in {**GOOD, **changes}.items() if k not in dropped},
    st.dictionaries(
        st.sampled_from(FIELDS), JSON | st.text(max_size=200) | st.integers(-(10**18), 10**18), max_size=3
    ),
    st.sets(st.sampled_from(FIELDS), max_size=2),
)


@settings(max_examples=300, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(EVENTS, JSON))
def test_any_input_is_an_event_or_one_reason_with_a_detail(raw):
    event, reason, detail = validate_event_dict(raw, now=NOW, future_tolerance=timedelta(minutes=10))
    if event is None:
        assert isinstance(reason, QuarantineReason) and detail
    else:
        assert (reason, detail) == (None, "")
        assert isinstance(event, Event) and event.ts <= NOW + timedelta(minutes=10)
        assert Event.model_validate(event.to_json_dict()) == event  # the wire form reads back the same

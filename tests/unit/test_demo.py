"""Pure parts of `lambdarec demo`: the synthetic world's dates, the demo users' new interest and the
events that express it."""

from __future__ import annotations

from datetime import date

import pytest

from feature_store.events import Event
from feature_store.settings import Settings
from lambdarec.demo import DemoError, DemoWorld, interest_events, new_interest, synthetic_config


def test_synthetic_world_ends_yesterday_so_todays_nightly_covers_it() -> None:
    config = synthetic_config(date(2026, 11, 29), events=8000, days=14)
    assert (config.start, config.days) == (date(2026, 11, 15), 14)
    assert (config.events, config.users, config.items) == (8000, 160, 80)
    config.validate()


def _world() -> DemoWorld:
    return DemoWorld(
        users=["u1", "u2"],
        popular_by_category={
            "books": ["b1", "b2", "b3", "b4", "b5"],
            "games": ["g1", "g2"],
            "toys": ["t1", "t2", "t3"],
        },
        event_type="click",
    )


def test_new_interest_is_a_category_the_recommendations_do_not_show() -> None:
    before = {"items": [{"item_id": "b9", "category": "books"}, {"item_id": "t9", "category": "toys"}]}
    assert new_interest(_world(), before) == ("games", ["g1", "g2"])
    # Nothing shown yet: the category with the most popular items, first four of them.
    assert new_interest(_world(), {"items": []}) == ("books", ["b1", "b2", "b3", "b4"])


def test_new_interest_needs_categories() -> None:
    with pytest.raises(DemoError, match="no categories"):
        new_interest(DemoWorld(["u1"], {}, "click"), {"items": []})


def test_interest_events_follow_the_event_contract_in_time_order() -> None:
    events = interest_events("u1", ["g1", "g2"], "rating", now_ms=1_700_000_010_000)
    assert [(e["user_id"], e["item_id"], e["event_type"], e["ts"], e["value"]) for e in events] == [
        ("u1", "g1", "rating", 1_700_000_008_000, 5.0),
        ("u1", "g2", "rating", 1_700_000_009_000, 5.0),
    ]
    assert len({e["event_id"] for e in events}) == 2
    assert [Event.model_validate(e).item_id for e in events] == ["g1", "g2"]
    clicks = interest_events("u1", ["g1"], "click", now_ms=1_700_000_010_000)
    assert "value" not in clicks[0]


def test_current_holdout_is_the_newest_run_date() -> None:
    from lambdarec.promotion import current_run_date

    versions = [{"tags": {"run_date": "2026-03-14"}}, {"tags": {}}, {"tags": {"run_date": "2026-03-15"}}]
    assert current_run_date(versions) == date(2026, 3, 15)


def test_a_version_that_failed_the_gate_moves_only_when_forced_with_a_reason() -> None:
    from lambdarec.promotion import PromotionRejected, current_run_date, promote_version

    failed = {
        "version": "3",
        "passed": False,
        "reason": "ndcg@10 0.1000 does not beat champion 0.2000 by 0.002",
    }
    settings = Settings()
    with pytest.raises(PromotionRejected, match="version 3 stays where it is: ndcg@10 0.1000 does not beat"):
        promote_version(settings, failed)
    with pytest.raises(PromotionRejected, match="forced promotion needs a reason"):
        promote_version(settings, failed, force=True, reason="  ")
    with pytest.raises(PromotionRejected, match="run lambdarec_nightly first"):
        current_run_date([{"tags": {}}])

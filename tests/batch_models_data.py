"""Tiny inline inputs for the batch-model tests, in the exact shape of the Delta contract
(feature_store.tables): silver interactions, gold user/item features."""

from __future__ import annotations

from datetime import date, datetime, timezone

from feature_store.events import EventTypes
from feature_store.tables import INTERACTIONS, ITEM_FEATURES, USER_FEATURES

WEIGHTS = EventTypes().weights()


def ts(text: str) -> datetime:
    """'2024-01-02 10:00' -> naive UTC datetime (Spark session time zone is UTC)."""
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).replace(tzinfo=None)


def interaction(user: str, item: str, when: str, event_type: str = "view", session: str | None = None, n: int = 0):
    """One silver `interactions` row; weight and label from the event contract."""
    moment = ts(when)
    weight = WEIGHTS[event_type]
    return (
        f"{user}-{item}-{when}-{event_type}-{n}",
        user,
        item,
        event_type,
        moment,
        None,
        None,
        weight,
        None,
        False,
        1 if weight > 0 else 0,
        session or f"{user}:s",
        moment.date(),
    )


def interactions_df(spark, rows):
    return spark.createDataFrame(rows, INTERACTIONS.ddl)


def user_features_df(spark, rows):
    """rows: (as_of 'YYYY-MM-DD', user_id, {feature: value}, {category: affinity})."""
    return spark.createDataFrame([(date.fromisoformat(a), u, f, c) for a, u, f, c in rows], USER_FEATURES.ddl)


def item_features_df(spark, rows):
    """rows: (as_of 'YYYY-MM-DD', item_id, category, {feature: value})."""
    return spark.createDataFrame([(date.fromisoformat(a), i, c, f) for a, i, c, f in rows], ITEM_FEATURES.ddl)

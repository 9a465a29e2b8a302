"""Feature definitions: declarations only (name, entity, meaning), no computation.

Gold feature tables (spark_jobs.features) compute exactly these names into their `features` map,
as of 00:00 UTC of a date from events strictly before it. Batch publish copies them to Redis and
serving reads them back by the same names, so the ranker sees the same features online and offline.
"""

from __future__ import annotations

from dataclasses import dataclass

from feature_store.events import EventTypes

DEFAULT_WINDOWS_DAYS: tuple[int, ...] = (1, 7, 30)


@dataclass(frozen=True)
class Feature:
    name: str
    entity: str  # "user" | "item"
    description: str


def user_features(
    event_types: EventTypes | None = None, windows: tuple[int, ...] = DEFAULT_WINDOWS_DAYS
) -> tuple[Feature, ...]:
    types = event_types or EventTypes()
    counts = tuple(
        Feature(f"user_{t.name}_{w}d", "user", f"{t.name} events in the {w} days before as_of")
        for t in types
        for w in windows
    )
    totals = tuple(
        Feature(f"user_events_{w}d", "user", f"all events in the {w} days before as_of") for w in windows
    )
    return (
        counts
        + totals
        + (
            Feature("user_lifetime_events", "user", "all events before as_of"),
            Feature("user_distinct_items_30d", "user", "distinct items touched in the 30 days before as_of"),
            Feature("user_recency_s", "user", "seconds from the user's last event to as_of (null if none)"),
            Feature("user_avg_rating", "user", "mean explicit rating before as_of (null if none)"),
            Feature("user_rating_count", "user", "explicit ratings before as_of"),
        )
    )


def item_features(
    event_types: EventTypes | None = None, windows: tuple[int, ...] = DEFAULT_WINDOWS_DAYS
) -> tuple[Feature, ...]:
    del event_types  # item features use fixed funnel types; the parameter keeps both signatures alike
    per_window = tuple(
        f
        for w in windows
        for f in (
            Feature(f"item_events_{w}d", "item", f"events on the item in the {w} days before as_of"),
            Feature(f"item_users_{w}d", "item", f"distinct users in the {w} days before as_of"),
        )
    )
    return per_window + (
        Feature("item_weight_30d", "item", "sum of implicit weights in the 30 days before as_of"),
        Feature("item_ctr_30d", "item", "clicks / views over 30 days (0 when no views)"),
        Feature("item_cart_rate_30d", "item", "add_to_cart / views over 30 days (0 when no views)"),
        Feature("item_purchase_rate_30d", "item", "purchases / views over 30 days (0 when no views)"),
        Feature(
            "item_trend_7d",
            "item",
            "events in 7 days / (events in 30 days * 7 / 30): >1 rising (0 when none)",
        ),
        Feature("item_age_days", "item", "days from the item's first event to as_of"),
        Feature("item_lifetime_events", "item", "all events before as_of"),
        Feature("item_avg_rating", "item", "mean explicit rating before as_of (null if none)"),
        Feature("item_rating_count", "item", "explicit ratings before as_of"),
    )


def user_feature_names(event_types: EventTypes | None = None) -> tuple[str, ...]:
    return tuple(f.name for f in user_features(event_types))


def item_feature_names(event_types: EventTypes | None = None) -> tuple[str, ...]:
    return tuple(f.name for f in item_features(event_types))

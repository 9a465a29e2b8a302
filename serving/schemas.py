"""The API's wire models (requests and responses). Every route takes and returns one of these, so the
OpenAPI docs at /docs describe exactly what travels."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

Source = Literal["batch", "covisit", "similar", "trending", "popular"]


class RecommendedItem(BaseModel):
    item_id: str
    score: float = Field(
        description="Final score: ranker blended with the candidate's prior (higher is better)."
    )
    source: Source = Field(
        description="What proposed the item: `batch` (nightly recommendations), `covisit` (items seen together "
        "with the user's recent items, speed layer), `similar` (batch similar-items of a recent item), "
        "`trending` (speed-layer sliding window), `popular` (batch popularity, the fallback)."
    )
    sources: list[Source] = Field(description="Every source that proposed the item.")
    because: str | None = Field(
        None, description="The recent item that led to a `covisit`/`similar` candidate."
    )
    category: str | None = None


class Recommendations(BaseModel):
    user_id: str
    items: list[RecommendedItem]
    batch_version: str | None = Field(
        description="Batch version the answer was built from (null: none published)."
    )
    model_version: str | None = Field(
        description="Registered version of the ranker used (null: candidates ordered by their scores)."
    )
    ranked_by: Literal["model", "priors"] = Field(
        "model",
        description="`model`: the champion ranker's order; `priors`: the hand priors of the candidate sources "
        "(no champion, the ranker failed, or the local fallback).",
    )
    degraded: bool = Field(
        description="True when the online store could not be read in time (items come from the local "
        "fallback) or the champion ranker failed (items ordered by the priors)."
    )
    candidates: int = Field(description="How many candidates were ranked.")


class SimilarItems(BaseModel):
    item_id: str
    items: list[RecommendedItem]
    batch_version: str | None
    degraded: bool


class EventBatch(BaseModel):
    """A batch of events. Batch semantics: all-or-nothing. If any event is invalid none is published,
    and the 422 lists every failing event by its index."""

    # list[Any], not list[dict]: a non-object entry must reach the per-event validation (and be listed
    # as `malformed` at its index) instead of making the whole body unreadable.
    events: list[Any] = Field(description="Events in the contract of feature_store.events.Event.")


class EventError(BaseModel):
    index: int = Field(description="Position of the event in the request (0 for a single event).")
    event_id: str | None
    reason: str = Field(description="Quarantine reason (feature_store.events.QuarantineReason).")
    detail: str


class EventsAccepted(BaseModel):
    accepted: int
    entry_ids: list[str] = Field(description="Event-bus entry ids, in request order.")


class EventsRejected(BaseModel):
    detail: str
    accepted: Literal[0] = 0
    errors: list[EventError]


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class ModelStatus(BaseModel):
    name: str
    version: str
    backend: str
    loaded_at: float


class Readiness(BaseModel):
    ready: bool
    redis: bool
    model: ModelStatus | None = Field(
        description="The champion in use (null: none registered yet, or not loaded)."
    )
    model_error: str | None = None
    batch_version: str | None
    speed_lag_ms_p50: float | None = None
    speed_lag_ms_p99: float | None = None
    speed_updated_age_s: float | None = Field(
        None, description="Seconds since the streaming job last wrote its status."
    )

"""Property-based fuzzing of the HTTP API from its own OpenAPI schema, against a real redis-server:
for every operation, parameters drawn from the declared schema (valid values, and anything else a
client could send) and arbitrary JSON bodies. No input may produce a server error, and every rejection
is a 4xx with a `detail` (a 503 "retry" is not about the input: a Redis slower than the budget on a
busy machine, so it is allowed, with its detail). Seeded (derandomized) and bounded, so it costs seconds and the same every run."""

from __future__ import annotations

import time
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feature_store.settings import Settings
from serving.app import create_app

pytestmark = pytest.mark.integration

NOW_MS = int(time.time() * 1000)
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=20,
)
EVENT = st.fixed_dictionaries(
    {
        "event_id": st.from_regex(r"[a-z0-9]{1,12}", fullmatch=True),
        "user_id": st.sampled_from(["u1", "u2"]),
        "item_id": st.just("i1"),
        "event_type": st.sampled_from(["view", "rating", "teleport"]),
        "ts": st.just(NOW_MS) | JSON,
    },
    optional={"value": JSON, "context": JSON},
)
BODIES = st.one_of(
    JSON,
    EVENT,
    st.lists(EVENT | JSON, max_size=5),
    st.builds(lambda events: {"events": events}, st.lists(EVENT, max_size=5)),
)


def value_for(schema: dict) -> st.SearchStrategy:
    """A value for a parameter: one its schema accepts, or anything a client might send instead."""
    any_text = st.text(max_size=40)
    if schema.get("type") == "integer":
        valid = st.integers(schema.get("minimum", -(10**6)), schema.get("maximum", 10**6))
        return st.one_of(valid, st.integers().map(str), any_text)
    if "pattern" in schema:
        valid = st.from_regex(schema["pattern"], fullmatch=True).filter(
            lambda v: len(v) <= schema.get("maxLength", 10**6)
        )
        return st.one_of(valid, any_text)
    if "anyOf" in schema:
        return st.one_of(*[value_for(option) for option in schema["anyOf"] if option.get("type") != "null"])
    if schema.get("type") == "array":
        return st.lists(value_for(schema.get("items", {})), max_size=4)
    return any_text


def operations(spec: dict) -> list[tuple[str, str, dict]]:
    return [(method.upper(), path, op) for path, item in spec["paths"].items() for method, op in item.items()]


@st.composite
def requests(draw, spec: dict):
    method, path, op = draw(st.sampled_from(operations(spec)))
    query: list[tuple[str, str]] = []
    for param in op.get("parameters", []):
        if param["in"] == "header":
            continue
        if param["in"] == "path":
            value = draw(value_for(param["schema"]))
            path = path.replace("{" + param["name"] + "}", quote(str(value), safe="") or "x")
        elif draw(st.booleans()):
            value = draw(value_for(param["schema"]))
            query.extend((param["name"], str(v)) for v in (value if isinstance(value, list) else [value]))
    body = draw(BODIES) if "requestBody" in op else None
    return method, path, query, body


@pytest.fixture(scope="module")
def api(redis_server, empty_registry):
    from fastapi.testclient import TestClient

    settings_ = Settings(
        data_dir=empty_registry,
        redis_url=redis_server.url,
        model_poll_interval_s=3600,
        serving_redis_budget_s=2.0,
        mlflow_tracking_uri=f"sqlite:///{empty_registry / 'mlflow.db'}",
        mlflow_artifact_root=str(empty_registry / "mlartifacts"),
    )
    with TestClient(
        create_app(settings_), raise_server_exceptions=True
    ) as client:  # a crash fails the example
        yield client


def test_no_input_makes_the_api_fail_and_every_rejection_says_why(api):
    spec = api.get("/openapi.json").json()
    seen: set[int] = set()

    @settings(max_examples=150, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
    @given(requests(spec))
    def check(request):
        method, path, query, body = request
        response = (
            api.request(method, path, params=query, json=body)
            if body is not None
            else api.request(method, path, params=query)
        )
        seen.add(response.status_code)
        overloaded = response.status_code == 503 and "retry" in response.json()["detail"]
        assert response.status_code < 500 or overloaded, (method, path, query, body, response.text)
        if response.status_code >= 400:
            assert response.json()["detail"], (method, path, response.text)

    check()
    assert {200, 202, 422} <= seen  # the fuzzing reached the happy paths and the validation, not just 404s

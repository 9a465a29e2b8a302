"""A direct ASGI path for GET /v1/recommendations/{user_id} requests whose every parameter is valid.

Who uses it: `serving.app.create_app` installs `FastRecommendations` as a middleware when
`ServingSwitches.fast_route` is on (the default). FastAPI's per-request parameter machinery
(dependency solving, re-inspecting each parameter's annotation, validation models) costs about as much
CPU as the recommendation itself at this size, so requests that are plainly valid are answered here:
the same checks (id length and characters, k in 1..max_k, at most serving_max_exclude exclusions, API
key), the same `Recommender.recommend` call, the same response bytes and latency metric.

Anything this path is not sure about goes to the FastAPI route unchanged: a parameter that is absent
is defaulted, but one that is malformed, repeated where a single value is expected, an API key that
is missing, wrong, without the `read` scope or over its rate, is left to the route, so every error
(422 with FastAPI's detail, 401, 403, 429) is still produced there, by the declared models that also document the endpoint at /docs.
"""

from __future__ import annotations

import re
import time
from urllib.parse import parse_qsl

from feature_store.events import ID_MAX_LENGTH
from serving.auth import API_KEY_HEADER, READ

PREFIX = "/v1/recommendations/"
# The characters of feature_store.events.ID_PATTERN, matched in full: stricter than or equal to the
# route's validation, so whatever passes here passes there.
_ID = re.compile(r"[A-Za-z0-9_\-:.@/]+")
_K = re.compile(r"[0-9]{1,6}")
_HEADER = API_KEY_HEADER.lower().encode("latin-1")
_SINGLE = ("k", "category", "item_id", "page")


def valid_id(value: str) -> bool:
    return len(value) <= ID_MAX_LENGTH and _ID.fullmatch(value) is not None


def parse_request(path: str, query_string: bytes, max_k: int, max_exclude: int) -> dict | None:
    """The recommend() arguments of a request that certainly passes the route's validation; None
    when the route must decide (an error to report, or anything unusual)."""
    user_id = path[len(PREFIX) :]
    if not valid_id(user_id):
        return None
    single: dict[str, str] = {}
    exclude: list[str] = []
    if query_string:
        # As Starlette reads a query string (latin-1, blank values kept).
        for name, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
            if name == "exclude":
                if not valid_id(value):
                    return None
                exclude.append(value)
            elif name in _SINGLE:
                if (
                    name in single
                    or (name == "k" and not _K.fullmatch(value))
                    or (name != "k" and not valid_id(value))
                ):
                    return None
                single[name] = value
    k = int(single.get("k", 10))
    if not 1 <= k <= max_k or len(exclude) > max_exclude:
        return None
    return {
        "user_id": user_id,
        "k": k,
        "category": single.get("category"),
        "item_id": single.get("item_id"),
        "exclude": frozenset(exclude),
    }


def api_key(headers: list[tuple[bytes, bytes]]) -> tuple[bool, str | None]:
    """(unique, value) of the API key header as Starlette would read it."""
    found = [value for name, value in headers if name == _HEADER]
    if len(found) > 1:
        return False, None
    return True, found[0].decode("latin-1") if found else None


class FastRecommendations:
    """ASGI middleware answering plainly valid recommendation requests (see the module docstring)."""

    def __init__(self, app, max_k: int, max_exclude: int) -> None:
        self.app = app
        self.max_k = max_k
        self.max_exclude = max_exclude

    async def __call__(self, scope, receive, send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "GET"
            or scope.get("root_path")
            or not scope["path"].startswith(PREFIX)
        ):
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        request = parse_request(scope["path"], scope["query_string"], self.max_k, self.max_exclude)
        if request is None:
            return await self.app(scope, receive, send)
        services = scope["app"].state.services
        unique, key = api_key(scope["headers"])
        identity = services.guard.identify(key) if unique else None
        if identity is None or READ not in identity.scopes or services.limiter.wait_s(identity.id):
            return await self.app(scope, receive, send)  # the route answers 401/403/429
        user_id = request.pop("user_id")
        answer = await services.recommender.recommend(user_id, request.pop("k"), **request)
        response = services.render(answer, 200)
        services.metrics.latency.labels("recommendations").observe(time.perf_counter() - started)
        await response(scope, receive, send)

"""Limits at the API's edge: request body size, requests in flight, and requests per API key.

Who uses it: `serving.app.create_app` installs `EdgeLimits` as the outermost ASGI middleware, so its
answers come before authentication, routing and JSON parsing ever see the request; the `/v1`
authentication (`serving.app.require_api_key`, `serving.fast_route`) asks a `RateLimiter` per key.

- Body size (`serving_max_body_bytes`): a Content-Length over the limit is a 413 at once. A POST/PUT/
  PATCH body is read up to the limit before the app runs (the route reads all of it anyway), so a
  chunked body without Content-Length, or one longer than it said, is a 413 too and never reaches
  the JSON parser.
- In flight (`serving_max_in_flight`): past that many requests being served, a request is a 503 with
  `Retry-After`: a process that queues without bound answers everyone late, and its memory grows with
  the queue. The probes and `/metrics` are exempt, so an overloaded replica is not killed for it.
- Rate (`serving_rate_limit_per_s`, `serving_rate_limit_burst`): a token bucket per API key; an empty
  bucket is a 429 with `Retry-After`.

Every refusal is counted in `lambdarec_refused_requests_total{reason}`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import orjson

EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_CONTENT_LENGTH = b"content-length"


def declared_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """The Content-Length of a request (None: not sent); an unreadable one counts as unbounded."""
    for name, value in headers:
        if name == _CONTENT_LENGTH:
            try:
                return int(value)
            except ValueError:
                return math.inf  # type: ignore[return-value]
    return None


async def reply(send, status: int, detail: str, retry_after_s: float | None = None) -> None:
    """A JSON `{"detail": ...}` answer written straight to ASGI (no app involved)."""
    body = orjson.dumps({"detail": detail})
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    if retry_after_s is not None:
        headers.append((b"retry-after", b"%d" % max(1, math.ceil(retry_after_s))))
    if status == 413:
        headers.append((b"connection", b"close"))  # the rest of the body is not read
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class EdgeLimits:
    """ASGI middleware: body size and requests in flight (see the module docstring)."""

    def __init__(self, app, max_body_bytes: int, max_in_flight: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_in_flight = max_in_flight
        self.in_flight = 0

    @staticmethod
    def _count(scope, reason: str) -> None:
        app = scope.get("app")
        services = getattr(app.state, "services", None) if app is not None else None
        if services is not None:  # None: before the lifespan started
            services.metrics.refused.labels(reason).inc()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        exempt = scope["path"] in EXEMPT_PATHS
        if not exempt and self.max_in_flight and self.in_flight >= self.max_in_flight:
            self._count(scope, "overloaded")
            return await reply(
                send,
                503,
                f"more than {self.max_in_flight} requests in flight (LAMBDAREC_SERVING_MAX_IN_FLIGHT); retry",
                1,
            )
        limit = self.max_body_bytes
        length = declared_length(scope["headers"])
        if length is not None and length > limit:
            self._count(scope, "body_too_large")
            return await reply(
                send,
                413,
                f"request body of {length} bytes is over the limit of {limit} (LAMBDAREC_SERVING_MAX_BODY_BYTES)",
            )
        if scope["method"] in _BODY_METHODS:
            body = await read_body(receive, limit)
            if body is None:
                self._count(scope, "body_too_large")
                return await reply(
                    send,
                    413,
                    f"request body is over the limit of {limit} bytes (LAMBDAREC_SERVING_MAX_BODY_BYTES)",
                )
            receive = replay(body, receive)
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


async def read_body(receive, limit: int) -> bytes | None:
    """The whole request body, or None as soon as it passes `limit` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # disconnect: the app sees an empty body and the disconnect
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def replay(body: bytes, receive):
    """A `receive` that hands the app the buffered body once, then the connection's own messages."""
    sent = False

    async def replayed():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


class RateLimiter:
    """A token bucket per API key: `rate_per_s` tokens a second, at most `burst` saved up.
    `rate_per_s` 0 = no limit. `clock` is injected so tests control time."""

    def __init__(self, rate_per_s: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate_per_s
        self.burst = max(burst, 1)
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def wait_s(self, key: str) -> float:
        """0 and one token taken when `key` may go now, else seconds until it may."""
        if not self.enabled:
            return 0.0
        now = self.clock()
        tokens, at = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.rate

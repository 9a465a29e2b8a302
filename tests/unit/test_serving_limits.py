"""The edge limits as pure ASGI logic (serving.limits): body size, requests in flight, the token bucket."""

from __future__ import annotations

import asyncio

import orjson

from serving.limits import EdgeLimits, RateLimiter


class Recorder:
    """A downstream app that records what it received and answers 200 once `release` is set."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.release = asyncio.Event()
        self.release.set()

    async def __call__(self, scope, receive, send) -> None:
        message = await receive() if scope["method"] == "POST" else {"body": b""}
        self.bodies.append(message["body"])
        await self.release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


async def call(app, method="POST", path="/v1/events", chunks=(b"",), headers=()) -> tuple[int, dict, bytes]:
    scope = {"type": "http", "method": method, "path": path, "headers": list(headers)}
    pending = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)
    ]
    sent: list[dict] = []

    async def receive():
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    start = sent[0]
    return (
        start["status"],
        {k.decode(): v.decode() for k, v in start["headers"]},
        b"".join(m.get("body", b"") for m in sent[1:]),
    )


async def test_body_over_the_limit_is_refused_by_length_or_by_bytes_read():
    inner = Recorder()
    app = EdgeLimits(inner, max_body_bytes=10, max_in_flight=0)

    declared = await call(app, chunks=(b"x" * 11,), headers=[(b"content-length", b"11")])
    streamed = await call(app, chunks=(b"x" * 6, b"x" * 5))  # chunked: no Content-Length
    understated = await call(app, chunks=(b"x" * 11,), headers=[(b"content-length", b"3")])
    get_declared = await call(
        app, method="GET", path="/v1/recommendations/u1", headers=[(b"content-length", b"999")]
    )
    fits = await call(app, chunks=(b"x" * 6, b"x" * 4))

    for status, headers, body in (declared, streamed, understated, get_declared):
        assert status == 413 and headers["connection"] == "close"
        assert "LAMBDAREC_SERVING_MAX_BODY_BYTES" in orjson.loads(body)["detail"]
    assert (
        orjson.loads(declared[2])["detail"]
        == "request body of 11 bytes is over the limit of 10 (LAMBDAREC_SERVING_MAX_BODY_BYTES)"
    )
    assert fits[0] == 200
    assert inner.bodies == [b"x" * 10]  # only the request within the limit reached the app, whole


async def test_requests_past_the_in_flight_cap_get_503_with_retry_after_and_probes_pass():
    inner = Recorder()
    inner.release.clear()
    app = EdgeLimits(inner, max_body_bytes=100, max_in_flight=2)
    held = [asyncio.create_task(call(app, method="GET", path="/v1/recommendations/u1")) for _ in range(2)]
    await asyncio.sleep(0)  # let both enter the app
    while app.in_flight < 2:
        await asyncio.sleep(0)

    refused = await call(app, method="GET", path="/v1/recommendations/u2")
    health = asyncio.create_task(call(app, method="GET", path="/healthz"))
    inner.release.set()
    results = await asyncio.gather(*held, health)

    assert refused[0] == 503 and refused[1]["retry-after"] == "1"
    assert (
        orjson.loads(refused[2])["detail"]
        == "more than 2 requests in flight (LAMBDAREC_SERVING_MAX_IN_FLIGHT); retry"
    )
    assert [r[0] for r in results] == [200, 200, 200]
    assert app.in_flight == 0
    assert (await call(app, method="GET", path="/v1/recommendations/u2"))[0] == 200  # capacity is back


def test_token_bucket_per_key():
    now = [100.0]
    limiter = RateLimiter(rate_per_s=2.0, burst=3, clock=lambda: now[0])
    assert [limiter.wait_s("a") for _ in range(4)] == [0.0, 0.0, 0.0, 0.5]
    assert limiter.wait_s("b") == 0.0  # keys do not share a bucket
    now[0] += 0.5  # one token back
    assert (limiter.wait_s("a"), limiter.wait_s("a")) == (0.0, 0.5)
    now[0] += 60.0  # refills to the burst, not beyond
    assert [limiter.wait_s("a") for _ in range(4)] == [0.0, 0.0, 0.0, 0.5]
    assert RateLimiter(0.0, 1).wait_s("a") == 0.0 and not RateLimiter(0.0, 1).enabled

"""Switches of serving's optimizations, so benchmarks can measure each one off and tests can check
that the answers do not change.

Not settings: a deployment runs with every one on. The composition root passes a `ServingSwitches` to
`serving.app.create_app` (and `lambdarec serve` picks the event loop by it); benchmarks start the API
with some off through `benchmarks.serve_variant`, tests pass them to `create_app`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServingSwitches:
    orjson: bool = True  # responses serialized with orjson (else the stdlib json encoder)
    hiredis: bool = True  # Redis replies parsed with hiredis (else redis-py's pure-Python parser)
    uvloop: bool = True  # `lambdarec serve` on uvloop (else the stdlib asyncio loop)
    # online-store reads over serving's own pipelined connection (asyncio protocol + hiredis) instead of
    # redis-py's pipeline
    fast_redis: bool = True
    # plainly valid GET /v1/recommendations answered before FastAPI's parameter machinery (errors
    # still come from the route)
    fast_route: bool = True
    gc_freeze: bool = True  # gc.freeze() after start-up, so full collections skip start-up objects

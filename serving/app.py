"""The FastAPI application: `create_app(settings)` builds it; the lifespan opens and closes its clients.

Who calls it: `lambdarec serve` (under uvicorn) and the tests (httpx ASGITransport or a real
uvicorn). Everything the routes use hangs off one `Services` object built in the lifespan and reached
through `Annotated` dependencies, so tests can override any of them.

Endpoints (OpenAPI at /docs):
- `GET /v1/recommendations/{user_id}`, `GET /v1/items/{item_id}/similar`, `POST /v1/events`
  (API key in `X-API-Key`, see `serving.auth`);
- `GET /healthz` (alive), `GET /readyz` (Redis, model, batch version, speed lag), `GET /metrics`.

Why one module: the routes, their shared validation and the lifespan that wires `Services` are the
HTTP surface in one place; request logic lives in serving.recommender.
"""

import asyncio
import gc
import logging
import math
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Body, Depends, FastAPI, HTTPException, Path, Query, Request, Security
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader
from pydantic import BaseModel

from feature_store.event_bus import (
    BusBacklogFull,
    EventBusUnavailable,
    EventPublisher,
    nothing_published,
    open_publisher,
)
from feature_store.events import ID_MAX_LENGTH, ID_PATTERN, EventTypes, QuarantineReason, validate_event_dict
from feature_store.redis_cluster import open_async_redis
from feature_store.redis_keys import RedisKeys
from feature_store.registry import LoadedRanker, champion_version, load_ranker
from feature_store.settings import Settings
from serving.auth import API_KEY_HEADER, READ, WRITE, ApiKey, ApiKeyGuard, guard_from_settings
from serving.batcher import MicroBatcher
from serving.cache import BatchCache
from serving.cluster import ClusterReader
from serving.fast_route import FastRecommendations
from serving.limits import EdgeLimits, RateLimiter
from serving.metrics import ServingMetrics
from serving.models import ChampionWatcher, ModelHolder
from serving.recommender import STORE_ERRORS, Recommender
from serving.resp import PipelinedReader, RedisPyReader
from serving.schemas import (
    EventBatch,
    EventError,
    EventsAccepted,
    EventsRejected,
    Health,
    ModelStatus,
    Readiness,
    Recommendations,
    SimilarItems,
)
from serving.store import OnlineStore
from serving.tuning import ServingSwitches

log = logging.getLogger(__name__)

MAX_EVENTS_PER_REQUEST = 1000


class OrjsonResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def model_json(model: BaseModel) -> bytes:
    """A response model as its wire JSON, by pydantic's own serializer (what FastAPI's response_model
    does, without validating the model a second time)."""
    return model.__pydantic_serializer__.to_json(model)


def render_json(content: BaseModel | Any, status: int) -> Response:
    """A route's answer (its response model, or a plain JSON-able object) as a JSON response."""
    if isinstance(content, BaseModel):
        return Response(model_json(content), status_code=status, media_type="application/json")
    return OrjsonResponse(content, status_code=status)


def render_stdlib_json(content: BaseModel | Any, status: int) -> Response:
    """`render_json` with the stdlib encoder (the `orjson` switch off)."""
    if isinstance(content, BaseModel):
        content = content.model_dump(mode="json")
    return JSONResponse(content, status_code=status)


@dataclass
class Services:
    """What the routes use; built in the lifespan from settings (or injected by tests)."""

    settings: Settings
    redis: Any  # redis.asyncio.Redis
    store: OnlineStore
    recommender: Recommender
    holder: ModelHolder
    watcher: ChampionWatcher
    metrics: ServingMetrics
    guard: ApiKeyGuard
    limiter: RateLimiter
    event_types: EventTypes
    render: Callable[[Any, int], Response]
    publisher: EventPublisher  # the bus POST /v1/events publishes to (Redis Stream or Kafka, from settings)


def open_redis(url: str, settings: Settings, switches: ServingSwitches, timeout_s: float | None = None):
    """The async Redis client of the API: hiredis parser (unless switched off), request-sized
    timeouts (`timeout_s`, default the recommendations' Redis budget), and a bounded pool. Bounded
    because under overload an unbounded pool opens a connection per waiting request, and every
    timed-out request throws its connection away: the reconnects then cost more than the work. No
    CLIENT SETINFO on connect (two round trips per new connection). On a Redis Cluster: redis-py's cluster client (a bounded pool per master)."""
    timeout = settings.serving.redis_budget_s if timeout_s is None else timeout_s
    if settings.redis.cluster:
        return open_async_redis(
            url,
            True,
            max_connections=settings.serving.redis_max_connections,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
        )
    import redis.asyncio as aioredis
    from redis._parsers import _AsyncHiredisParser, _AsyncRESP2Parser

    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=settings.serving.redis_max_connections,
        timeout=timeout,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        parser_class=_AsyncHiredisParser if switches.hiredis else _AsyncRESP2Parser,
        health_check_interval=0,
        driver_info=None,
    )
    return aioredis.Redis(connection_pool=pool)


def open_reader(url: str, redis_client, switches: ServingSwitches, cluster: bool = False):
    """What the online store reads through: serving's pipelined connection (it parses with hiredis),
    unless it or hiredis is switched off; else redis-py's pipeline on the app's client. On a Redis
    Cluster always serving.cluster's reader (one pipelined connection per master)."""
    if cluster:
        return ClusterReader(url)
    if switches.fast_redis and switches.hiredis and url.startswith(("redis://", "rediss://", "unix://")):
        return PipelinedReader(url)
    return RedisPyReader(redis_client)


def build_services(
    settings: Settings,
    redis_client,
    *,
    reader=None,
    publisher: EventPublisher | None = None,
    resolve=champion_version,
    load=load_ranker,
    switches: ServingSwitches = ServingSwitches(),
) -> Services:
    """Wire the serving objects around one Redis client (no I/O here); `reader` (serving.resp)
    defaults to redis-py's pipeline on that client, `publisher` to the bus the settings name."""
    keys = RedisKeys(settings.redis.key_prefix)
    cache = BatchCache(settings.serving.cache_enabled, settings.serving.cache_max_bytes)
    store = OnlineStore(
        reader or RedisPyReader(redis_client),
        keys,
        cache,
        recent_items=max(settings.serving.recent_items, 1),
        trending_window=settings.serving.trending_window,
        trending_candidates=settings.serving.trending_candidates,
        neighbors_per_item=settings.serving.neighbors_per_item,
    )
    holder = ModelHolder()
    metrics = ServingMetrics(cache, holder)
    batcher = (
        MicroBatcher(settings.serving.microbatch_wait_ms) if settings.serving.microbatch_enabled else None
    )
    recommender = Recommender(settings, store, holder, metrics, batcher)

    async def record_model(ranker: LoadedRanker) -> None:
        try:  # best effort: /readyz of other tools reads it; serving works without it
            await asyncio.wait_for(
                redis_client.hset(
                    keys.model_pointer,
                    mapping={
                        "name": ranker.name,
                        "version": ranker.version,
                        "backend": ranker.backend,
                        "loaded_at": ranker.loaded_at,
                    },
                ),
                settings.serving.redis_budget_s,
            )
        except STORE_ERRORS:
            pass

    watcher = ChampionWatcher(settings, holder, resolve=resolve, load=load, on_swap=record_model)
    render = render_json if switches.orjson else render_stdlib_json
    publisher = publisher or open_publisher(settings, redis_client=redis_client, trim=False)
    limiter = RateLimiter(settings.serving.rate_limit_per_s, settings.serving.rate_limit_burst)
    return Services(
        settings,
        redis_client,
        store,
        recommender,
        holder,
        watcher,
        metrics,
        guard_from_settings(settings),
        limiter,
        EventTypes(),
        render,
        publisher,
    )


def create_app(
    settings: Settings,
    *,
    redis_url: str | None = None,
    resolve: Callable[[Settings], str | None] = champion_version,
    load: Callable[[Settings, str], LoadedRanker] = load_ranker,
    switches: ServingSwitches = ServingSwitches(),
) -> FastAPI:
    """The API for these settings. `redis_url` defaults to `settings.redis.url` (the CLI passes the
    embedded server's URL); `resolve`/`load` reach the model registry; `switches` turn optimizations
    off (benchmarks, tests). Refuses a non-local profile without API keys (before anything starts)."""
    guard_from_settings(settings)  # fail now, not at the first request
    url = redis_url or settings.redis.url
    if not url:
        raise ValueError("no Redis URL: set LAMBDAREC_REDIS_URL or start through `lambdarec serve`")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        client = open_redis(url, settings, switches)
        # Event batches wait for the bus longer than a recommendation waits for its reads, on
        # connections of their own: a slow write must neither time out at the read budget (a 503 the
        # client must resend) nor hold a connection a recommendation needs.
        bus_client = (
            open_redis(url, settings, switches, timeout_s=settings.serving.events_budget_s)
            if settings.bus.kind == "redis"
            else None
        )
        services = build_services(
            settings,
            client,
            reader=open_reader(url, client, switches, cluster=settings.redis.cluster),
            publisher=open_publisher(settings, redis_client=bus_client, trim=False),
            resolve=resolve,
            load=load,
            switches=switches,
        )
        app.state.services = services
        try:
            async with asyncio.timeout(1.0):
                await services.store.load_popular()
        except STORE_ERRORS as exc:  # start anyway: requests degrade until Redis answers
            log.warning("Redis not reachable at start-up (%s); serving degraded until it is", exc)
        await services.watcher.check()
        services.watcher.start()
        if switches.gc_freeze:
            # Everything built so far lives as long as the process: keep it out of full collections,
            # which otherwise land on one request in fifty as a p99 spike (STACK-NOTES).
            gc.collect()
            gc.freeze()
        try:
            yield
        finally:
            await services.watcher.stop()
            await services.recommender.stop()
            await services.store.reader.aclose()
            await asyncio.to_thread(services.publisher.close)
            if bus_client is not None:
                await bus_client.aclose()
            await client.aclose()
            if not settings.redis.cluster:  # the cluster client closes its pools itself
                await client.connection_pool.disconnect()

    app = FastAPI(
        title="lambdarec",
        version="1",
        summary="Real-time recommendations: batch (Spark) and speed (Structured Streaming) layers merged per request.",
        lifespan=lifespan,
        docs_url=None,  # served by _offline_docs: FastAPI's default page loads Swagger UI from a CDN
        redoc_url=None,
    )
    app.include_router(_v1_router(settings))
    app.include_router(_ops_router())
    if switches.fast_route:
        app.add_middleware(
            FastRecommendations, max_k=settings.serving.max_k, max_exclude=settings.serving.max_exclude
        )
    # Added last, so it runs first: oversize bodies and overload are refused before anything else.
    app.add_middleware(
        EdgeLimits,
        max_body_bytes=settings.serving.max_body_bytes,
        max_in_flight=settings.serving.max_in_flight,
    )
    _offline_docs(app)
    return app


def _offline_docs(app: FastAPI) -> None:
    """/docs with Swagger UI served from the installed `swagger-ui-bundle-v2` package, so the page
    renders without Internet access (a laptop demo, an air-gapped cluster)."""
    import swagger_ui_bundle
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles

    app.mount("/docs-static", StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="docs-static")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui():
        return get_swagger_ui_html(
            openapi_url=app.openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url="/docs-static/swagger-ui-bundle.js",
            swagger_css_url="/docs-static/swagger-ui.css",
            swagger_favicon_url="/docs-static/favicon-32x32.png",
        )


# -- dependencies ----------------------------------------------------------------------------------
async def get_services(request: Request) -> Services:
    # async: FastAPI runs a plain `def` dependency in its thread pool, a thread hop on every request
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]
_api_key_header = APIKeyHeader(
    name=API_KEY_HEADER,
    auto_error=False,
    description="An API key; its SHA-256 is in LAMBDAREC_API_KEYS_SHA256.",
)


def require_api_key(scope: str):
    """The dependency of a /v1 route needing `scope`: 401 for a missing or unknown key, 403 for a key
    without the scope, 429 when the key's rate is used up."""

    async def authorize(
        services: ServicesDep, key: Annotated[str | None, Security(_api_key_header)]
    ) -> ApiKey:
        identity = services.guard.identify(key)
        if identity is None:
            raise HTTPException(
                status_code=401,
                detail=f"missing or unknown API key: send it in the {API_KEY_HEADER} header",
                headers={"WWW-Authenticate": "ApiKey"},
            )
        if scope not in identity.scopes:
            services.metrics.refused.labels("forbidden").inc()
            raise HTTPException(
                status_code=403,
                detail=f"this API key may not {scope}: it has the scope(s) {', '.join(sorted(identity.scopes))}",
            )
        wait_s = services.limiter.wait_s(identity.id)
        if wait_s:
            services.metrics.refused.labels("rate_limited").inc()
            raise HTTPException(
                status_code=429,
                detail=f"rate limit of this API key reached (LAMBDAREC_SERVING_RATE_LIMIT_PER_S); retry in {wait_s:.2f} s",
                headers={"Retry-After": str(max(1, math.ceil(wait_s)))},
            )
        return identity

    return authorize


ItemId = Annotated[
    str, Path(min_length=1, max_length=ID_MAX_LENGTH, pattern=ID_PATTERN, description="An item id.")
]
UserId = Annotated[
    str, Path(min_length=1, max_length=ID_MAX_LENGTH, pattern=ID_PATTERN, description="A user id.")
]
ContextId = Annotated[str | None, Query(min_length=1, max_length=ID_MAX_LENGTH, pattern=ID_PATTERN)]


# -- /v1 -------------------------------------------------------------------------------------------
def _v1_router(settings: Settings) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["v1"])
    reader = [Depends(require_api_key(READ))]
    writer = [Depends(require_api_key(WRITE))]
    max_k = settings.serving.max_k
    max_exclude = settings.serving.max_exclude

    @router.get("/recommendations/{user_id:path}", response_model=Recommendations, dependencies=reader)
    async def recommendations(
        services: ServicesDep,
        user_id: UserId,
        k: Annotated[
            int, Query(ge=1, le=max_k, description=f"How many items, 1..{max_k} (LAMBDAREC_MAX_K).")
        ] = 10,
        category: Annotated[
            str | None,
            Query(
                min_length=1,
                max_length=ID_MAX_LENGTH,
                pattern=ID_PATTERN,
                description="Category of the page: its items come first.",
            ),
        ] = None,
        item_id: Annotated[
            str | None,
            Query(
                min_length=1,
                max_length=ID_MAX_LENGTH,
                pattern=ID_PATTERN,
                description="Item the user is looking at: its neighbours join the candidates; unknown ids are ignored.",
            ),
        ] = None,
        page: Annotated[
            str | None,
            Query(
                min_length=1,
                max_length=ID_MAX_LENGTH,
                pattern=ID_PATTERN,
                description="Page the answer is for (home, product, cart, ...); informational.",
            ),
        ] = None,
        exclude: Annotated[
            list[Annotated[str, Query(min_length=1, max_length=ID_MAX_LENGTH, pattern=ID_PATTERN)]],
            Query(max_length=max_exclude, description="Item ids not to recommend (repeat the parameter)."),
        ] = [],  # noqa: B006
    ) -> Response:
        started = time.perf_counter()
        del page  # accepted and validated so product teams can send it; ranking does not use it yet
        answer = await services.recommender.recommend(
            user_id, k, category=category, item_id=item_id, exclude=frozenset(exclude)
        )
        response = services.render(answer, 200)
        services.metrics.latency.labels("recommendations").observe(time.perf_counter() - started)
        return response

    @router.get("/items/{item_id:path}/similar", response_model=SimilarItems, dependencies=reader)
    async def similar_items(
        services: ServicesDep,
        item_id: ItemId,
        k: Annotated[int, Query(ge=1, le=max_k, description=f"How many items, 1..{max_k}.")] = 10,
    ) -> Response:
        started = time.perf_counter()
        answer = await services.recommender.similar(item_id, k)
        response = services.render(answer, 200)
        services.metrics.latency.labels("similar").observe(time.perf_counter() - started)
        return response

    @router.post(
        "/events",
        status_code=202,
        response_model=EventsAccepted,
        dependencies=writer,
        responses={
            403: {"description": "The API key has no `write` scope."},
            413: {
                "description": "The body is over LAMBDAREC_SERVING_MAX_BODY_BYTES (checked before authentication)."
            },
            422: {
                "model": EventsRejected,
                "description": "Nothing was published; `errors` lists each bad event by index.",
            },
            503: {
                "description": "The event bus refused the batch (over its backlog cap "
                "LAMBDAREC_EVENT_STREAM_MAX_BACKLOG, out of memory, unreachable: `published` is `none`) or did "
                "not confirm it in time (`published` is `unknown`: its events may be on the bus). Resend the "
                "same events either way: each event_id counts once."
            },
        },
    )
    async def post_events(
        services: ServicesDep,
        body: Annotated[
            EventBatch | list[Any] | dict[str, Any],
            Body(
                description='One event, a JSON array of events, or {"events": [...]}. A batch is all-or-nothing.'
            ),
        ],
    ) -> Response:
        started = time.perf_counter()
        if isinstance(body, EventBatch):
            raw_events = body.events
        elif isinstance(body, list):
            raw_events = body
        elif isinstance(body.get("events"), list):
            raw_events = body["events"]
        else:
            raw_events = [body]
        response = await _accept_events(services, raw_events)
        services.metrics.latency.labels("events").observe(time.perf_counter() - started)
        return response

    return router


def _unpublished(error: BaseException) -> dict[str, str]:
    """The 503 body of a failed publish: says what is known of the batch. A Redis Stream batch is one
    atomic script, so a refused one is not on the bus; one whose reply never came (a time-out) may be,
    and so may a batch the Kafka producer gave up on. Resending is safe either way: every sink counts an
    event id once."""
    name = type(error).__name__
    if nothing_published(error):
        return {
            "detail": f"event bus unavailable ({name}); nothing was published, retry (each event_id counts once)",
            "published": "none",
        }
    return {
        "detail": f"the event bus did not confirm the batch ({name}): its events may be on the bus; "
        "resend them unchanged (each event_id counts once)",
        "published": "unknown",
    }


async def _accept_events(services: Services, raw_events: list[Any]) -> Response:
    """Validate every event; publish all of them in one round trip, or none (422 with each error)."""
    settings = services.settings
    if not raw_events:
        return _rejected(services, "no events in the request", [])
    if len(raw_events) > MAX_EVENTS_PER_REQUEST:
        return _rejected(
            services, f"{len(raw_events)} events in one request; send at most {MAX_EVENTS_PER_REQUEST}", []
        )
    now = datetime.now(UTC)
    tolerance = timedelta(minutes=settings.batch.future_tolerance_minutes)
    events, errors, seen_ids = [], [], set()
    for index, raw in enumerate(raw_events):
        event, reason, detail = validate_event_dict(
            raw, now=now, future_tolerance=tolerance, event_types=services.event_types
        )
        event_id = (
            raw.get("event_id") if isinstance(raw, dict) and isinstance(raw.get("event_id"), str) else None
        )
        if event is not None and event.event_id in seen_ids:
            event, reason, detail = (
                None,
                QuarantineReason.DUPLICATE_EVENT_ID,
                f"event_id {event_id!r} appears twice in this request",
            )
        if event is None:
            errors.append(EventError(index=index, event_id=event_id, reason=str(reason), detail=detail))
            continue
        seen_ids.add(event.event_id)
        events.append(event)
    if errors:
        return _rejected(
            services, f"{len(errors)} of {len(raw_events)} events are invalid; none was accepted", errors
        )
    try:
        async with asyncio.timeout(settings.serving.events_budget_s):
            entry_ids = await services.publisher.publish_async(events)
    except BusBacklogFull as exc:
        services.metrics.events.labels("backlog").inc(len(events))
        return services.render(
            {"detail": f"{exc}; nothing was published, retry later", "published": "none"}, 503
        )
    except (*STORE_ERRORS, EventBusUnavailable) as exc:
        services.metrics.events.labels("unavailable").inc(len(events))
        return services.render(_unpublished(exc), 503)
    services.metrics.events.labels("accepted").inc(len(events))
    items_by_user: dict[str, list[str]] = {}
    for event in events:
        items_by_user.setdefault(event.user_id, []).append(event.item_id)
    services.recommender.schedule_prefetch(items_by_user)
    return services.render(EventsAccepted(accepted=len(events), entry_ids=entry_ids), 202)


def _rejected(services: Services, detail: str, errors: list[EventError]) -> Response:
    services.metrics.events.labels("rejected").inc(max(len(errors), 1))
    return services.render(EventsRejected(detail=detail, errors=errors), 422)


# -- operations ------------------------------------------------------------------------------------
def _ops_router() -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/healthz", response_model=Health)
    async def healthz() -> Health:
        return Health()

    @router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
    async def readyz(services: ServicesDep) -> Response:
        redis_ok, version, status = False, services.store.cache.version, {}
        try:
            async with asyncio.timeout(max(services.settings.serving.redis_budget_s, 0.2)):
                await services.redis.ping()
                version = await services.store.read_version()
                status = await services.store.speed_status()
                redis_ok = True
        except STORE_ERRORS:
            pass
        ranker = services.holder.current
        model = (
            ModelStatus(
                name=ranker.name, version=ranker.version, backend=ranker.backend, loaded_at=ranker.loaded_at
            )
            if ranker
            else None
        )
        # Ready = Redis answers and the champion (if one is registered) is loaded.
        model_ok = ranker is not None or services.holder.champion_version is None
        readiness = Readiness(
            ready=redis_ok and model_ok,
            redis=redis_ok,
            model=model,
            model_error=services.holder.last_error,
            batch_version=version,
            speed_lag_ms_p50=_number(status.get("lag_ms_p50")),
            speed_lag_ms_p99=_number(status.get("lag_ms_p99")),
            speed_updated_age_s=_age_s(status.get("updated_at")),
        )
        return services.render(readiness, 200 if readiness.ready else 503)

    @router.get("/metrics", response_class=Response)
    async def metrics(services: ServicesDep) -> Response:
        return Response(services.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return router


def _number(raw: str | None) -> float | None:
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None


def _age_s(raw: str | None) -> float | None:
    """Seconds since `updated_at` (epoch ms or s, or ISO-8601) of the speed layer's status."""
    if raw is None:
        return None
    value = _number(raw)
    if value is not None:
        seconds = value / 1000.0 if value > 1e11 else value
        return round(time.time() - seconds, 3)
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None
    parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return round(time.time() - parsed.timestamp(), 3)

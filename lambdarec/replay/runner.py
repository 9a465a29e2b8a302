"""Run a replay evaluation through the real layers: batch on Spark/Delta, the streaming job, serving.

Who calls it: `lambdarec replay` (lambdarec/commands/replay.py), benchmarks/bench_replay.py and
tests/integration/test_replay.py, each passing the Spark session it owns (composition root or fixture).

Everything runs in a private scratch environment under `work_dir` (its own redis-server, Delta tables,
MLflow registry and streaming checkpoints), so a replay never touches the product's online store:

1. **Batch**: the input before T is written in its own format and ingested (`spark_jobs.ingest`), then
   the nightly job runs for `as_of = T` (`spark_jobs.batch_pipeline.run_batch`: features, candidates,
   rankers, promotion, scoring, publish to Redis database 0). The published batch keys are copied to
   database 1: the **batch-only** online store, which the speed layer never writes.
2. **Speed**: the real streaming query (`spark_jobs.streaming.speed_job.start_queries`, speed query
   only: bronze is not needed because no batch runs during the replay) reads the bus on database 0.
   The replay puts events on the bus itself, with entry ids `<event ms>-<seq>` (protocol.stream_ids):
   the speed layer's clock is event time.
3. **Serving**: two in-process instances of the real API (`serving.app.create_app`), one on each
   database, asked through httpx's ASGI transport (`GET /v1/recommendations/{user}`): the full request
   path (validation, store reads, candidates, the @champion ranker) without a socket. In-process
   rather than over HTTP against `lambdarec serve` because the replay measures quality, not latency
   (benchmarks/bench_serving.py does that over loopback), and a second server process would only take
   CPU from the streaming job on a small machine.
4. **Rounds** (protocol.plan_rounds): publish a slice, wait until the streaming status says the last
   entry is applied (protocol.caught_up), then ask every model about the next slice's targets. Every
   model gets the same request: the API variants are passed the items the user consumed during the
   replay as `exclude` (as a product backend would), the heuristics leave out the same items, so a
   difference comes from the signals, not from what a model may show.

Why one module: the replay's stages (prepare, batch, stream, ask, score) run in this order on one
prepared input and one scratch environment; its pure parts live in lambdarec.replay.dataset, protocol
and scoring.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from feature_store.event_bus import entry_fields
from feature_store.redis_keys import RedisKeys
from feature_store.settings import Settings, flat_fields
from lambdarec.replay.dataset import (
    ReplayEvent,
    ReplaySource,
    SourceFormat,
    check_cutoff,
    cutoff_for_fraction,
    load_source,
    midnight_ms,
    split_at,
    write_batch_input,
)
from lambdarec.replay.protocol import (
    ReplaySpeed,
    Round,
    caught_up,
    first_time_targets,
    plan_rounds,
    positive_types,
    sample_targets,
    session_start_targets,
    stream_ids,
)
from lambdarec.replay.scoring import (
    MODELS,
    SINGLE_SOURCES,
    ModelTally,
    hit_rate_by_moment,
    neighbour_ranking,
    paired_difference,
    popularity_ranking,
    top_unseen,
)

log = logging.getLogger(__name__)

SPEED_DB, BATCH_ONLY_DB = 0, 1
PUBLISH_CHUNK = 5_000  # XADDs per pipelined round trip
Progress = Callable[[str, int, int], None]  # (phase, done, total)


class SpeedLayerStalled(RuntimeError):
    """The streaming job did not apply the published events in time, or its query died."""


@dataclass(frozen=True)
class ServingVariant:
    """An extra serving configuration asked the same questions (an ablation): settings overrides on
    the online store the speed layer writes (`speed`) or on the batch-only one (`batch`)."""

    name: str
    store: str  # "speed" | "batch"
    overrides: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, text: str) -> ServingVariant:
        """`NAME:speed|batch:SETTING=VALUE[,SETTING=VALUE...]`, e.g. `priors_only:speed:serving_use_ranker=false`."""
        parts = text.split(":", 2)
        if len(parts) != 3 or not parts[0] or parts[1] not in ("speed", "batch") or parts[0] in MODELS:
            raise ValueError(
                f"variant {text!r}: use NAME:speed|batch:SETTING=VALUE[,...] with a NAME other than {', '.join(MODELS)}"
            )
        pairs = []
        for item in filter(None, parts[2].split(",")):
            key, sep, value = item.partition("=")
            if not sep or key not in flat_fields():
                raise ValueError(f"variant {text!r}: {item!r} is not SETTING=VALUE of a known setting")
            pairs.append((key, value))
        return cls(parts[0], parts[1], tuple(pairs))

    def settings(self, base: Settings) -> Settings:
        """Validated like the environment would be (so `0` becomes a float where the setting is one)."""
        return base.updated(**dict(self.overrides))


@dataclass(frozen=True)
class ReplayOptions:
    source: Path
    format: SourceFormat
    items: Path | None = None
    cutoff: date | None = None  # None: from holdout_fraction
    holdout_fraction: float = 0.1
    k: int = 10
    speed: ReplaySpeed = ReplaySpeed(None)
    slice_s: tuple[float, ...] = (60.0,)  # one replay pass per slice size (same batch, same targets)
    max_targets: int | None = 2_000
    seed: int = 0
    warmup_days: float = 7.0  # events this long before T go through the speed layer first (no questions)
    trigger_ms: int = 100
    catchup_timeout_s: float = 300.0
    keep_answers: bool = False  # the result lists every question with each model's rank of the item
    variants: tuple[ServingVariant, ...] = ()


@dataclass
class Prepared:
    """The input split at T and the questions, shared by every pass."""

    source: ReplaySource
    cutoff: date
    before: list[ReplayEvent]
    replayed: list[ReplayEvent]  # warm-up + held-out, in replay order
    warmup: int  # how many of `replayed` are before T
    targets: list[int]  # indices into `replayed` that are asked about
    eligible: int  # targets before sampling
    history: dict[str, set[str]]  # user -> items before T
    popular: list[str]
    catalog_size: int
    session_starts: frozenset[int] = frozenset()  # the targets that open a session (protocol)


def prepare(options: ReplayOptions, now: datetime, session_gap_ms: int = 30 * 60_000) -> Prepared:
    """Read the input, choose T, and pick the questions (pure apart from reading the input)."""
    source = load_source(options.source, options.format, now, options.items)
    times = source.times
    cutoff = options.cutoff or cutoff_for_fraction(times, options.holdout_fraction)
    check_cutoff(times, cutoff)
    before, after = split_at(source.events, cutoff)
    warm_from = midnight_ms(cutoff) - int(options.warmup_days * 86_400_000)
    warmup = [e for e in before if e.ts_ms >= warm_from]
    replayed = warmup + after
    history: dict[str, set[str]] = defaultdict(set)
    for e in before:
        history[e.user_id].add(e.item_id)
    eligible = first_time_targets(
        [e.user_id for e in replayed],
        [e.item_id for e in replayed],
        [e.event_type for e in replayed],
        len(warmup),
        history,
        positive_types(),
    )
    targets = sample_targets(eligible, options.max_targets, options.seed)
    last_before: dict[str, int] = {}
    for e in before:
        if e.ts_ms < warm_from:  # the warm-up events are replayed, so they come in `replayed`
            last_before[e.user_id] = max(e.ts_ms, last_before.get(e.user_id, e.ts_ms))
    session_starts = session_start_targets(
        [e.user_id for e in replayed], [e.ts_ms for e in replayed], targets, session_gap_ms, last_before
    )
    catalog = set(source.catalog_items) | {e.item_id for e in before}
    return Prepared(
        source,
        cutoff,
        before,
        replayed,
        len(warmup),
        targets,
        len(eligible),
        dict(history),
        popularity_ranking((e.user_id for e in before), (e.item_id for e in before)),
        len(catalog),
        session_starts,
    )


def replay_settings(settings: Settings, work_dir: Path, redis_url: str, trigger_ms: int) -> Settings:
    """The scratch environment's settings: everything under `work_dir`, the private Redis, a fast
    trigger, and a generous serving budget (a timeout would measure the 2-core machine, not the model)."""
    return settings.updated(
        data_dir=work_dir,
        tables_uri=str(work_dir / "delta"),
        redis_url=redis_url,
        mlflow_tracking_uri=f"sqlite:///{work_dir / 'mlflow.db'}",
        mlflow_registry_uri=None,
        mlflow_artifact_root=str(work_dir / "mlartifacts"),
        stream_trigger_ms=trigger_ms,
        serving_redis_budget_s=10.0,
        model_poll_interval_s=3600.0,
        profile="local",
    )


def db_url(url: str, db: int) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{db}"


# -- 1. batch --------------------------------------------------------------------------------
def train_batch(spark, settings: Settings, prepared: Prepared, work_dir: Path) -> dict[str, Any]:
    """Ingest the input before T and run the nightly job for as_of = T (publishes to settings' Redis)."""
    from lambdarec.composition import redis_url
    from spark_jobs.batch_pipeline import run_batch
    from spark_jobs.ingest import ingest

    started = time.monotonic()
    batch_input = write_batch_input(prepared.source, prepared.cutoff, work_dir / "batch-input")
    T = datetime.combine(prepared.cutoff, datetime.min.time(), tzinfo=UTC)
    ingested = ingest(spark, settings, batch_input, prepared.source.format, ingest_time=T)
    ingest_s = time.monotonic() - started
    ensure_registered_model(settings)
    report = run_batch(spark, settings, prepared.cutoff, redis_url=lambda: redis_url(settings))
    return {
        "ingested": ingested.ingested,
        "quarantined": sum(ingested.quarantined.values()),
        "ingest_s": round(ingest_s, 1),
        "batch_s": round(time.monotonic() - started - ingest_s, 1),
        "report": _jsonable(report),
    }


def ensure_registered_model(settings: Settings) -> None:
    """The scratch registry starts empty; the batch pipeline's version listing expects the ranker's
    registered model to exist (it reads its aliases), so create it, empty, once."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from feature_store.registry import configure_mlflow

    configure_mlflow(settings)
    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.registry_uri)
    try:
        client.get_registered_model(settings.ranker.model_name)
    except MlflowException:
        client.create_registered_model(settings.ranker.model_name)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "__dataclass_fields__"):
        return _jsonable(asdict(value))
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def copy_batch_keys(client, keys: RedisKeys, target_db: int) -> int:
    """Copy every key of the database (the published batch: nothing else is there yet) to `target_db`."""
    copied = 0
    pipe = client.pipeline(transaction=False)
    for key in client.scan_iter(match=f"{keys.prefix}:*", count=1_000):
        pipe.copy(key, key, destination_db=target_db, replace=True)
        copied += 1
        if len(pipe) >= 1_000:
            pipe.execute()
    pipe.execute()
    return copied


# -- 2. speed --------------------------------------------------------------------------------
class SpeedLayer:
    """The real streaming query, fed and watched by the replay."""

    def __init__(self, spark, settings: Settings, client) -> None:
        self.spark = spark
        self.settings = settings
        self.client = client
        self.keys = RedisKeys(settings.redis.key_prefix)
        self.queries: list = []
        self.last_id: str | None = None

    def start(self) -> None:
        from spark_jobs.streaming.speed_job import quiet_trigger_warnings, start_queries

        quiet_trigger_warnings(self.spark)
        self.queries = start_queries(
            self.spark, self.settings, self.settings.redis.url, self.client, bronze=False
        )

    def stop(self) -> None:
        from spark_jobs.streaming.speed_job import stop_gracefully

        for query in self.queries:
            stop_gracefully(query)
        self.queries = []

    def publish(self, events: Sequence[ReplayEvent]) -> str | None:
        """Put events on the bus with event-time entry ids (protocol.stream_ids); returns the last id."""
        if not events:
            return self.last_id
        ids = stream_ids([e.ts_ms for e in events], self.last_id)
        stream = self.settings.bus.stream
        for start in range(0, len(events), PUBLISH_CHUNK):
            pipe = self.client.pipeline(transaction=False)
            for event, entry_id in zip(
                events[start : start + PUBLISH_CHUNK], ids[start : start + PUBLISH_CHUNK]
            ):
                pipe.xadd(stream, entry_fields(event.wire()), id=entry_id)
            pipe.execute()
        self.last_id = ids[-1]
        return self.last_id

    def status(self) -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in self.client.hgetall(self.keys.speed_status).items()}

    def wait_caught_up(self, last_id: str, timeout_s: float) -> dict[str, str]:
        """Poll the status hash until it says `last_id` is applied (protocol.caught_up); deadline-bound."""
        deadline = time.monotonic() + timeout_s
        while True:
            status = self.status()
            if caught_up(status, last_id):
                return status
            dead = next((q for q in self.queries if not q.isActive), None)
            if dead is not None:
                raise SpeedLayerStalled(f"the streaming query stopped: {dead.exception()}")
            if time.monotonic() > deadline:
                raise SpeedLayerStalled(
                    f"the streaming job applied up to {status.get('last_entry_id')!r}, not {last_id!r}, within "
                    f"{timeout_s:.0f} s; raise --catchup-timeout or look at the Spark log"
                )
            time.sleep(0.005)


# -- 3. serving ------------------------------------------------------------------------------
class ServingAsker:
    """One in-process instance of the API, asked like a product backend would."""

    def __init__(self, settings: Settings, redis_url: str) -> None:
        from serving.app import create_app
        from serving.tuning import ServingSwitches

        # in-process instances in a process that goes on after them: no gc.freeze() of what they built
        self.app = create_app(settings, redis_url=redis_url, switches=ServingSwitches(gc_freeze=False))
        self._lifespan = None
        self.http = None

    async def __aenter__(self) -> ServingAsker:
        import httpx

        self._lifespan = self.app.router.lifespan_context(self.app)
        await self._lifespan.__aenter__()
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://replay")
        return self

    async def __aexit__(self, *exc) -> None:
        await self.http.aclose()
        await self._lifespan.__aexit__(*exc)

    async def top_k(self, user_id: str, k: int, exclude: Sequence[str] = ()) -> tuple[list[str], bool, dict]:
        response = await self.http.get(
            f"/v1/recommendations/{user_id}", params={"k": k, "exclude": list(exclude)}
        )
        response.raise_for_status()
        body = response.json()
        return [item["item_id"] for item in body["items"]], bool(body["degraded"]), body


def newest_exclusions(consumed_in_order: dict[str, None], limit: int) -> list[str]:
    """The `limit` items a user consumed most recently (oldest first): the request's `exclude`."""
    items = list(consumed_in_order)
    return items[-limit:] if limit > 0 else []


# -- 4. rounds -------------------------------------------------------------------------------
@dataclass
class PassResult:
    slice_s: float
    rounds: int
    tallies: dict[str, ModelTally]
    freshness_ms: list[int] = field(default_factory=list)  # publish done -> applied (streaming status)
    wait_ms: list[int] = field(default_factory=list)  # publish done -> the replay saw it applied
    published: int = 0
    wall_s: float = 0.0
    behind_s: float = 0.0  # realtime pacing: how far the pipeline fell behind the schedule at most
    sources: dict[str, int] = field(default_factory=dict)  # batch_speed answers' primary sources
    answers: list[dict[str, Any]] = field(default_factory=list)  # with ReplayOptions.keep_answers
    asked: list[int] = field(default_factory=list)  # the targets' indices in the order they were asked


class ReplayPass:
    """One pass of the held-out events for one slice size."""

    def __init__(
        self,
        prepared: Prepared,
        options: ReplayOptions,
        settings: Settings,
        speed: SpeedLayer,
        askers: dict[str, ServingAsker],
        progress: Progress | None,
    ) -> None:
        self.p = prepared
        self.options = options
        self.settings = settings
        self.speed = speed
        self.askers = askers  # batch_speed, batch_only, then the variants
        self.progress = progress
        self.keys = RedisKeys(settings.redis.key_prefix)
        self.consumed: dict[str, set[str]] = {u: set(items) for u, items in prepared.history.items()}
        # what each user consumed during the replay, oldest first: every model is asked to exclude it,
        # as a product backend would, so the models differ by their signals, not by what they may show
        self.replayed_items: dict[str, dict[str, None]] = defaultdict(dict)

    async def run(self, slice_s: float) -> PassResult:
        replayed = self.p.replayed
        rounds = plan_rounds(
            [e.user_id for e in replayed], [e.ts_ms for e in replayed], self.p.targets, int(slice_s * 1000)
        )
        names = [*MODELS, *(v.name for v in self.options.variants)]
        result = PassResult(slice_s, len(rounds), {m: ModelTally(m, self.options.k) for m in names})
        started = time.monotonic()
        origin_ms = replayed[0].ts_ms if replayed else 0
        for number, rnd in enumerate(rounds):
            behind = self._pace(origin_ms, started, replayed[max(rnd.publish_to - 1, 0)].ts_ms)
            result.behind_s = max(result.behind_s, behind)
            await self._play(rnd, result)
            if self.progress:
                self.progress(f"slice {slice_s:g}s", number + 1, len(rounds))
        result.wall_s = round(time.monotonic() - started, 1)
        return result

    def _pace(self, origin_ms: int, started: float, event_ms: int) -> float:
        wait = self.options.speed.wait_s(origin_ms, started, event_ms, time.monotonic())
        if wait > 0:
            time.sleep(wait)  # pacing to the requested replay speed, not waiting for a result
            return 0.0
        if self.options.speed.factor is None:
            return 0.0
        return max(
            0.0, time.monotonic() - (started + (event_ms - origin_ms) / 1000.0 / self.options.speed.factor)
        )

    async def _play(self, rnd: Round, result: PassResult) -> None:
        batch = self.p.replayed[rnd.publish_from : rnd.publish_to]
        if batch:
            last_id = self.speed.publish(batch)
            published_ms = int(time.time() * 1000)
            published_at = time.monotonic()
            status = self.speed.wait_caught_up(last_id, self.options.catchup_timeout_s)
            result.wait_ms.append(int((time.monotonic() - published_at) * 1000))
            if status.get("last_visible_at_ms"):
                result.freshness_ms.append(max(0, int(status["last_visible_at_ms"]) - published_ms))
            result.published += len(batch)
            for e in batch:
                self.consumed.setdefault(e.user_id, set()).add(e.item_id)
                seen = self.replayed_items[e.user_id]
                seen.pop(e.item_id, None)
                seen[e.item_id] = None
        for index in rnd.asks:
            result.asked.append(index)
            await self._ask(self.p.replayed[index], result)

    async def _ask(self, target: ReplayEvent, result: PassResult) -> None:
        k, user, item = self.options.k, target.user_id, target.item_id
        consumed = self.consumed.get(user, set())
        tallies = result.tallies
        exclude = newest_exclusions(self.replayed_items.get(user, {}), self.settings.serving.max_exclude)
        for name, asker in self.askers.items():
            items, degraded, body = await asker.top_k(user, k, exclude)
            tallies[name].add(items, item, degraded)
            if name == "batch_speed":
                for answer in body["items"]:
                    result.sources[answer["source"]] = result.sources.get(answer["source"], 0) + 1
        tallies["popularity"].add(top_unseen(self.p.popular, consumed, k), item)
        recent, neighbours, trending = self._speed_keys(user)
        tallies["speed_neighbours"].add(neighbour_ranking(recent, neighbours, consumed, k), item)
        tallies["speed_trending"].add(top_unseen(trending, consumed, k), item)
        if self.options.keep_answers:
            ranks = {
                name: (tally.answers[-1].index(item) + 1 if item in tally.answers[-1] else None)
                for name, tally in tallies.items()
            }
            result.answers.append(
                {
                    "event_id": target.event_id,
                    "user_id": user,
                    "item_id": item,
                    "ts_ms": target.ts_ms,
                    "recent": recent,
                    "ranks": ranks,
                }
            )

    def _speed_keys(self, user: str) -> tuple[list[str], dict[str, list[tuple[str, float]]], list[str]]:
        """The speed layer's keys the heuristics read: recent items, their co-visitation neighbours, trending."""
        s, client = self.settings, self.speed.client
        recent = [
            m.decode() for m in client.zrevrange(self.keys.recent_items(user), 0, s.serving.recent_items - 1)
        ]
        pipe = client.pipeline(transaction=False)
        for item in recent:
            pipe.zrevrange(self.keys.covisit(item), 0, s.serving.neighbors_per_item - 1, withscores=True)
        pipe.zrevrange(self.keys.trending(s.serving.trending_window), 0, 499)
        replies = pipe.execute()
        neighbours = {
            item: [(m.decode(), float(w)) for m, w in reply] for item, reply in zip(recent, replies)
        }
        return recent, neighbours, [m.decode() for m in replies[-1]]


# -- the whole replay ------------------------------------------------------------------------
def run_replay(
    spark,
    settings: Settings,
    options: ReplayOptions,
    work_dir: Path,
    progress: Progress | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Prepare, train the batch at T, then one replay pass per slice size; returns the result dict."""
    import redis

    from lambdarec.redis_server import EmbeddedRedis

    work_dir = Path(work_dir)
    if work_dir.exists():
        shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True)
    started = time.monotonic()
    prepared = prepare(options, now or datetime.now(UTC), settings.batch.session_gap_minutes * 60_000)
    server = EmbeddedRedis(directory=work_dir / "redis", binary=settings.redis.server_bin).start()
    try:
        url = server.url
        scratch = replay_settings(settings, work_dir, db_url(url, SPEED_DB), options.trigger_ms)
        client = redis.Redis.from_url(db_url(url, SPEED_DB), socket_timeout=30)
        if progress:
            progress("batch", 0, 1)
        batch = train_batch(spark, scratch, prepared, work_dir)
        keys = RedisKeys(scratch.redis.key_prefix)
        if client.get(keys.batch_pointer) is None:
            raise RuntimeError("the batch run published nothing to Redis (no batch pointer); see its report")
        copy_batch_keys(client, keys, BATCH_ONLY_DB)
        if progress:
            progress("batch", 1, 1)
        passes = []
        for slice_s in options.slice_s:
            passes.append(
                asyncio.run(_one_pass(spark, prepared, options, scratch, url, client, slice_s, progress))
            )
        client.close()
    finally:
        server.stop()
    return summarize(prepared, options, batch, passes, round(time.monotonic() - started, 1))


async def _one_pass(
    spark,
    prepared: Prepared,
    options: ReplayOptions,
    settings: Settings,
    url: str,
    client,
    slice_s: float,
    progress: Progress | None,
) -> PassResult:
    """A fresh speed layer (empty speed keys, new checkpoint) over the same batch, then the rounds."""
    reset_speed_state(client, settings, url)
    speed = SpeedLayer(spark, settings, client)
    speed.start()
    try:
        async with contextlib.AsyncExitStack() as stack:
            askers = {
                "batch_speed": await stack.enter_async_context(ServingAsker(settings, db_url(url, SPEED_DB))),
                "batch_only": await stack.enter_async_context(
                    ServingAsker(settings, db_url(url, BATCH_ONLY_DB))
                ),
            }
            for variant in options.variants:
                store = db_url(url, SPEED_DB if variant.store == "speed" else BATCH_ONLY_DB)
                askers[variant.name] = await stack.enter_async_context(
                    ServingAsker(variant.settings(settings), store)
                )
            return await ReplayPass(prepared, options, settings, speed, askers, progress).run(slice_s)
    finally:
        speed.stop()


def reset_speed_state(client, settings: Settings, url: str) -> None:
    """Back to "just after the batch": database 0 = the batch keys (copied back from the batch-only
    database), no bus, no streaming checkpoint."""
    import redis

    from spark_jobs.streaming.speed_job import SPEED_QUERY, checkpoint_dir

    keys = RedisKeys(settings.redis.key_prefix)
    client.flushdb()
    source = redis.Redis.from_url(db_url(url, BATCH_ONLY_DB))
    try:
        copy_batch_keys(source, keys, SPEED_DB)
    finally:
        source.close()
    shutil.rmtree(checkpoint_dir(settings, SPEED_QUERY), ignore_errors=True)


# -- the result ------------------------------------------------------------------------------
def _percentiles(values: Sequence[float]) -> dict[str, float]:
    from spark_jobs.streaming.speed_features import percentile

    ordered = sorted(values)
    return {f"p{q}": percentile(ordered, q) for q in (50, 95, 99)} | {
        "max": float(ordered[-1]) if ordered else float("nan"),
        "samples": len(ordered),
    }


def summarize(
    prepared: Prepared, options: ReplayOptions, batch: dict, passes: list[PassResult], wall_s: float
) -> dict[str, Any]:
    targets = [prepared.replayed[i] for i in prepared.targets]
    out: dict[str, Any] = {
        "source": str(options.source),
        "format": options.format,
        "cutoff": prepared.cutoff.isoformat(),
        "k": options.k,
        "speed": str(options.speed),
        "events": len(prepared.source.events),
        "events_before_cutoff": len(prepared.before),
        "events_held_out": len(prepared.replayed) - prepared.warmup,
        "held_out_share": round((len(prepared.replayed) - prepared.warmup) / len(prepared.source.events), 4),
        "warmup_events": prepared.warmup,
        "rejected_lines": len(prepared.source.bad_lines),
        "targets_eligible": prepared.eligible,
        "targets_asked": len(targets),
        "users_asked": len({t.user_id for t in targets}),
        "users_asked_new": len({t.user_id for t in targets if t.user_id not in prepared.history}),
        "catalog_size": prepared.catalog_size,
        "batch": batch,
        "wall_s": wall_s,
        "passes": [],
    }
    for result in passes:
        models = {name: tally.summary(prepared.catalog_size) for name, tally in result.tallies.items()}
        full, only = result.tallies["batch_speed"], result.tallies["batch_only"]
        out["passes"].append(
            {
                "slice_s": result.slice_s,
                "rounds": result.rounds,
                "published": result.published,
                "wall_s": result.wall_s,
                "behind_schedule_s": round(result.behind_s, 1),
                "models": models,
                "batch_speed_minus_batch_only": {
                    f"hr@{options.k}": paired_difference(full.hits, only.hits),
                    f"ndcg@{options.k}": paired_difference(full.ndcg, only.ndcg),
                    f"mrr@{options.k}": paired_difference(full.rr, only.rr),
                },
                # what the product serves against each answer built from one signal alone
                "batch_speed_minus_single_source": {
                    name: {
                        f"hr@{options.k}": paired_difference(full.hits, result.tallies[name].hits),
                        f"ndcg@{options.k}": paired_difference(full.ndcg, result.tallies[name].ndcg),
                    }
                    for name in SINGLE_SOURCES
                },
                # each ablation against what the product serves, paired over the same questions
                "batch_speed_minus_variant": {
                    variant.name: {
                        f"hr@{options.k}": paired_difference(full.hits, result.tallies[variant.name].hits),
                        f"ndcg@{options.k}": paired_difference(full.ndcg, result.tallies[variant.name].ndcg),
                    }
                    for variant in options.variants
                },
                "freshness_ms": _percentiles(result.freshness_ms),
                "catchup_wait_ms": _percentiles(result.wait_ms),
                "batch_speed_sources": dict(sorted(result.sources.items())),
                # HR of the questions that open a session vs those in the middle of one
                "by_moment": {
                    name: hit_rate_by_moment(tally.hits, [i in prepared.session_starts for i in result.asked])
                    for name, tally in result.tallies.items()
                },
                **({"answers": result.answers} if options.keep_answers else {}),
            }
        )
    if len(passes) == 2:
        a, b = passes
        out["slice_size_effect"] = {
            name: paired_difference(a.tallies[name].hits, b.tallies[name].hits)
            for name in ("batch_speed", "speed_neighbours")
        }
    return out

"""Serving latency under load: `lambdarec serve` in its own process, a real open-loop HTTP load
generator over loopback, GET /v1/recommendations at 100, 300 and 1,000 requests/s with 200
candidates per request and k=10; the same with each real-time optimization switched off.

Set-up (all generated, nothing from ../shared): a private redis-server with one published batch
(users with 150 batch recommendations, item features, similar lists, popularity), speed keys (recent
items, co-visitation, trending), and a LightGBM lambdarank (100 trees) logged to MLflow (SQLite) in the
MODEL_FILES layout and made champion. One request in five is preceded by a POST /v1/events for the
same user 20 ms earlier (a product backend sending the click, then asking what to show), so the
per-user prefetch has something to do; users are drawn from a pool larger than one run touches.

Open loop: requests leave on a fixed schedule whatever the server does, and latency is measured from
the scheduled send time, so a stalled server shows up as latency instead of a slower client.
`python -m benchmarks.bench_serving [--quick]` (quick: 10 s per rate instead of 60 s, and only the
variants in QUICK_VARIANTS).

Why one module: one experiment (set-up, load generator, variants, result file) read as one script.
"""

from __future__ import annotations

import asyncio
import os
import random
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.common import (
    machine_info,
    main,
    percentiles,
    raise_priority,
    run_load,
    start_ready,
    write_result,
)
from lambdarec.testing import register_ranker_files, stop_server, train_ranker_files

RATES = (100, 300, 1000)
N_USERS = 20_000
N_ITEMS = 5_000
N_GENRES = 19  # MovieLens has 19 (plus "(no genres listed)")
N_CATEGORIES = 20
BATCH_RECS = 150
K = 10
CANDIDATES = 200


@dataclass(frozen=True)
class Variant:
    """What a variant changes: settings (LAMBDAREC_* variables) and serving.tuning switches it turns
    off (the server then starts through benchmarks.serve_variant instead of `lambdarec serve`)."""

    env: dict[str, str] = field(default_factory=dict)
    off: tuple[str, ...] = ()


# Each variant switches one optimization off (or the optional micro-batching on) against the defaults.
VARIANTS: dict[str, Variant] = {
    "default": Variant(),
    "cache_off": Variant(env={"LAMBDAREC_SERVING_CACHE_ENABLED": "false"}),
    "prefetch_off": Variant(env={"LAMBDAREC_SERVING_PREFETCH_ENABLED": "false"}),
    "microbatch_on": Variant(env={"LAMBDAREC_SERVING_MICROBATCH_ENABLED": "true"}),
    "gc_freeze_off": Variant(off=("gc_freeze",)),
    "orjson_off": Variant(off=("orjson",)),
    "hiredis_off": Variant(off=("hiredis",)),
    "uvloop_off": Variant(off=("uvloop",)),
    "fast_redis_off": Variant(off=("fast_redis",)),
    "fast_route_off": Variant(off=("fast_route",)),
}


# -- the online store ---------------------------------------------------------------------------------
def seed_online_store(client, version: str = "bench", seed: int = 7) -> None:
    """One published batch plus speed keys, encoded as the producers encode them."""
    import msgpack

    from feature_store.codecs import encode_feature_rows, encode_features, encode_ids, encode_recs
    from feature_store.ranking import ITEM_INPUTS, POOL_INPUTS, USER_INPUTS
    from feature_store.redis_keys import RedisKeys

    rng = random.Random(seed)
    keys = RedisKeys()
    items = [f"i{n}" for n in range(N_ITEMS)]
    categories = {item: f"c{n % N_CATEGORIES}" for n, item in enumerate(items)}
    now_ms = int(time.time() * 1000)
    pipe = client.pipeline(transaction=False)
    for n, item in enumerate(items):
        pipe.set(keys.item_features(version, item), encode_features([rng.random() * 10 for _ in ITEM_INPUTS]))
        pipe.set(
            keys.item_similar(version, item),
            encode_recs((rng.choice(items), rng.random(), "covisit") for _ in range(20)),
        )
        pipe.zadd(keys.covisit(item), {rng.choice(items): rng.randint(1, 20) for _ in range(20)})
        if n % 500 == 499:
            pipe.execute()
    pipe.hset(keys.item_categories(version), mapping=categories)
    # genres drawn from a generator of their own, so every other key is the same as without them
    genre_rng = random.Random(seed + 1)
    pool_rng = random.Random(seed + 2)
    genres = [f"g{g}" for g in range(N_GENRES)]
    for item in items:
        pipe.set(
            keys.item_genres(version, item), encode_ids(genre_rng.sample(genres, genre_rng.randint(1, 3)))
        )
    pipe.set(
        keys.popular(version),
        encode_recs((item, float(N_ITEMS - n), "popular") for n, item in enumerate(items[:200])),
    )
    pipe.zadd(keys.trending("1h"), {rng.choice(items): rng.random() * 100 for _ in range(50)})
    pipe.execute()
    for n in range(N_USERS):
        user = f"u{n}"
        recs = rng.sample(items, BATCH_RECS)
        # as the publisher writes them: each item with its ranker score, then the nightly sources' own scores
        entries = [(item, 1.0 - rank / BATCH_RECS, "batch") for rank, item in enumerate(recs)]
        entries += [
            (item, rng.random(), source)
            for source in ("als", "covisit", "popular")
            for item in recs
            if rng.random() < 0.5
        ]
        pipe.set(keys.user_recs(version, user), encode_recs(entries))
        # the pool scorers' inputs of every rec, from a generator of their own (other keys unchanged)
        pipe.set(
            keys.user_pool_inputs(version, user),
            encode_feature_rows([[pool_rng.random() for _ in POOL_INPUTS] for _ in recs]),
        )
        pipe.set(
            keys.user_features(version, user), encode_features([rng.random() * 100 for _ in USER_INPUTS])
        )
        pipe.set(
            keys.user_category_affinity(version, user),
            msgpack.packb({f"c{c}": rng.random() for c in range(5)}),
        )
        pipe.set(keys.user_history(version, user), encode_ids(rng.sample(items, 20)))
        liked = genre_rng.sample(genres, 8)
        pipe.set(keys.user_genre_profile(version, user), msgpack.packb({g: 1 / len(liked) for g in liked}))
        pipe.zadd(
            keys.recent_items(user), {rng.choice(items): now_ms - rng.randint(0, 600_000) for _ in range(5)}
        )
        pipe.hset(keys.session_counters(user), mapping={"type:view": 3, f"cat:c{n % N_CATEGORIES}": 3})
        if n % 500 == 499:
            pipe.execute()
    pipe.set(keys.batch_pointer, version)
    pipe.execute()


# -- the server process -----------------------------------------------------------------------------------
# -- the load generator -------------------------------------------------------------------------------------
async def open_loop(port: int, rate: int, duration_s: float, rng: random.Random, pid: int) -> dict:
    """Send GETs at `rate` per second on a fixed schedule for `duration_s`; one in five is preceded
    (20 ms earlier) by an event for the same user. Returns latency percentiles (ms), error rate and
    the server's CPU and peak RSS over the run."""
    import resource

    import aiohttp
    import psutil

    server = ServerTree(psutil.Process(pid))
    loop = asyncio.get_running_loop()
    now = time.perf_counter  # not loop.time(): uvloop's is cached per loop iteration, in whole milliseconds
    base = f"http://127.0.0.1:{port}"
    latencies: list[float] = []
    errors = degraded = events_failed = 0
    connector = aiohttp.TCPConnector(limit=512, force_close=False)
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def get(user: str, scheduled: float) -> None:
            nonlocal errors, degraded
            try:
                async with session.get(f"{base}/v1/recommendations/{user}", params={"k": str(K)}) as response:
                    body = await response.read()
                    if response.status != 200:
                        errors += 1
                    elif b'"degraded":true' in body:
                        degraded += 1
            except (TimeoutError, aiohttp.ClientError):
                errors += 1
            # failed and timed-out requests count too: a server that sheds load must not look fast
            latencies.append((now() - scheduled) * 1000)

        async def post_event(user: str, n: int) -> None:
            nonlocal events_failed
            event = {
                "event_id": f"b{pid}-{n}-{rng.random()}",
                "user_id": user,
                "item_id": f"i{rng.randrange(N_ITEMS)}",
                "event_type": "click",
                "ts": int(time.time() * 1000),
            }
            try:
                async with session.post(f"{base}/v1/events", json=event) as response:
                    await response.read()
                    events_failed += response.status != 202
            except (TimeoutError, aiohttp.ClientError):
                events_failed += 1

        total = int(rate * duration_s)
        interval = 1.0 / rate
        tasks: list[asyncio.Task] = []
        rss_peak = 0
        cpu_before = server.cpu_times()
        own_before = resource.getrusage(resource.RUSAGE_SELF)
        started = now()
        next_rss = started
        for n in range(total):
            scheduled = started + n * interval
            delay = scheduled - now()
            if delay > 0:
                await asyncio.sleep(delay)
            user = f"u{rng.randrange(N_USERS)}"
            if n % 5 == 0:
                tasks.append(loop.create_task(post_event(user, n)))
                scheduled += 0.02

                async def later(u: str = user, at: float = scheduled) -> None:
                    await asyncio.sleep(max(0.0, at - now()))
                    await get(u, at)

                tasks.append(loop.create_task(later()))
            else:
                tasks.append(loop.create_task(get(user, scheduled)))
            if now() >= next_rss:
                rss_peak = max(rss_peak, server.memory_info().rss)
                next_rss += 0.5
        await asyncio.gather(*tasks)
        wall = now() - started
        cpu_after = server.cpu_times()
        own_after = resource.getrusage(resource.RUSAGE_SELF)
        rss_peak = max(rss_peak, server.memory_info().rss)
    cpu_s = (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system)
    own_s = (own_after.ru_utime - own_before.ru_utime) + (own_after.ru_stime - own_before.ru_stime)
    stats = percentiles(latencies)
    return {
        "rate": rate,
        "requests": total,
        "achieved_rps": round(total / wall, 1),
        **{k: round(v, 3) for k, v in stats.items()},
        "error_rate": round(errors / total, 5),
        "degraded": degraded,
        "event_errors": events_failed,
        "server_cpu_percent": round(100 * cpu_s / wall, 1),
        # CPU time per GET (the events sent with them included): unlike latency, hardly moved by a
        # neighbour's load on the shared machine, so the figure to compare variants and commits by
        "server_cpu_ms_per_request": round(1000 * cpu_s / total, 3),
        "client_cpu_ms_per_request": round(1000 * own_s / total, 3),
        "server_rss_mb": round(rss_peak / 2**20, 1),
    }


class ServerTree:
    """CPU times and RSS of `lambdarec serve` and its worker processes (--workers N) together."""

    def __init__(self, root) -> None:
        self.root = root

    def _processes(self) -> list:
        return [self.root, *self.root.children(recursive=True)]

    def cpu_times(self):
        from types import SimpleNamespace

        times = [p.cpu_times() for p in self._processes()]
        return SimpleNamespace(user=sum(t.user for t in times), system=sum(t.system for t in times))

    def memory_info(self):
        from types import SimpleNamespace

        return SimpleNamespace(rss=sum(p.memory_info().rss for p in self._processes()))


def highest_rate_within(rows: list[dict], p99_ms: float = 10.0) -> int | None:
    """The highest rate of an ascending ladder whose p99 is at most `p99_ms` with no error, counting
    only rates below the first that misses (a ladder stops there); None when the first misses."""
    best = None
    for row in sorted(rows, key=lambda r: r["rate"]):
        if row["p99"] > p99_ms or row["error_rate"] > 0:
            break
        best = row["rate"]
    return best


def pin(pid: int, cpus: set[int]) -> bool:
    """Pin every thread of a process to `cpus` (BENCH_SERVING_PIN: server on one core, load
    generator and redis-server on the other, so neither steals the other's cache or time slice)."""
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            os.sched_setaffinity(int(task.name), cpus)
        return True
    except (OSError, ValueError):
        return False


def _run_variant(
    name: str,
    env: dict[str, str],
    rates: tuple[int, ...],
    duration_s: float,
    work: Path,
    server_cpus: set[int] | None = None,
    off: tuple[str, ...] = (),
) -> list[dict]:
    process, port, ready = start_ready(env, work / f"serve-{name}.log", off=off)
    if server_cpus:
        pin(process.pid, server_cpus)
    try:
        rng = random.Random(hash(name) & 0xFFFF)
        run_load(open_loop(port, 100, min(3.0, duration_s), rng, process.pid))  # warm-up, not recorded
        rows = []
        for rate in rates:
            load_before = os.getloadavg()[0]
            row = run_load(open_loop(port, rate, duration_s, rng, process.pid))
            row.update(
                variant=name,
                model_backend=ready["model"]["backend"],
                load_average_1m=round(max(load_before, os.getloadavg()[0]), 2),
            )
            rows.append(row)
            print(
                f"   {name:14s} {rate:5d} rps: p50 {row['p50']:.2f} ms  p99 {row['p99']:.2f} ms  errors {row['error_rate']:.3%}  "
                f"cpu {row['server_cpu_percent']}% ({row['server_cpu_ms_per_request']} ms/request)  load {row['load_average_1m']}",
                flush=True,
            )
        return rows
    finally:
        stop_server(process)


# BENCH_SERVING_CAPACITY=1: for 1 and 2 workers, the highest rate of this ladder with p99 <= 10 ms and
# no error (failed and timed-out requests count in the latency), and the server's CPU per request.
CAPACITY_RATES = (100, 200, 300, 500, 700, 800, 900, 1000, 1200, 1400, 1600)
CAPACITY_P99_MS = 10.0


def _capacity(
    workers: int, env: dict[str, str], duration_s: float, work: Path, cpus: list[int] | None
) -> dict:
    """Climb CAPACITY_RATES against `lambdarec serve --workers N` until a rate misses the p99 goal.
    Pinned (`cpus`): worker i on cpus[i % len]; the load generator and redis-server stay where run()
    put them (the last cores), so with one worker they are apart from it."""
    process, port, ready = start_ready(env, work / f"serve-capacity-{workers}.log", workers=workers)
    try:
        import psutil

        # one worker is the server process itself; several are its children
        # (uvicorn's workers are multiprocessing spawns; its resource tracker is a child too)
        servers = (
            [c for c in psutil.Process(process.pid).children() if "spawn_main" in " ".join(c.cmdline())]
            if workers > 1
            else [psutil.Process(process.pid)]
        )
        if cpus:
            for index, server in enumerate(servers):
                pin(server.pid, {cpus[index % len(cpus)]})
        rng = random.Random(workers)
        run_load(open_loop(port, 100, min(3.0, duration_s), rng, process.pid))  # warm-up, not recorded
        rows = []
        for rate in CAPACITY_RATES:
            row = run_load(open_loop(port, rate, duration_s, rng, process.pid))
            row.update(workers=workers, load_average_1m=round(os.getloadavg()[0], 2))
            rows.append(row)
            print(
                f"   workers {workers} {rate:5d} rps: p99 {row['p99']:.2f} ms  errors {row['error_rate']:.3%}  "
                f"cpu {row['server_cpu_ms_per_request']} ms/request  load {row['load_average_1m']}",
                flush=True,
            )
            if highest_rate_within(rows, CAPACITY_P99_MS) != rate:
                break
        return {
            "workers": workers,
            "worker_pids": [p.pid for p in servers],
            "rows": rows,
            "highest_rate_p99_within_10ms": highest_rate_within(rows, CAPACITY_P99_MS),
        }
    finally:
        stop_server(process)


# `make bench QUICK=1` has 15 minutes for every benchmark: it switches off only the optimizations the
# p99 goal rests on (cache, pipelined Redis reader); the full run does every variant.
QUICK_VARIANTS = ("default", "cache_off", "fast_redis_off")


def selected_variants(spec: str, quick: bool = False) -> list[str]:
    """The variants a comma-separated `spec` names (when empty: all, or QUICK_VARIANTS in quick mode),
    default first; unknown names are an error that lists the known ones."""
    names = [n.strip() for n in spec.split(",") if n.strip()] or list(QUICK_VARIANTS if quick else VARIANTS)
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        raise ValueError(f"unknown serving variants {unknown}; known: {sorted(VARIANTS)}")
    return ["default", *[n for n in names if n != "default"]]


@dataclass(frozen=True)
class ServingSetup:
    """What a serving benchmark runs against: a seeded redis-server, a champion in MLflow, and the
    environment `lambdarec serve` needs to use them."""

    client: object
    work: Path
    settings: object
    env: dict[str, str]
    version: str


@contextmanager
def serving_setup(pin_others: set[int] | None = None) -> Iterator[ServingSetup]:
    """A private redis-server seeded by seed_online_store, a LightGBM lambdarank (100 trees x 31
    leaves) registered as champion, in a temporary directory removed afterwards; `pin_others`: the
    CPUs for this process (the load generator) and redis-server."""
    import redis

    from feature_store.settings import Settings
    from lambdarec.redis_server import EmbeddedRedis

    with tempfile.TemporaryDirectory(prefix="lambdarec-bench-serving-") as tmp:
        work = Path(tmp)
        server = EmbeddedRedis(directory=work / "redis").start()
        raise_priority(server.process.pid)
        if pin_others:
            pin(os.getpid(), pin_others)
            pin(server.process.pid, pin_others)
        client = redis.Redis.from_url(server.url)
        try:
            seed_online_store(client)
            settings = Settings(data_dir=work, redis_url=server.url)
            version = register_ranker_files(
                settings, train_ranker_files(work / "ranker", seed=0, trees=100, leaves=31)
            )
            env = {
                **os.environ,
                "LAMBDAREC_DATA_DIR": str(work),
                "LAMBDAREC_REDIS_URL": server.url,
                "LAMBDAREC_MLFLOW_TRACKING_URI": settings.tracking_uri,
                "LAMBDAREC_MLFLOW_ARTIFACT_ROOT": settings.artifact_root,
                "LAMBDAREC_SERVING_MAX_CANDIDATES": str(CANDIDATES),
                "LAMBDAREC_MODEL_POLL_INTERVAL_S": "5",
            }
            yield ServingSetup(client, work, settings, env, version)
        finally:
            client.close()
            server.stop()


def run(quick: bool, out_dir: Path) -> dict:
    boosted = raise_priority()
    duration_s = float(os.environ.get("BENCH_SERVING_DURATION_S", 10.0 if quick else 60.0))
    # BENCH_SERVING_VARIANTS=default,cache_off runs only those (the default is always among them: the
    # other variants are quoted against it).
    variants = selected_variants(os.environ.get("BENCH_SERVING_VARIANTS", ""), quick)
    # Server alone on CPU 0, this process (the load generator) and redis-server on the others: on two
    # shared cores the p99 at 300 requests/s was lower pinned than not. BENCH_SERVING_PIN=0 turns it off.
    cpus = sorted(os.sched_getaffinity(0))
    pinned = os.environ.get("BENCH_SERVING_PIN", "1") == "1" and len(cpus) >= 2
    server_cpus = {cpus[0]} if pinned else None
    load_at_start = round(os.getloadavg()[0], 2)
    with serving_setup(pin_others=set(cpus[1:]) if pinned else None) as setup:
        client, work, base_env, version = setup.client, setup.work, setup.env, setup.version
        rows: list[dict] = []
        for name, variant in VARIANTS.items():
            if name not in variants:
                continue
            client.delete(setup.settings.bus.stream)
            rows += _run_variant(
                name, {**base_env, **variant.env}, RATES, duration_s, work, server_cpus, variant.off
            )
        capacity = []
        if os.environ.get("BENCH_SERVING_CAPACITY") == "1":
            for workers in (1, 2):
                client.delete(setup.settings.bus.stream)
                capacity.append(
                    _capacity(workers, base_env, duration_s, work, cpus[:workers] if pinned else None)
                )
    baseline = {r["rate"]: r for r in rows if r["variant"] == "default"}
    for row in rows:
        base = baseline[row["rate"]]
        row["p50_vs_default"] = round(row["p50"] / base["p50"], 2) if base["p50"] else None
        row["p99_vs_default"] = round(row["p99"] / base["p99"], 2) if base["p99"] else None
        row["cpu_ms_vs_default"] = (
            round(row["server_cpu_ms_per_request"] / base["server_cpu_ms_per_request"], 2)
            if base["server_cpu_ms_per_request"]
            else None
        )
    goal = baseline.get(300)
    result = {
        "machine": machine_info(),
        "quick": quick,
        "duration_s_per_rate": duration_s,
        # the machine is shared: a busy neighbour shows up here and in every latency
        "load_average_1m_at_start": load_at_start,
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        "priority_boost": boosted,
        "pinned": {"server_cpus": sorted(server_cpus), "others": cpus[1:]} if pinned else None,
        "model_version": version,
        "setup": {
            "users": N_USERS,
            "items": N_ITEMS,
            "batch_recs": BATCH_RECS,
            "candidates": CANDIDATES,
            "k": K,
            "model": "LightGBM lambdarank, 100 trees x 31 leaves, ONNX",
            "events": "1 in 5 requests preceded by an event (20 ms)",
        },
        "rows": rows,
        "capacity": capacity,
        "goal_p99_under_10ms_at_300rps": bool(goal and goal["p99"] < 10 and goal["error_rate"] == 0),
        "tables": [
            {
                "title": f"GET /v1/recommendations, open loop, {int(duration_s)} s per rate, {CANDIDATES} candidates, k={K}",
                "columns": [
                    "variant",
                    "rate",
                    "p50 ms",
                    "p95 ms",
                    "p99 ms",
                    "p99 vs default",
                    "errors",
                    "degraded",
                    "achieved rps",
                    "server CPU %",
                    "server CPU ms/request",
                    "CPU vs default",
                    "client CPU ms/request",
                    "server RSS MB",
                    "load avg",
                ],
                "rows": [
                    [
                        r["variant"],
                        r["rate"],
                        r["p50"],
                        r["p95"],
                        r["p99"],
                        r["p99_vs_default"],
                        r["error_rate"],
                        r["degraded"],
                        r["achieved_rps"],
                        r["server_cpu_percent"],
                        r["server_cpu_ms_per_request"],
                        r["cpu_ms_vs_default"],
                        r["client_cpu_ms_per_request"],
                        r["server_rss_mb"],
                        r["load_average_1m"],
                    ]
                    for r in rows
                ],
            }
        ],
        "plots": [
            {
                "title": "p99 latency by rate and variant",
                "x_label": "requests/s",
                "y_label": "p99 ms",
                "x": list(RATES),
                "log_y": True,
                "lines": {name: [r["p99"] for r in rows if r["variant"] == name] for name in variants},
            }
        ],
    }
    return write_result(out_dir, "serving", result)


if __name__ == "__main__":
    main(run)

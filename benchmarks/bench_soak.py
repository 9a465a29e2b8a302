"""Soak (issue 17): recommendations and events through the API into the running streaming job, for
10 minutes, on this machine.

Set-up as bench_serving and bench_faults build it: a private redis-server with append-only persistence,
the online store seeded (`seed_online_store`), a LightGBM lambdarank (100 trees) champion in MLflow,
the real streaming job as its own process (`start_speed_job`, `local[2]`, 1 GB driver, the default
20,000 rows per micro-batch) and `lambdarec serve` as its own process (3 s of warm-up not recorded).

Open-loop load for `duration_s` (600 s; quick: 60 s): GET /v1/recommendations at 300 requests/s (k=10,
200 candidates, users drawn from all 20,000) and POST /v1/events at 1,000 events/s as 20 requests/s of
50 events. Batches because a product backend sends its clicks in batches and the API takes up to 1,000
per request: 1,000 single-event requests/s would make this a test of 1,300 HTTP requests/s, not of the
issue's 300 requests/s of recommendations next to 1,000 events/s; 50 every 50 ms keeps the bus's arrivals
smooth against the speed query's 150 ms trigger. Requests leave on a fixed schedule whatever the server
does; latency is measured from the scheduled time, and a failed or timed-out request counts in it. A
batch answered 5xx or not at all is sent again (same event ids, up to 3 times, 1 s apart) as the API
asks; every answer counts in the status codes.

The events belong to 2,000 of the seeded users (every tenth, so one recommendation in ten is for a user
with live events), 8 items each out of i0-i79, categories as the catalog's; those users' and items'
seeded speed keys and the seeded trending are cleared first, so the speed features must equal the
ground truth of the accepted events (`speed_feature_mismatches`, all of them).

Recorded: status codes per endpoint (5xx and time-outs listed), recommendation latency p50/p95/p99/
p99.9/max overall and per minute, events accepted (the 202 bodies' counts), every 5 s the server's RSS
(`ServerTree`), the job's RSS, redis-server's memory and the streaming job's lag (how far each query's
committed bus offset is behind the newest entry, in bus time); at the end, once both queries committed
the newest entry, bronze rows and distinct ids against the events accepted.

Targets (`ok` = all met): no 5xx and no time-out; recommendation p99 <= 10 ms; server RSS growth from
the 60 s mark (quick: half the run; before it the API's batch cache fills as new users are asked for)
to the end < 10 %; bronze rows = distinct ids = events
accepted, the same ids; no speed-feature key off the ground truth of the events on the bus (those in
bronze: the accepted ones and any whose answer was lost after the publish).

The server, redis-server and this process (the load generator) run at a raised priority (nice -10, as
bench_serving; recorded as `priority_boost`), the streaming job at the normal one: what a deployment
that puts the latency path first does. BENCH_SOAK_BOOST=0 runs everything at the normal priority;
BENCH_SOAK_DURATION_S overrides the duration; BENCH_SOAK_WORKERS=N serves with `lambdarec serve --workers N`
(one process by default; the server's RSS is the whole process tree's).

`python -m benchmarks.bench_soak [--quick]` or `python -m benchmarks.run --only soak [--quick]`.

Why one module: one experiment (set-up, open-loop load, sampling, verdict, result file) read as one
script; its pure parts are unit-tested (tests/unit/test_bench_soak.py).
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from benchmarks.common import main, percentiles, raise_priority, run_load, start_ready, write_result

NAME = "soak"
REC_RATE = 300  # GET /v1/recommendations per second
EVENT_BATCHES_PER_S = 20  # POST /v1/events per second ...
EVENTS_PER_BATCH = 50  # ... of this many events: 1,000 events/s
K = 10
TIMEOUT_S = 10.0  # a request not answered by then counts as failed (status 0)
# A batch answered 5xx or not at all is sent again with the same event ids, as the API's 503 asks
# (`"published": "unknown"` means it may already be on the bus; every sink counts an id once), until it
# is accepted: then bronze must hold exactly the accepted events.
EVENT_RESENDS, RESEND_AFTER_S = 30, 1.0
SAMPLE_EVERY_S = 5.0
RSS_GROWTH_FROM_S = 60.0  # full run; a quick run measures from a quarter of its duration
P99_TARGET_MS = 10.0
RSS_GROWTH_TARGET_PCT = 10.0
EVENT_USER_STEP = 10  # events for u0, u10, u20, ...: 2,000 of bench_serving's 20,000 users
EVENT_ITEMS = 80  # i0..i79
ITEMS_PER_USER = 8  # <= the speed layer's 20 co-visitation session items, so the ground truth holds
KINDS = ("view", "view", "view", "click", "add_to_cart", "purchase", "rating")
REC, EVENTS = "rec", "events"


# -- pure parts (tests/unit/test_bench_soak.py) ---------------------------------------------------------
def schedule(duration_s: float, rec_rate: int, batch_rate: int) -> list[tuple[float, str]]:
    """(seconds from the start, REC or EVENTS) of every request, in time order (a recommendation first
    when both fall on the same moment)."""
    plan = [(n / rec_rate, REC) for n in range(int(duration_s * rec_rate))]
    plan += [(n / batch_rate, EVENTS) for n in range(int(duration_s * batch_rate))]
    return sorted(plan, key=lambda p: (p[0], p[1] != REC))


def soak_events(first: int, count: int, ts_ms: int, users: int) -> list[dict]:
    """Events `s<first>`.. of `users` event users (`u0`, `u10`, ...): event n goes to user n*7919 mod
    `users` (every user once per `users` events), on that user's next item of its ITEMS_PER_USER (user
    index u: items u + 11 j mod EVENT_ITEMS, j < ITEMS_PER_USER), the item's catalog category."""
    from benchmarks.bench_serving import N_CATEGORIES

    events = []
    for n in range(first, first + count):
        user = (n * 7919) % users
        item = (user + 11 * ((n // users) % ITEMS_PER_USER)) % EVENT_ITEMS
        kind = KINDS[n % len(KINDS)]
        event = {
            "event_id": f"s{n}",
            "user_id": f"u{user * EVENT_USER_STEP}",
            "item_id": f"i{item}",
            "event_type": kind,
            "ts": ts_ms,
            "context": {"category": f"c{item % N_CATEGORIES}"},
        }
        if kind == "rating":
            event["value"] = 4.0
        events.append(event)
    return events


def latency_summary(latencies_ms: list[float]) -> dict[str, float]:
    return {k: round(v, 2) for k, v in percentiles(latencies_ms, (50, 95, 99, 99.9, 100)).items()}


def per_minute(records: list[tuple], width_s: float = 60.0) -> list[dict]:
    """Recommendation records (scheduled s, latency ms, status, ...) grouped by minute of the run:
    requests, answers other than 200, latency p50/p99/max."""
    groups: dict[int, list[tuple]] = {}
    for record in records:
        groups.setdefault(int(record[0] // width_s), []).append(record)
    rows = []
    for minute, group in sorted(groups.items()):
        stats = latency_summary([r[1] for r in group])
        rows.append(
            {
                "minute": minute,
                "requests": len(group),
                "non_200": sum(r[2] != 200 for r in group),
                "p50": stats["p50"],
                "p99": stats["p99"],
                "max": stats["p100"],
            }
        )
    return rows


def status_counts(records: list[tuple]) -> dict[str, int]:
    """HTTP status -> requests ("timeout/error" for a request with no answer, status 0)."""
    counts = Counter("timeout/error" if r[2] == 0 else str(r[2]) for r in records)
    return dict(sorted(counts.items()))


def failures(records: list[tuple], limit: int = 20) -> list[dict]:
    """The first `limit` requests answered 5xx or not at all, with their scheduled second."""
    bad = [r for r in records if r[2] == 0 or r[2] >= 500]
    return [{"at_s": r[0], "status": r[2], "latency_ms": round(r[1], 1)} for r in bad[:limit]]


def rss_growth_pct(samples: list[dict], from_s: float) -> float | None:
    """Server RSS at the end against the first sample at or after `from_s`, percent (None: no such
    sample)."""
    base = next((s["server_rss_mb"] for s in samples if s["t_s"] >= from_s), None)
    if not base:
        return None
    return round(100 * (samples[-1]["server_rss_mb"] - base) / base, 2)


def commit_lag_ms(newest_ms: int | None, committed_ms: int, oldest_ms: int | None) -> int | None:
    """How far a query's committed bus offset is behind the newest entry, in bus (entry-id) time; before
    the query's first commit (offset 0, the stream's start) from the oldest entry on the bus. None
    while the bus is empty."""
    if not newest_ms or not oldest_ms:
        return None
    return max(0, newest_ms - (committed_ms or oldest_ms))


def verdict(result: dict) -> dict[str, bool]:
    """Each target of issue 17, met or not."""
    bad = sum(
        n
        for endpoint in ("recommendations", "events")
        for status, n in result["status_counts"][endpoint].items()
        if status == "timeout/error" or int(status) >= 500
    )
    accepted, bronze = result["events_accepted"], result["bronze"]
    growth = result["server_rss"]["growth_pct"]
    return {
        "no_5xx_or_timeout": bad == 0,
        "rec_p99_within_target": result["latency_ms"]["p99"] <= P99_TARGET_MS,
        "rss_growth_within_target": growth is not None and growth < RSS_GROWTH_TARGET_PCT,
        "bronze_equals_accepted": bronze["rows"] == bronze["distinct_ids"] == accepted
        and bronze["ids_equal_accepted"],
        "speed_features_match": result["feature_mismatches_count"] == 0,
    }


def table(result: dict) -> dict:
    lat, rss, bronze, checks = result["latency_ms"], result["server_rss"], result["bronze"], result["checks"]
    worst = max(result["per_minute"], key=lambda m: m["p99"]) if result["per_minute"] else None
    counts = result["status_counts"]

    def bad(endpoint: str) -> str:
        found = counts[endpoint]
        fives = sum(n for s, n in found.items() if s != "timeout/error" and int(s) >= 500)
        return f"{fives} / {found.get('timeout/error', 0)}"

    lag = result["stream_lag_ms_max"]
    return {
        "title": f"Soak: {result['duration_s']:.0f} s of {result['rec_rate']} recommendations/s and "
        f"{result['events_per_s']:,} events/s ({result['event_batches_per_s']} x {result['events_per_batch']}) "
        f"through the API ({result['api_workers']} worker{'s' if result['api_workers'] > 1 else ''}) into the streaming job",
        "columns": ["target", "expected", "found", "ok"],
        "rows": [
            [
                "5xx / time-outs: recommendations; events",
                "0 / 0; 0 / 0",
                f"{bad('recommendations')}; {bad('events')}",
                checks["no_5xx_or_timeout"],
            ],
            [
                "recommendation latency ms: p99 (p50 / p99.9 / max; worst minute's p99)",
                f"<= {P99_TARGET_MS:.0f}",
                f"{lat['p99']} ({lat['p50']} / {lat['p999']} / {lat['p100']}; "
                + (f"minute {worst['minute']}: {worst['p99']})" if worst else "-)"),
                checks["rec_p99_within_target"],
            ],
            [
                f"server RSS growth from {rss['from_s']:.0f} s to the end, %",
                f"< {RSS_GROWTH_TARGET_PCT:.0f}",
                f"{rss['growth_pct']} ({rss['at_from_mb']} -> {rss['end_mb']} MB)",
                checks["rss_growth_within_target"],
            ],
            [
                "bronze rows / distinct ids vs events accepted",
                f"{result['events_accepted']:,} / {result['events_accepted']:,}",
                f"{bronze['rows']:,} / {bronze['distinct_ids']:,} ({bronze['accepted_ids_missing']:,} accepted "
                f"missing, {bronze['ids_not_acknowledged']:,} not acknowledged)",
                checks["bronze_equals_accepted"],
            ],
            [
                "speed-feature keys off the ground truth",
                "0",
                str(result["feature_mismatches_count"]),
                checks["speed_features_match"],
            ],
            [
                "streaming lag at most, ms (speed / bronze commit); s to commit all after the load",
                "(no target)",
                f"{lag['speed']} / {lag['bronze']}; {result['seconds_to_commit_after_load']}",
                "",
            ],
        ],
    }


# -- measuring -----------------------------------------------------------------------------------------
class Sampler(threading.Thread):
    """Every SAMPLE_EVERY_S: the server's RSS (process tree), the job's RSS, redis-server's used memory,
    the events accepted so far, what the speed query processed, and each query's commit lag."""

    def __init__(self, server_pid: int, job_pid: int, url: str, stream: str, progress: dict) -> None:
        super().__init__(daemon=True)
        import psutil
        import redis

        from benchmarks.bench_serving import ServerTree

        self.server = ServerTree(psutil.Process(server_pid))
        self.job_pid, self.stream, self.progress = job_pid, stream, progress
        self.client = redis.Redis.from_url(url)
        self.samples: list[dict] = []
        self.done = threading.Event()

    def sample(self, t_s: float) -> dict:
        from benchmarks.bench_faults import status
        from benchmarks.common import process_tree_rss
        from feature_store.event_bus import entry_time_ms, read_committed
        from feature_store.redis_keys import RedisKeys

        newest = self.client.xrevrange(self.stream, count=1)
        newest_ms = entry_time_ms(newest[0][0]) if newest else None
        oldest = self.client.xrange(self.stream, count=1)
        oldest_ms = entry_time_ms(oldest[0][0]) if oldest else None
        committed = read_committed(self.client, self.stream)
        found = status(self.client, RedisKeys())
        return {
            "t_s": round(t_s, 1),
            "server_rss_mb": round(self.server.memory_info().rss / 2**20, 1),
            "job_rss_mb": round(process_tree_rss(self.job_pid) / 2**20, 1),
            "redis_mb": round(int(self.client.info("memory")["used_memory"]) / 2**20, 1),
            "accepted": self.progress["accepted"],
            "processed": int(found.get("processed", 0)),
            **{
                f"{query}_lag_ms": commit_lag_ms(
                    newest_ms, entry_time_ms(committed[query]) if query in committed else 0, oldest_ms
                )
                for query in ("speed", "bronze")
            },
            "job_lag_ms_p99": found.get("lag_ms_p99"),
        }

    def run(self) -> None:
        started = time.monotonic()
        while True:
            self.samples.append(self.sample(time.monotonic() - started))
            if self.done.wait(SAMPLE_EVERY_S):
                break


async def soak_load(port: int, plan: list[tuple[float, str]], users: int, event_users: int, progress: dict):
    """Send `plan` open loop. Returns the recommendation records (scheduled s, latency ms, status or 0,
    degraded), the event records (scheduled s, latency ms from the attempt's send, status or 0, events
    accepted, batch number, attempt: a batch answered 5xx or not at all is sent again) and the 5xx
    answers by text; `progress["accepted"]` counts the accepted events as they come."""
    import aiohttp
    import orjson

    now = time.perf_counter
    base = f"http://127.0.0.1:{port}"
    rng = random.Random(17)
    recs: list[tuple] = []
    posts: list[tuple] = []
    errors: Counter = Counter()
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1024), timeout=timeout) as session:

        async def send(
            kind: str, arg, scheduled: float, at: float, body: bytes = b"", attempt: int = 0
        ) -> None:
            code, extra = 0, 0
            try:
                if kind == REC:
                    request = session.get(f"{base}/v1/recommendations/{arg}", params={"k": str(K)})
                else:
                    first, ts_ms = arg * EVENTS_PER_BATCH, int(time.time() * 1000)
                    body = body or orjson.dumps(soak_events(first, EVENTS_PER_BATCH, ts_ms, event_users))
                    request = session.post(
                        f"{base}/v1/events", data=body, headers={"content-type": "application/json"}
                    )
                async with request as response:
                    answer = await response.read()
                    code = response.status
                    if kind == REC:
                        extra = b'"degraded":true' in answer
                    elif code == 202:
                        extra = orjson.loads(answer)["accepted"]
                        progress["accepted"] += extra
                    if code >= 500:
                        errors[f"{kind} {code}: {answer[:160].decode(errors='replace')}"] += 1
            except (TimeoutError, aiohttp.ClientError):
                pass
            latency_ms = (now() - scheduled) * 1000
            if kind == REC:
                recs.append((round(at, 3), latency_ms, code, extra))
                return
            posts.append((round(at, 3), latency_ms, code, extra, arg, attempt))
            if (code == 0 or code >= 500) and attempt < EVENT_RESENDS:
                # as the API asks: resend the same events (each event_id counts once wherever it lands)
                await asyncio.sleep(RESEND_AFTER_S)
                await send(kind, arg, now(), at, body, attempt + 1)

        tasks: set[asyncio.Task] = set()
        batches = 0
        started = now()
        for at, kind in plan:
            delay = started + at - now()
            if delay > 0:
                await asyncio.sleep(delay)
            if kind == REC:
                arg = f"u{rng.randrange(users)}"
            else:
                arg, batches = batches, batches + 1
            task = asyncio.create_task(send(kind, arg, started + at, at))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
    return sorted(recs), sorted(posts), dict(errors)


def clear_speed_keys(client, event_users: int) -> None:
    """Delete what seed_online_store wrote where the soak's events write (the event users' recent items
    and session, the event items' co-visitation, the trending windows), so the speed features after the
    run are exactly the accepted events' (speed_feature_mismatches)."""
    from feature_store.redis_keys import RedisKeys

    keys = RedisKeys()
    names = [keys.trending("1h"), keys.trending("15m")]
    for user in (f"u{n * EVENT_USER_STEP}" for n in range(event_users)):
        names += [keys.recent_items(user), keys.recent_meta(user), keys.session_counters(user)]
        names += [keys.recent_event_ids(user)]
    names += [keys.covisit(f"i{n}") for n in range(EVENT_ITEMS)]
    for start in range(0, len(names), 1000):
        client.delete(*names[start : start + 1000])


def soak(work: Path, duration_s: float, boost: bool, workers: int = 1) -> dict:
    import redis

    from benchmarks.bench_faults import (
        APPEND_ONLY,
        all_committed,
        delta_rows,
        job_env,
        status,
        stop_job,
        wait,
    )
    from benchmarks.bench_faults import timed_requests as warm_up
    from benchmarks.bench_serving import CANDIDATES, N_USERS, seed_online_store
    from feature_store.redis_keys import RedisKeys
    from feature_store.settings import Settings
    from lambdarec.redis_server import EmbeddedRedis
    from lambdarec.testing import (
        register_ranker_files,
        speed_feature_mismatches,
        start_speed_job,
        stop_server,
        train_ranker_files,
    )

    event_users = N_USERS // EVENT_USER_STEP
    server = EmbeddedRedis(directory=work / "redis", extra_args=APPEND_ONLY).start()
    client = redis.Redis.from_url(server.url)
    seed_online_store(client)
    clear_speed_keys(client, event_users)
    settings = Settings(data_dir=work / "data", redis_url=server.url)
    keys, stream = RedisKeys(), settings.bus.stream
    register_ranker_files(settings, train_ranker_files(work / "ranker", seed=0, trees=100, leaves=31))
    log = open(work / "job.log", "ab")
    job = start_speed_job(job_env(settings.data_dir, server.url, max_rows_per_batch=20_000), log)
    api = None
    try:
        wait(lambda: status(client, keys).get("state") == "running" or job.poll() is not None, 600, "the job")
        assert job.poll() is None, f"the streaming job exited; see {work / 'job.log'}"
        # raised only now: the job (started from this process) inherits nothing
        boost = boost and raise_priority() and raise_priority(server.process.pid)
        env = {
            **os.environ,
            "LAMBDAREC_DATA_DIR": str(settings.data_dir),
            "LAMBDAREC_REDIS_URL": server.url,
            "LAMBDAREC_MLFLOW_TRACKING_URI": settings.tracking_uri,
            "LAMBDAREC_MLFLOW_ARTIFACT_ROOT": settings.artifact_root,
            "LAMBDAREC_SERVING_MAX_CANDIDATES": str(CANDIDATES),
        }
        api, port, ready = start_ready(env, work / "serve.log", workers=workers)
        if not boost:
            raise_priority(api.pid, 0)  # start_ready raised it
        run_load(warm_up(port, 100, 3.0, N_USERS, lambda at: None))  # not recorded
        progress = {"accepted": 0}
        sampler = Sampler(api.pid, job.pid, server.url, stream, progress)
        plan = schedule(duration_s, REC_RATE, EVENT_BATCHES_PER_S)
        load_before = os.getloadavg()
        sampler.start()
        try:
            recs, posts, errors = run_load(soak_load(port, plan, N_USERS, event_users, progress))
        finally:
            sampler.done.set()
            sampler.join()
        load_after = os.getloadavg()
        commit_s = wait(lambda: all_committed(client, stream) or job.poll() is not None, 900, "the commits")
        job_alive = job.poll() is None
        last_status = status(client, keys)
    finally:
        if api is not None:
            stop_server(api)
        stop_job(job)
        log.close()
    try:
        ids = delta_rows(settings.data_dir, server.url)["event_ids"]
        # the speed features must hold every event on the bus once: the accepted ones and any whose
        # answer was lost (a 5xx or time-out after the publish ran)
        published = sorted({int(i[1:]) // EVENTS_PER_BATCH for i in ids})
        truth = (
            e for b in published for e in soak_events(b * EVENTS_PER_BATCH, EVENTS_PER_BATCH, 0, event_users)
        )
        mismatches = speed_feature_mismatches(client, keys, truth)
    finally:
        server.stop()
    accepted_batches = {p[4] for p in posts if p[3]}
    accepted = sum(p[3] for p in posts)
    expected_ids = {f"s{b * EVENTS_PER_BATCH + i}" for b in accepted_batches for i in range(EVENTS_PER_BATCH)}
    samples = sampler.samples
    # the first minute (quick: half the run) fills the API's batch cache as new users are asked for
    from_s = min(RSS_GROWTH_FROM_S, duration_s / 2)
    base = next((s for s in samples if s["t_s"] >= from_s), None)
    result = {
        "duration_s": duration_s,
        "rec_rate": REC_RATE,
        "api_workers": workers,
        "events_per_s": EVENT_BATCHES_PER_S * EVENTS_PER_BATCH,
        "event_batches_per_s": EVENT_BATCHES_PER_S,
        "events_per_batch": EVENTS_PER_BATCH,
        "model_backend": ready["model"]["backend"],
        "priority_boost": boost,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        "requests": {"recommendations": len(recs), "events": len(posts)},
        "status_counts": {"recommendations": status_counts(recs), "events": status_counts(posts)},
        "failures": {"recommendations": failures(recs), "events": failures(posts)},
        "answers_5xx_by_text": errors,
        "event_batches_resent": sum(p[5] > 0 for p in posts),
        "event_batches_never_accepted": len({p[4] for p in posts} - accepted_batches),
        "degraded": sum(bool(r[3]) for r in recs),
        "latency_ms": latency_summary([r[1] for r in recs]),
        "per_minute": per_minute(recs),
        "event_post_latency_ms": latency_summary([p[1] for p in posts]),
        "events_sent": len({p[4] for p in posts}) * EVENTS_PER_BATCH,
        "events_accepted": accepted,
        "server_rss": {
            "from_s": from_s,
            "at_from_mb": base["server_rss_mb"] if base else None,
            "end_mb": samples[-1]["server_rss_mb"],
            "max_mb": max(s["server_rss_mb"] for s in samples),
            "growth_pct": rss_growth_pct(samples, from_s),
        },
        "stream_lag_ms_max": {
            q: max((s[f"{q}_lag_ms"] for s in samples if s[f"{q}_lag_ms"] is not None), default=None)
            for q in ("speed", "bronze")
        },
        "seconds_to_commit_after_load": round(commit_s, 1),
        "job_alive_at_end": job_alive,
        "job_restarts": int(last_status.get("speed_restarts", 0))
        + int(last_status.get("bronze_restarts", 0)),
        "bronze": {
            "rows": len(ids),
            "distinct_ids": len(set(ids)),
            "ids_equal_accepted": len(ids) == len(expected_ids) and set(ids) == expected_ids,
            "accepted_ids_missing": len(expected_ids - set(ids)),
            "ids_not_acknowledged": len(set(ids) - expected_ids),
        },
        "feature_mismatches_count": len(mismatches),
        "feature_mismatches": mismatches[:20],
        "samples": samples,
    }
    result["checks"] = verdict(result)
    result["ok"] = all(result["checks"].values())
    return result


def run(quick: bool, out_dir: Path) -> dict:
    duration_s = float(os.environ.get("BENCH_SOAK_DURATION_S", 60.0 if quick else 600.0))
    boost = os.environ.get("BENCH_SOAK_BOOST", "1") == "1"
    workers = int(os.environ.get("BENCH_SOAK_WORKERS", "1"))
    work = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    result: dict = {}
    try:
        result = soak(work, duration_s, boost, workers)
    finally:
        if result.get("ok"):
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work} (a target was missed or the run failed)", flush=True)
    samples = result["samples"]
    result["quick"] = quick
    result["tables"] = [table(result)]
    result["plots"] = [
        {
            "title": "Soak: server RSS",
            "x_label": "s",
            "y_label": "MB",
            "x": [s["t_s"] for s in samples],
            "lines": {"lambdarec serve": [s["server_rss_mb"] for s in samples]},
        },
        {
            "title": "Soak: recommendation latency by minute",
            "x_label": "minute",
            "y_label": "ms",
            "x": [m["minute"] for m in result["per_minute"]],
            "lines": {p: [m[p] for m in result["per_minute"]] for p in ("p50", "p99", "max")},
            "log_y": True,
        },
        {
            "title": "Soak: streaming job's commit lag",
            "x_label": "s",
            "y_label": "ms behind the newest bus entry",
            "x": [s["t_s"] for s in samples],
            "lines": {q: [s[f"{q}_lag_ms"] or 0 for s in samples] for q in ("speed", "bronze")},
        },
    ]
    return write_result(out_dir, NAME, result)


if __name__ == "__main__":
    main(run)

"""Faults survived: the speed layer under the faults a production run meets, checked against ground truth.

Each scenario runs the real streaming job as its own process (`lambdarec.testing.start_speed_job`,
`local[2]`, a 1 GB driver) on a private redis-server with append-only persistence (as infra/production
runs it) and private Delta tables, then compares what bronze, quarantine and the speed features hold
with what the published events must leave there (`lambdarec.testing.speed_feature_mismatches`).

- `chaos`: N good events with 5 % malformed lines among them on the bus; the job is SIGKILLed (its whole
  process group: JVM and Python workers, no clean-up) at K random moments and started again each time,
  and redis-server is SIGKILLed once right after a burst of acknowledged publishes and started again from
  its append-only file. Expected: bronze holds each good event id once, quarantine each bad line once,
  the speed features equal the ground truth.
- `poison`: one 64 MB entry and 5,000 events with a 200 KB context on the bus, then 100 normal events.
  Expected: the job keeps running (one pid throughout), the entries above the bus limit
  (`LAMBDAREC_STREAM_MAX_EVENT_BYTES`: the big one, and the wide ones too at the default 64 KiB) are
  quarantined `oversize` by their byte size without being decoded, any below it `context_too_large`,
  and the 100 normal events become features; the seconds from their publish until the last is counted
  are reported (the issue's target: 30 s).

- `partition`: `lambdarec serve` (a champion loaded, the online store seeded and requests shaped as
  bench_serving's, 3 s of warm-up not recorded) answers 200 requests/s while its redis-server is frozen with SIGSTOP for 30 s (no reply and no reset:
  what a silent network partition looks like to the API), then thawed. Expected: every answer a 200,
  within twice the Redis budget while frozen (degraded), and the first non-degraded answer within 2 s
  of the thaw. Every request counts in the latencies, failed ones too.

Of the chaos kills, one lands 0.5 s into a bronze micro-batch's Delta MERGEs and one after half of a speed
micro-batch's shards reached Redis (spark_jobs.streaming.failpoints: the job kills its own process
group there); the others at random moments. Each kill records the job's counters at that moment and the
bronze data files no commit adds (evidence that the kill landed between writing files and committing).

Why one module: three scenarios of one experiment that share their set-up (a private redis-server, the
job as its own process, ground-truth checks) and one result table; each reads top to bottom.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

from benchmarks.common import REPO, main, percentiles, start_ready, write_result
from spark_jobs.streaming.failpoints import BRONZE_WRITE, ENV, REDIS_APPLY

NAME = "faults"
APPEND_ONLY = ("--appendonly", "yes", "--appendfsync", "always")  # as infra/production runs it
NORMAL_VISIBLE_TARGET_S = 30.0  # poison: normal events counted within this many seconds of their publish


def job_env(data_dir: Path, redis_url: str, max_rows_per_batch: int = 200) -> dict[str, str]:
    from feature_store.settings import project_root

    return {
        **os.environ,
        "LAMBDAREC_DATA_DIR": str(data_dir),
        "LAMBDAREC_JARS_DIR": str(project_root() / ".cache" / "jars"),
        "LAMBDAREC_REDIS_URL": redis_url,
        "LAMBDAREC_SPARK_MASTER": "local[2]",
        "LAMBDAREC_SPARK_SHUFFLE_PARTITIONS": "2",
        "LAMBDAREC_SPARK_DRIVER_MEMORY": "1g",
        "LAMBDAREC_STREAM_MAX_ROWS_PER_BATCH": str(max_rows_per_batch),
        "PYTHONPATH": str(REPO),
    }


def wait(condition, timeout_s: float, what: str, interval_s: float = 0.2) -> float:
    """Seconds until `condition()` held; raises after `timeout_s`."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(interval_s)
    return time.monotonic() - started


def status(client, keys) -> dict[str, str]:
    import redis

    try:
        return {k.decode(): v.decode() for k, v in client.hgetall(keys.speed_status).items()}
    except redis.RedisError:
        return {}


def counted(client, keys) -> tuple[int, int]:
    found = status(client, keys)
    return int(found.get("processed", 0)), int(found.get("quarantined", 0))


def kill_group(job: subprocess.Popen) -> None:
    if job.poll() is None:
        os.killpg(job.pid, signal.SIGKILL)
    job.wait()


def stop_job(job: subprocess.Popen) -> None:
    if job.poll() is None:
        job.terminate()
        try:
            job.wait(timeout=120)
        except subprocess.TimeoutExpired:
            kill_group(job)


def all_committed(client, stream: str) -> bool:
    from feature_store.event_bus import read_committed

    newest = client.xrevrange(stream, count=1)
    if not newest:
        return False
    target = newest[0][0].decode()
    return read_committed(client, stream) == {"speed": target, "bronze": target}


def delta_rows(data_dir: Path, redis_url: str) -> dict[str, list]:
    """(event ids in bronze/events, reasons in bronze/quarantine), read by a Spark session of this process
    once the job has stopped."""
    from feature_store.settings import Settings
    from feature_store.tables import BRONZE_EVENTS, QUARANTINE
    from spark_jobs.session import build_spark

    settings = Settings(
        data_dir=data_dir, redis_url=redis_url, spark_master="local[2]", spark_shuffle_partitions=2
    )
    spark = build_spark(settings)

    def column(table, name: str) -> list:
        path = Path(settings.table_path(table.name))
        if not (path / "_delta_log").is_dir():  # the job never committed to it
            return []
        return [r[0] for r in spark.read.format("delta").load(str(path)).select(name).collect()]

    try:
        return {"event_ids": column(BRONZE_EVENTS, "event_id"), "reasons": column(QUARANTINE, "reason")}
    finally:
        spark.stop()


AIMED_KILLS = (
    # (where, LAMBDAREC_FAILPOINT): the bronze kill lands 0.5 s into the MERGEs (the JVM is scanning,
    # writing files or committing), the Redis one after half of a micro-batch's shards are written
    ("inside a bronze Delta MERGE", f"{BRONZE_WRITE}:0.5"),
    ("inside a Redis apply", REDIS_APPLY),
)


def kill_plan(kills: int, random_points: list[int]) -> list[dict]:
    """`kills` SIGKILLs of the job: the aimed ones (AIMED_KILLS) second and fourth, the others at the
    given counts of processed lines, in increasing order."""
    points = sorted(random_points)[: kills - min(kills, len(AIMED_KILLS))]
    plan = [{"fault": "SIGKILL job (random moment)", "at": at, "failpoint": None} for at in points]
    for slot, (where, failpoint) in zip((1, 3), AIMED_KILLS, strict=False):
        if len(plan) < kills:
            aimed = {"fault": f"SIGKILL job {where}", "at": None, "failpoint": failpoint}
            plan.insert(min(slot, len(plan)), aimed)
    return plan


def uncommitted_data_files(table: Path) -> set[str]:
    """Data files of a Delta table that no commit in its log adds: what a writer killed between writing
    its files and committing them leaves behind (harmless: readers never see them; VACUUM removes them)."""
    import json

    log = table / "_delta_log"
    if not log.is_dir():
        return set()
    added = set()
    for commit in log.glob("*.json"):
        for line in commit.read_text().splitlines():
            action = json.loads(line)
            if "add" in action:
                added.add(action["add"]["path"])
    written = {str(p.relative_to(table)) for p in table.rglob("*.parquet") if "_delta_log" not in p.parts}
    return written - added


def chaos(work: Path, lines_count: int, kills: int, seed: int = 11) -> dict:
    import redis

    from feature_store.event_bus import publish_events
    from feature_store.redis_keys import RedisKeys
    from feature_store.settings import Settings
    from lambdarec.redis_server import EmbeddedRedis
    from lambdarec.testing import shop_events, speed_feature_mismatches, start_speed_job

    rng = random.Random(seed)
    server = EmbeddedRedis(directory=work / "redis", extra_args=APPEND_ONLY).start()
    port, url = server.port, server.url
    client = redis.Redis.from_url(url)
    settings = Settings(data_dir=work / "data", redis_url=url)
    keys, stream = RedisKeys(settings.redis.key_prefix), settings.bus.stream
    bad_count = lines_count // 20  # 5 % of the lines are malformed
    good_count = lines_count - bad_count
    burst = good_count // 10  # published just before redis-server is killed
    good = shop_events(good_count, int(time.time() * 1000) - good_count * 100 - 60_000, seed=seed)
    lines: list = good[: good_count - burst]
    for n in range(bad_count):
        lines.insert(rng.randrange(len(lines) + 1), f"malformed line {n}")
    publish_events(client, stream, lines)
    # small batches: the backlog takes many micro-batches, so the kills land mid-run
    env = job_env(settings.data_dir, url, max_rows_per_batch=40)
    log = open(work / "job.log", "ab")
    plan = kill_plan(kills, rng.sample(range(1, len(lines)), kills))
    record: list[dict] = []
    started = time.monotonic()
    job = start_speed_job(env, log)
    try:
        for kill in plan:
            if kill["at"] is None:  # aimed: the job kills itself at the armed point
                stop_job(job)
                job = start_speed_job({**env, ENV: kill["failpoint"]}, log)
                wait(lambda job=job: job.poll() is not None, 900, f"the job to reach {kill['failpoint']}")
            else:
                wait(
                    lambda at=kill["at"], job=job: sum(counted(client, keys)) >= at or job.poll() is not None,
                    900,
                    f"{kill['at']} lines counted",
                )
                kill_group(job)
            processed, quarantined = counted(client, keys)
            record.append(
                {
                    "fault": kill["fault"],
                    "processed": processed,
                    "quarantined": quarantined,
                    "bronze_data_files_not_in_the_log": len(
                        uncommitted_data_files(Path(settings.table_path("bronze/events")))
                    ),
                }
            )
            job = start_speed_job(env, log)
        ids = publish_events(client, stream, good[good_count - burst :])
        assert len(ids) == burst
        processed, quarantined = counted(client, keys)
        server.process.kill()  # SIGKILL: no shutdown save, only what the append-only file holds
        server.process.wait()
        server = EmbeddedRedis(directory=work / "redis", port=port, extra_args=APPEND_ONLY).start()
        record.append(
            {
                "fault": "SIGKILL redis-server",
                "processed": processed,
                "quarantined": quarantined,
                "bus_entries_after_restart": client.xlen(stream),
            }
        )
        wait(lambda: counted(client, keys) == (good_count, bad_count), 1800, "every line to be counted")
        wait(lambda: all_committed(client, stream), 900, "both queries to commit the newest entry")
        seconds = time.monotonic() - started
        mismatches = speed_feature_mismatches(client, keys, good)
        stop_job(job)
        last = status(client, keys)
        restarts = int(last.get("speed_restarts", 0)) + int(last.get("bronze_restarts", 0))
    finally:
        kill_group(job)
        log.close()
    rows = delta_rows(settings.data_dir, url)
    server.stop()
    ids = rows["event_ids"]
    return {
        "lines": lines_count,
        "events": good_count,
        "malformed_lines": bad_count,
        "burst_before_redis_kill": burst,
        "faults": record,
        "seconds_to_settle": round(seconds, 1),
        "query_restarts_in_last_job": restarts,
        "bronze_rows": len(ids),
        "bronze_distinct_ids": len(set(ids)),
        "bronze_ids_equal_published": sorted(ids) == sorted(e["event_id"] for e in good),
        "quarantine_rows": len(rows["reasons"]),
        "quarantine_reasons": {r: rows["reasons"].count(r) for r in sorted(set(rows["reasons"]))},
        "feature_mismatches": mismatches[:20],
        "ok": sorted(ids) == sorted(e["event_id"] for e in good)
        and rows["reasons"] == ["malformed"] * bad_count
        and not mismatches,
    }


def poison_reasons(wide_reason: str, wide_events: int) -> dict[str, int]:
    """Quarantine rows expected by reason: the big entry (oversize) and the wide events."""
    return dict(sorted((Counter(oversize=1) + Counter({wide_reason: wide_events})).items()))


def poison(work: Path, big_mb: int, wide_events: int, context_kb: int, normal: int = 100) -> dict:
    import redis

    from feature_store.event_bus import encode_payload, publish_events
    from feature_store.redis_keys import RedisKeys
    from feature_store.settings import Settings
    from lambdarec.redis_server import EmbeddedRedis
    from lambdarec.testing import shop_events, speed_feature_mismatches, start_speed_job

    server = EmbeddedRedis(directory=work / "redis", extra_args=APPEND_ONLY).start()
    client = redis.Redis.from_url(server.url)
    settings = Settings(data_dir=work / "data", redis_url=server.url)
    keys, stream = RedisKeys(settings.redis.key_prefix), settings.bus.stream
    t0 = int(time.time() * 1000) - 120_000
    big = {"event_id": "big", "user_id": "p0", "item_id": "i0", "event_type": "view", "ts": t0}
    big["context"] = {"blob": "x" * (big_mb * 2**20)}
    pad = "y" * (context_kb * 1024)
    wide = [
        {
            "event_id": f"wide{n}",
            "user_id": f"p{n % 50}",
            "item_id": f"i{n % 8}",
            "event_type": "view",
            "ts": t0 + n,
            "context": {"blob": pad},
        }
        for n in range(wide_events)
    ]
    # an entry above the bus limit is quarantined `oversize` undecoded, one below it `context_too_large`
    wide_reason = (
        "oversize" if len(encode_payload(wide[0])) > settings.stream.max_event_bytes else "context_too_large"
    )
    expected_reasons = poison_reasons(wide_reason, wide_events)
    publish_events(client, stream, [big])
    for start in range(0, wide_events, 250):  # 50 MB a round trip
        publish_events(client, stream, wide[start : start + 250])
    log = open(work / "job.log", "ab")
    # the job as deployed (its default rows per micro-batch), not chaos' small batches
    job = start_speed_job(job_env(settings.data_dir, server.url, settings.stream.max_rows_per_batch), log)
    try:
        wait(lambda: status(client, keys).get("state") == "running", 600, "the job to start")
        pid = status(client, keys)["pid"]
        normal_events = shop_events(normal, int(time.time() * 1000) - 60_000, seed=5, first=0)
        publish_events(client, stream, normal_events)
        visible_s = wait(
            lambda: counted(client, keys) == (normal, 1 + wide_events) or job.poll() is not None,
            1800,
            "the normal events to be counted",
        )
        job_alive = job.poll() is None and status(client, keys).get("pid") == pid
        wait(lambda: all_committed(client, stream) or job.poll() is not None, 900, "bronze to commit")
        mismatches = speed_feature_mismatches(client, keys, normal_events)
        found = status(client, keys)
        stop_job(job)
    finally:
        kill_group(job)
        log.close()
    rows = delta_rows(settings.data_dir, server.url)
    server.stop()
    reasons = {r: rows["reasons"].count(r) for r in sorted(set(rows["reasons"]))}
    return {
        "big_entry_mb": big_mb,
        "wide_events": wide_events,
        "wide_context_kb": context_kb,
        "normal_events": normal,
        "job_kept_running": job_alive,
        "seconds_publish_to_normal_counted": round(visible_s, 1),
        "quarantined_by_reason": {
            k.removeprefix("quarantined:"): int(v) for k, v in found.items() if k.startswith("quarantined:")
        },
        "expected_reasons": expected_reasons,
        "quarantine_reasons": reasons,
        "bronze_rows": len(rows["event_ids"]),
        "feature_mismatches": mismatches[:20],
        "target_s": NORMAL_VISIBLE_TARGET_S,
        "ok": job_alive
        and visible_s <= NORMAL_VISIBLE_TARGET_S
        and reasons == expected_reasons
        and sorted(rows["event_ids"]) == sorted(e["event_id"] for e in normal_events)
        and not mismatches,
    }


async def timed_requests(port: int, rate: int, duration_s: float, users: int, on_tick) -> list[tuple]:
    """GET /v1/recommendations at `rate` per second on a fixed schedule for `duration_s`; `on_tick(t)` is
    called with the seconds since the start before each request. Returns (scheduled s, latency ms,
    HTTP status or 0 for a failure, degraded, requests in flight when it was sent) per request."""
    import aiohttp

    now = time.perf_counter
    records: list[tuple] = []
    in_flight = 0
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1024), timeout=timeout) as session:

        async def get(user: str, scheduled: float, at: float) -> None:
            nonlocal in_flight
            waiting, status, degraded = in_flight, 0, False
            in_flight += 1
            try:
                async with session.get(
                    f"http://127.0.0.1:{port}/v1/recommendations/{user}", params={"k": "10"}
                ) as response:
                    body = await response.read()
                    status, degraded = response.status, b'"degraded":true' in body
            except (TimeoutError, aiohttp.ClientError):
                pass
            finally:
                in_flight -= 1
            records.append((round(at, 3), (now() - scheduled) * 1000, status, degraded, waiting))

        rng = random.Random(5)
        started = now()
        tasks = []
        for n in range(int(rate * duration_s)):
            at = n / rate
            on_tick(at)
            delay = started + at - now()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(get(f"u{rng.randrange(users)}", started + at, at)))
        await asyncio.gather(*tasks)
    return sorted(records)


def partition(work: Path, before_s: float, frozen_s: float, after_s: float, rate: int = 200) -> dict:
    import redis

    from benchmarks.bench_serving import CANDIDATES, N_USERS, seed_online_store
    from feature_store.settings import Settings
    from lambdarec.redis_server import EmbeddedRedis
    from lambdarec.testing import register_ranker_files, stop_server, train_ranker_files

    server = EmbeddedRedis(directory=work / "redis", extra_args=APPEND_ONLY).start()
    seed_online_store(redis.Redis.from_url(server.url))
    settings = Settings(data_dir=work, redis_url=server.url)
    register_ranker_files(settings, train_ranker_files(work / "ranker", seed=0, trees=100, leaves=31))
    env = {
        **os.environ,
        "LAMBDAREC_DATA_DIR": str(work),
        "LAMBDAREC_REDIS_URL": server.url,
        "LAMBDAREC_MLFLOW_TRACKING_URI": settings.tracking_uri,
        "LAMBDAREC_MLFLOW_ARTIFACT_ROOT": settings.artifact_root,
        # bench_serving's request shape (its p99 at 200-300 requests/s is the healthy baseline)
        "LAMBDAREC_SERVING_MAX_CANDIDATES": str(CANDIDATES),
    }
    api, port, _ = start_ready(env, work / "serve.log")
    asyncio.run(timed_requests(port, 100, 3.0, N_USERS, lambda at: None))  # warm-up, not recorded
    moments: dict[str, float] = {}

    def on_tick(at: float) -> None:
        if "frozen" not in moments and at >= before_s:
            os.kill(server.process.pid, signal.SIGSTOP)
            moments["frozen"] = at
        if "thawed" not in moments and at >= before_s + frozen_s:
            os.kill(server.process.pid, signal.SIGCONT)
            moments["thawed"] = at

    try:
        records = asyncio.run(timed_requests(port, rate, before_s + frozen_s + after_s, N_USERS, on_tick))
    finally:
        if server.process.poll() is None:
            os.kill(server.process.pid, signal.SIGCONT)
        stop_server(api)
        server.stop()
    frozen, thawed = moments["frozen"], moments["thawed"]
    before = [r for r in records if r[0] < frozen]
    during = [r for r in records if frozen <= r[0] < thawed]
    after = [r for r in records if r[0] >= thawed]

    def phase(rows: list[tuple]) -> dict:
        return {
            "requests": len(rows),
            "degraded": sum(r[3] for r in rows),
            "non_200": sum(r[2] != 200 for r in rows),
            **{k: round(v, 2) for k, v in percentiles([r[1] for r in rows], (50, 99, 100)).items()},
        }

    first_healthy = next((r[0] for r in after if r[2] == 200 and not r[3]), None)
    latencies = [r[1] for r in records]
    budget_ms = settings.serving.redis_budget_s * 1000
    return {
        "rate": rate,
        "seconds": {"before": before_s, "frozen": frozen_s, "after": after_s},
        "redis_budget_ms": budget_ms,
        "requests": len(records),
        "non_200": sum(r[2] != 200 for r in records),
        "latency_ms_all": {k: round(v, 2) for k, v in percentiles(latencies, (50, 99, 100)).items()},
        "latency_ms_frozen": {
            k: round(v, 2) for k, v in percentiles([r[1] for r in during], (50, 99, 100)).items()
        },
        "frozen_requests": len(during),
        "frozen_degraded": sum(r[3] for r in during),
        "max_in_flight": max(r[4] for r in records) + 1,
        "phases": {"before": phase(before), "frozen": phase(during), "after": phase(after)},
        "seconds_thaw_to_first_non_degraded": round(first_healthy - thawed, 3)
        if first_healthy is not None
        else None,
        "ok": all(r[2] == 200 for r in records)
        and max(r[1] for r in during) <= 2 * budget_ms
        and first_healthy is not None
        and first_healthy - thawed <= 2.0,
    }


def table(result: dict) -> dict:
    chaos_run, poison_run, cut = result["chaos"], result["poison"], result["partition"]
    job_kills = [f["fault"] for f in chaos_run["faults"] if f["fault"].startswith("SIGKILL job")]
    aimed = [f.removeprefix("SIGKILL job ") for f in job_kills if "random" not in f]
    return {
        "title": "Faults survived (the streaming job as its own process, redis-server with append-only persistence)",
        "columns": ["scenario", "injected", "checked", "expected", "found", "ok"],
        "rows": [
            [
                "chaos",
                f"{chaos_run['lines']:,} lines, {chaos_run['malformed_lines']} of them malformed; job SIGKILLed "
                f"{len(job_kills)}x ({', '.join([*aimed, f'{len(job_kills) - len(aimed)} at random moments'])}); "
                "redis-server SIGKILLed once after a burst of "
                f"{chaos_run['burst_before_redis_kill']} publishes",
                "bronze rows / distinct ids; quarantine rows; speed-feature keys off the ground truth",
                f"{chaos_run['events']:,} / {chaos_run['events']:,}; {chaos_run['malformed_lines']}; 0",
                f"{chaos_run['bronze_rows']:,} / {chaos_run['bronze_distinct_ids']:,}; "
                f"{chaos_run['quarantine_rows']}; {len(chaos_run['feature_mismatches'])}",
                chaos_run["ok"],
            ],
            [
                "poison",
                f"one {poison_run['big_entry_mb']} MB entry + {poison_run['wide_events']:,} events with a "
                f"{poison_run['wide_context_kb']} KB context, then {poison_run['normal_events']} normal "
                "events; 1 GB driver",
                "job pid unchanged; quarantine by reason; normal events in bronze; feature keys off; "
                "s until the normal events are counted",
                "yes; "
                + ", ".join(f"{k} {v:,}" for k, v in poison_run["expected_reasons"].items())
                + f"; {poison_run['normal_events']}; 0; <= {poison_run['target_s']:.0f}",
                f"{'yes' if poison_run['job_kept_running'] else 'no'}; "
                + ", ".join(f"{k} {v:,}" for k, v in poison_run["quarantine_reasons"].items())
                + f"; {poison_run['bronze_rows']}; {len(poison_run['feature_mismatches'])}; "
                f"{poison_run['seconds_publish_to_normal_counted']}",
                poison_run["ok"],
            ],
            [
                "partition",
                f"redis-server frozen (SIGSTOP) for {cut['seconds']['frozen']:.0f} s under {cut['rate']} "
                "requests/s to lambdarec serve",
                "non-200 answers; degraded answers while frozen; p99 / max ms while frozen; requests in "
                "flight at most; s from the thaw to the first non-degraded answer",
                f"0; {cut['frozen_requests']:,}; max <= {2 * cut['redis_budget_ms']:.0f} (twice the Redis "
                "budget); bounded; <= 2",
                f"{cut['non_200']}; {cut['frozen_degraded']:,}; {cut['latency_ms_frozen']['p99']} / "
                f"{cut['latency_ms_frozen']['p100']}; {cut['max_in_flight']}; "
                f"{cut['seconds_thaw_to_first_non_degraded']}",
                cut["ok"],
            ],
        ],
    }


def run(quick: bool, out_dir: Path) -> dict:
    work = Path(tempfile.mkdtemp(prefix="bench-faults-"))
    load_before = os.getloadavg()
    result = {}
    try:
        result = {
            "quick": quick,
            "chaos": chaos(work / "chaos", 2_000 if quick else 10_000, 2 if quick else 5),
            "poison": poison(work / "poison", 8 if quick else 64, 500 if quick else 5_000, 200),
            "partition": partition(work / "partition", 5.0 if quick else 15.0, 10.0 if quick else 30.0, 10.0),
        }
    finally:
        # a scenario that failed (or crashed) keeps its logs, tables and redis files for a look
        if result and all(result[name]["ok"] for name in ("chaos", "poison", "partition")):
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work} (a scenario failed)", flush=True)
    result["load_average_before"] = [round(x, 2) for x in load_before]
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    result["tables"] = [table(result)]
    return write_result(out_dir, NAME, result)


if __name__ == "__main__":
    main(run)

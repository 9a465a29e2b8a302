"""Paper scale (issue 16): the resources for 1M, 10M and 100M users at 10k requests/s and 50k events/s,
scaled from per-unit costs measured on this machine and from assumptions stated in `Assumptions`.

Measured (`Unit.from_results`): bench_capacity's result (Redis bytes per user, item and kind; the
nightly's and the publish step's marginal seconds; the speed layer's Redis write rate; the bus's write
rate) and profile_serving's (server CPU ms per request). The speed job's sustainable rate per 2-core job
is bench_freshness's highest bounded rate, passed by hand (`--speed-job-events-per-s`) with the file it
comes from. docs/capacity.md shows this script's output and says what each line rests on.

`python -m benchmarks.capacity_plan --capacity C.json --serving P.json --speed-job-events-per-s N`
prints the table (markdown) and writes it as JSON next to `--out` when given.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

USERS = (1_000_000, 10_000_000, 100_000_000)


@dataclass(frozen=True)
class Assumptions:
    requests_per_s: float = 10_000.0  # recommendation requests, peak
    events_per_s: float = 50_000.0  # events, peak
    peak_to_average: float = 3.0  # a day's events = peak / this x 86,400 s
    history_days: float = 18.0  # what the nightly reads, as in the measured runs
    items_per_user: float = 0.1  # catalogue size as a share of users
    served_share: float = 0.3  # users with published recs (active within `active_user_days`)
    weekly_active_share: float = 0.2  # users with speed keys (their TTL is 7 days)
    versions_in_memory: int = 4  # `publish_keep_versions` (3) + the one being written
    shard_bytes: float = 25e9  # usable `maxmemory` per Redis shard
    cpu_target: float = 0.6  # utilisation the API and the speed jobs are sized for
    nightly_hours: float = 2.0
    publish_hours: float = 0.5  # part of the nightly the publish step may take
    cores_per_replica: int = 2


@dataclass(frozen=True)
class Unit:
    """Per-unit costs measured here."""

    batch_user_bytes: float
    batch_item_bytes: float
    speed_user_bytes: float  # per weekly-active user
    speed_item_bytes: float  # co-visitation per item
    memory_overhead: float  # used_memory growth / the keys' MEMORY USAGE
    nightly_core_s_per_million_events: float  # marginal, all steps
    nightly_core_s_per_thousand_users: float  # the same extra seconds per extra served user
    publish_core_s_per_million_keys: float  # marginal
    serving_cpu_ms_per_request: float
    speed_job_events_per_s: float  # sustainable by one 2-core streaming job (freshness bounded)
    bus_events_per_s_per_partition: float  # one synchronous producer, Kafka, acks=all

    @classmethod
    def from_results(cls, capacity: dict, serving: dict, speed_job_events_per_s: float) -> Unit:
        from benchmarks.bench_capacity import marginal_costs

        small, large = capacity["sizes"][0], capacity["sizes"][-1]
        batch, speed, marginal = large["redis_batch"], large["redis_speed"], marginal_costs(small, large)
        return cls(
            batch_user_bytes=batch["user"]["bytes_per_entity"],
            batch_item_bytes=batch["item"]["bytes_per_entity"],
            speed_user_bytes=speed["user"]["bytes_per_entity"],
            speed_item_bytes=speed["item"]["bytes_per_entity"],
            memory_overhead=(batch["used_memory_after"] - batch["used_memory_before"]) / batch["key_bytes"],
            nightly_core_s_per_million_events=marginal["seconds_per_million_events_per_core"]["nightly"],
            nightly_core_s_per_thousand_users=marginal["nightly_core_seconds_per_thousand_users"],
            # the marginal publish seconds were on local[2]: two cores wrote
            publish_core_s_per_million_keys=2 * marginal["publish_seconds_per_million_keys"],
            serving_cpu_ms_per_request=serving["server_cpu_ms_per_request"],
            speed_job_events_per_s=speed_job_events_per_s,
            bus_events_per_s_per_partition=capacity["bus"]["kafka_one_partition"]["events_per_s"],
        )


def plan(users: int, unit: Unit, a: Assumptions) -> dict:
    """The resources for `users` users (see the module docstring)."""
    items = users * a.items_per_user
    served, weekly = users * a.served_share, users * a.weekly_active_share
    batch_bytes = (served * unit.batch_user_bytes + items * unit.batch_item_bytes) * a.versions_in_memory
    speed_bytes = weekly * unit.speed_user_bytes + items * unit.speed_item_bytes
    redis_bytes = (batch_bytes + speed_bytes) * unit.memory_overhead
    day_events = a.events_per_s / a.peak_to_average * 86_400
    nightly_core_s = day_events * a.history_days / 1e6 * unit.nightly_core_s_per_million_events
    nightly_user_core_s = served / 1e3 * unit.nightly_core_s_per_thousand_users
    keys = served * 6 + items * 3  # the published kinds per user and per item (docs/redis-key-layout.md)
    publish_core_s = keys / 1e6 * unit.publish_core_s_per_million_keys
    api_cores = a.requests_per_s * unit.serving_cpu_ms_per_request / 1000 / a.cpu_target
    speed_jobs = math.ceil(a.events_per_s / (unit.speed_job_events_per_s * a.cpu_target))
    return {
        "users": users,
        "items": int(items),
        "redis_gb": round(redis_bytes / 1e9, 1),
        "redis_batch_gb": round(batch_bytes * unit.memory_overhead / 1e9, 1),
        "redis_speed_gb": round(speed_bytes * unit.memory_overhead / 1e9, 1),
        "redis_shards": math.ceil(redis_bytes / a.shard_bytes),
        "kafka_partitions": max(
            speed_jobs, math.ceil(a.events_per_s / (unit.bus_events_per_s_per_partition * a.cpu_target))
        ),
        "speed_jobs_2_cores": speed_jobs,
        # the measured runs cannot tell events from users (both grew 4x): the two scalings bound it
        "nightly_cores": math.ceil(nightly_core_s / (a.nightly_hours * 3600)),
        "nightly_cores_by_users": math.ceil(nightly_user_core_s / (a.nightly_hours * 3600)),
        "publish_cores": math.ceil(publish_core_s / (a.publish_hours * 3600)),
        "keys_published": int(keys),
        "api_cores": math.ceil(api_cores),
        "api_replicas": math.ceil(api_cores / a.cores_per_replica),
    }


COLUMNS = (
    ("users", "users"),
    ("items", "items"),
    ("redis_gb", "Redis GB (batch + speed)"),
    ("redis_shards", "Redis shards"),
    ("kafka_partitions", "Kafka partitions"),
    ("speed_jobs_2_cores", "speed jobs (2 cores)"),
    ("nightly_cores_by_users", "nightly cores (2 h), scaled by users"),
    ("nightly_cores", "nightly cores (2 h), scaled by events"),
    ("publish_cores", "publish cores (30 min)"),
    ("api_replicas", "API replicas (2 cores)"),
)


def markdown(rows: list[dict]) -> str:
    def cell(row: dict, key: str) -> str:
        if key == "redis_gb":
            return f"{row['redis_gb']:,} ({row['redis_batch_gb']:,} + {row['redis_speed_gb']:,})"
        return f"{row[key]:,}"

    lines = ["| " + " | ".join(title for _, title in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(row, key) for key, _ in COLUMNS) + " |" for row in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--capacity", type=Path, required=True, help="bench_capacity's result (full run)")
    parser.add_argument("--serving", type=Path, required=True, help="profile_serving's result")
    parser.add_argument("--speed-job-events-per-s", type=float, required=True)
    parser.add_argument("--out", type=Path, default=None, help="also write the plan here (JSON)")
    args = parser.parse_args()
    unit = Unit.from_results(
        json.loads(args.capacity.read_text()),
        json.loads(args.serving.read_text()),
        args.speed_job_events_per_s,
    )
    assumptions = Assumptions()
    rows = [plan(users, unit, assumptions) for users in USERS]
    print(markdown(rows))
    if args.out:
        args.out.write_text(
            json.dumps({"unit": asdict(unit), "assumptions": asdict(assumptions), "plan": rows}, indent=2)
        )


if __name__ == "__main__":
    main()

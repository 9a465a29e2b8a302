"""Online feature fetch, lambdarec's store vs Feast, on the same redis-server and the same features.

What is measured: fetching one user's features (`ranking.USER_INPUTS`) and 200 items' features
(`ranking.ITEM_INPUTS`) as float arrays, the request a ranker needs. lambdarec: the feature store's
keys and codecs in one pipelined round trip (GET + MGET, `decode_features`), redis-py with hiredis.
Feast: `FeatureStore.get_online_features` with two feature views (user, item) on a Redis online
store, `to_dict()`. Both write the same values, each in its own key format, to one redis-server;
both processes call `gc.freeze()` after set-up (STACK-NOTES: otherwise Feast's ~1,800 modules make
full collections the p99). Speed is quoted as Feast latency / lambdarec latency at p50 and p99.

Feast runs in its own virtualenv (`benchmarks/.feast-venv`, git-ignored), created on first use with
pip, because its pins clash with the project's. `python -m benchmarks.bench_feast [--quick]`.
"""

from __future__ import annotations

import gc
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import REPO, machine_info, main, percentiles, write_result

FEAST_VERSION = "0.67.0"
FEAST_VENV = REPO / "benchmarks" / ".feast-venv"
N_USERS = 1000
N_ITEMS = 5000
ITEMS_PER_REQUEST = 200


def feast_python() -> Path:
    """The Feast virtualenv's interpreter, creating the venv (python3.11 -m venv + pip) when missing."""
    python = FEAST_VENV / "bin" / "python"
    probe = [str(python), "-c", "import feast, redis"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(FEAST_VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--upgrade", "pip"], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", f"feast[redis]=={FEAST_VERSION}"], check=True
    )
    subprocess.run(probe, check=True)
    return python


def make_features(seed: int = 3) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    from feature_store.ranking import ITEM_INPUTS, USER_INPUTS

    rng = np.random.default_rng(seed)
    users = {
        f"u{n}": [float(v) for v in rng.random(len(USER_INPUTS)).astype(np.float32)] for n in range(N_USERS)
    }
    items = {
        f"i{n}": [float(v) for v in rng.random(len(ITEM_INPUTS)).astype(np.float32)] for n in range(N_ITEMS)
    }
    return users, items


def requests_plan(n: int, seed: int = 11) -> list[tuple[str, list[str]]]:
    rng = random.Random(seed)
    return [
        (f"u{rng.randrange(N_USERS)}", [f"i{rng.randrange(N_ITEMS)}" for _ in range(ITEMS_PER_REQUEST)])
        for _ in range(n)
    ]


# -- lambdarec side ---------------------------------------------------------------------------------------
def write_lambdarec(client, version: str, users: dict, items: dict) -> None:
    from feature_store.codecs import encode_features
    from feature_store.redis_keys import RedisKeys

    keys = RedisKeys()
    pipe = client.pipeline(transaction=False)
    for user, values in users.items():
        pipe.set(keys.user_features(version, user), encode_features(values))
    for item, values in items.items():
        pipe.set(keys.item_features(version, item), encode_features(values))
    pipe.set(keys.batch_pointer, version)
    pipe.execute()


def fetch_lambdarec(client, keys, version: str, user: str, items: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """One user's and many items' features: one pipelined round trip, one frombuffer per vector."""
    from feature_store.codecs import decode_features
    from feature_store.ranking import ITEM_INPUTS, USER_INPUTS

    pipe = client.pipeline(transaction=False)
    pipe.get(keys.user_features(version, user))
    pipe.mget([keys.item_features(version, i) for i in items])
    user_blob, item_blobs = pipe.execute()
    missing = np.full(len(ITEM_INPUTS), np.nan, dtype=np.float32)
    user_vector = (
        decode_features(user_blob, len(USER_INPUTS))
        if user_blob
        else np.full(len(USER_INPUTS), np.nan, dtype=np.float32)
    )
    item_matrix = np.vstack([decode_features(b, len(ITEM_INPUTS)) if b else missing for b in item_blobs])
    return user_vector, item_matrix


def measure_lambdarec(
    url: str, plan: list[tuple[str, list[str]]], warmup: int
) -> tuple[list[float], np.ndarray]:
    import redis

    from feature_store.redis_keys import RedisKeys

    client, keys = redis.Redis.from_url(url), RedisKeys()
    for user, items in plan[:warmup]:
        fetch_lambdarec(client, keys, "feast-bench", user, items)
    gc.collect()
    gc.freeze()
    latencies = []
    checksum = None
    for user, items in plan[warmup:]:
        started = time.perf_counter()
        user_vector, item_matrix = fetch_lambdarec(client, keys, "feast-bench", user, items)
        latencies.append((time.perf_counter() - started) * 1000)
        checksum = (user_vector, item_matrix) if checksum is None else checksum
    gc.unfreeze()
    client.close()
    return latencies, np.concatenate([checksum[0], checksum[1].reshape(-1)])


# -- Feast side (runs in the Feast virtualenv) ----------------------------------------------------------------
FEAST_WORKER = r"""
import gc, json, sys, time, warnings
from datetime import datetime, timezone
from pathlib import Path
warnings.filterwarnings("ignore")
import pandas as pd
from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
from feast.types import Float32

spec = json.loads(Path(sys.argv[1]).read_text())
repo = Path(spec["repo"])
repo.mkdir(parents=True, exist_ok=True)
(repo / "feature_store.yaml").write_text(
    "project: lambdarec_bench\n"
    f"registry: {repo / 'registry.db'}\n"
    "provider: local\n"
    "online_store:\n  type: redis\n"
    f"  connection_string: \"{spec['redis']}\"\n"
    "entity_key_serialization_version: 3\n"
)
now = datetime.now(timezone.utc)
def frame(ids, key, names, values):
    rows = {key: ids, "event_timestamp": [now] * len(ids)}
    for n, name in enumerate(names):
        rows[name] = [float(values[i][n]) for i in ids]
    return pd.DataFrame(rows)
user_df = frame(list(spec["users"]), "user_id", spec["user_inputs"], spec["users"])
item_df = frame(list(spec["items"]), "item_id", spec["item_inputs"], spec["items"])
user_df.to_parquet(repo / "users.parquet"); item_df.to_parquet(repo / "items.parquet")
user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING)
item = Entity(name="item", join_keys=["item_id"], value_type=ValueType.STRING)
user_view = FeatureView(name="user_features", entities=[user], schema=[Field(name=n, dtype=Float32) for n in spec["user_inputs"]],
                        source=FileSource(path=str(repo / "users.parquet"), timestamp_field="event_timestamp"), online=True)
item_view = FeatureView(name="item_features", entities=[item], schema=[Field(name=n, dtype=Float32) for n in spec["item_inputs"]],
                        source=FileSource(path=str(repo / "items.parquet"), timestamp_field="event_timestamp"), online=True)
store = FeatureStore(repo_path=str(repo))
store.apply([user, item, user_view, item_view])
store.write_to_online_store("user_features", user_df)
store.write_to_online_store("item_features", item_df)
refs = [f"user_features:{n}" for n in spec["user_inputs"]] + [f"item_features:{n}" for n in spec["item_inputs"]]
def fetch(u, items):
    return store.get_online_features(features=refs, entity_rows=[{"user_id": u, "item_id": i} for i in items]).to_dict()
plan, warmup = spec["plan"], spec["warmup"]
for u, items in plan[:warmup]:
    fetch(u, items)
gc.collect(); gc.freeze()
latencies, first = [], None
for u, items in plan[warmup:]:
    t = time.perf_counter()
    out = fetch(u, items)
    latencies.append((time.perf_counter() - t) * 1000)
    if first is None:
        first = [out[n][0] for n in spec["user_inputs"]] + [out[n][r] for r in range(len(items)) for n in spec["item_inputs"]]
print(json.dumps({"latencies": latencies, "checksum": first, "modules": len(sys.modules)}))
"""


def measure_feast(
    python: Path, redis_hostport: str, users: dict, items: dict, plan, warmup: int, work: Path
) -> dict:
    from feature_store.ranking import ITEM_INPUTS, USER_INPUTS

    spec = {
        "repo": str(work / "feast_repo"),
        "redis": redis_hostport,
        "users": users,
        "items": items,
        "user_inputs": list(USER_INPUTS),
        "item_inputs": list(ITEM_INPUTS),
        "plan": plan,
        "warmup": warmup,
    }
    (work / "spec.json").write_text(json.dumps(spec))
    (work / "feast_worker.py").write_text(FEAST_WORKER)
    result = subprocess.run(
        [str(python), str(work / "feast_worker.py"), str(work / "spec.json")],
        capture_output=True,
        text=True,
        cwd=work,
        timeout=1800,
    )
    if result.returncode != 0:
        raise RuntimeError(f"Feast worker failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def run(quick: bool, out_dir: Path) -> dict:
    import redis

    from benchmarks.common import raise_priority
    from lambdarec.redis_server import EmbeddedRedis

    boosted = raise_priority()
    requests = 300 if quick else 3000
    warmup = 50
    python = feast_python()
    users, items = make_features()
    plan = requests_plan(requests + warmup)
    with tempfile.TemporaryDirectory(prefix="lambdarec-bench-feast-") as tmp:
        work = Path(tmp)
        server = EmbeddedRedis(directory=work / "redis").start()
        raise_priority(server.process.pid)
        try:
            client = redis.Redis.from_url(server.url)
            write_lambdarec(client, "feast-bench", users, items)
            client.close()
            feast = measure_feast(python, f"{server.host}:{server.port}", users, items, plan, warmup, work)
            ours, our_checksum = measure_lambdarec(server.url, plan, warmup)
        finally:
            server.stop()
    # Same features on both sides: the first request's values must agree.
    same_values = bool(np.allclose(np.asarray(feast["checksum"], dtype=np.float32), our_checksum, rtol=1e-6))
    lr, fe = percentiles(ours), percentiles(feast["latencies"])
    ratio = {p: round(fe[p] / lr[p], 1) for p in lr}
    result = {
        "machine": machine_info(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "quick": quick,
        "priority_boost": boosted,
        "requests": requests,
        "items_per_request": ITEMS_PER_REQUEST,
        "feast_version": FEAST_VERSION,
        "same_values": same_values,
        "lambdarec_ms": {k: round(v, 3) for k, v in lr.items()},
        "feast_ms": {k: round(v, 3) for k, v in fe.items()},
        "feast_over_lambdarec": ratio,
        "goal_5x_at_p99": ratio["p99"] >= 5,
        "feast_modules_loaded": feast["modules"],
        "tables": [
            {
                "title": f"1 user + {ITEMS_PER_REQUEST} items' features, same redis-server, {requests} requests",
                "columns": ["store", "p50 ms", "p95 ms", "p99 ms"],
                "rows": [
                    [
                        "lambdarec (keys + codecs, 1 pipeline)",
                        round(lr["p50"], 3),
                        round(lr["p95"], 3),
                        round(lr["p99"], 3),
                    ],
                    [
                        f"Feast {FEAST_VERSION} get_online_features",
                        round(fe["p50"], 3),
                        round(fe["p95"], 3),
                        round(fe["p99"], 3),
                    ],
                    ["Feast / lambdarec", ratio["p50"], ratio["p95"], ratio["p99"]],
                ],
            }
        ],
    }
    return write_result(out_dir, "feast", result)


if __name__ == "__main__":
    main(run)

"""Builders shared by the tests and the benchmarks: a ranker as the batch layer ships it, registered
in MLflow the way the batch layer registers it; the streaming job as a process; shop events with the
speed features they must leave in Redis. Imports the layers lazily, like the rest of lambdarec.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path


def train_ranker_files(
    directory: Path, seed: int = 0, trees: int = 15, leaves: int = 7, kind: str = "lightgbm"
) -> Path:
    """A small LightGBM lambdarank or XGBoost rank:ndcg on random queries of len(RANKER_FEATURES)
    vectors, exported by the batch layer's own exporter (spark_jobs.rankers.export: native model, ONNX,
    compressed ONNX, meta) into `directory`, ready for `register_ranker_files`."""
    import numpy as np

    from feature_store.ranking import RANKER_FEATURES
    from spark_jobs.rankers.common import LocalQueries, TrainedRanker
    from spark_jobs.rankers.export import export_ranker

    rng = np.random.default_rng(seed)
    rows, width, per_query = (2000 if trees > 20 else 400), len(RANKER_FEATURES), 20
    x = rng.normal(size=(rows, width)).astype(np.float32)
    y = np.clip((x[:, 0] + x[:, -3] + rng.normal(scale=0.5, size=rows)) * 1.5 + 2, 0, 4).astype(int)
    groups = [per_query] * (rows // per_query)
    if kind == "lightgbm":
        import lightgbm

        booster = lightgbm.train(
            {
                "objective": "lambdarank",
                "num_leaves": leaves,
                "min_data_in_leaf": 5,
                "verbose": -1,
                "seed": seed,
                "num_threads": 1,
            },
            lightgbm.Dataset(x, y, group=groups),
            num_boost_round=trees,
        )
    else:
        import xgboost

        matrix = xgboost.DMatrix(x, y)
        matrix.set_group(groups)
        booster = xgboost.train(
            {"objective": "rank:ndcg", "max_depth": 4, "eta": 0.3, "nthread": 1, "seed": seed},
            matrix,
            num_boost_round=trees,
        )
    ranker = TrainedRanker(
        kind=kind, booster=booster, n_trees=trees, params={"trees": trees}, train_seconds=0.0, num_workers=1
    )
    validation_rows = per_query * 10
    validation = LocalQueries(
        features=x[:validation_rows],
        relevance=y[:validation_rows].astype(np.float64),
        query_ids=np.repeat(np.arange(10), per_query).astype(object),
        item_ids=np.arange(validation_rows).astype(object),
    )
    export_ranker(ranker, validation, tolerance=0.01, out_dir=directory)
    return directory


def register_ranker_files(settings, directory: Path, champion: bool = True) -> str:
    """Log and register the exported files with the batch layer's own MLflow code
    (spark_jobs.model_registry), and optionally move `champion` to the new version; returns it."""
    from spark_jobs.model_registry import log_ranker_run, set_champion

    meta = json.loads((directory / "ranker_meta.json").read_text())
    holdout = {meta["kind"]: {"ndcg@10": meta["compressed"]["validation_ndcg@10_full"]}}
    registered = log_ranker_run(
        settings, directory, meta, params={"trees": meta["n_trees"]}, holdout=holdout, importance={}, tags={}
    )
    if champion:
        set_champion(settings, registered.version)
    return registered.version


def settings_environment(settings) -> dict[str, str]:
    """The LAMBDAREC_* variables under which `load_settings()` equals `settings`: what a command run
    in-process (typer's CliRunner) or as a subprocess reads."""
    from feature_store.settings import flat_fields

    env = {}
    fields = flat_fields()
    for name, value in settings.flat_values().items():
        info = fields[name].info
        if info.default_factory is None and value == info.default:
            continue
        env[f"LAMBDAREC_{name.upper()}"] = (
            json.dumps(value) if isinstance(value, (list, dict, tuple)) else str(value)
        )
    return env


# -- the API as its own process --------------------------------------------------------------------
def start_server(
    env: dict[str, str], port: int, log: Path, workers: int = 1, command: list[str] | None = None
) -> subprocess.Popen:
    """`lambdarec serve --port <port> --workers <workers>` as its own process group, output into `log`;
    `command` replaces `lambdarec serve` by a launcher taking the same options (benchmarks.serve_variant)."""
    command = command or [str(Path(sys.executable).parent / "lambdarec"), "serve"]
    return subprocess.Popen(
        [*command, "--port", str(port), "--workers", str(workers), "--log-level", "warning"],
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def start_speed_job(env: dict[str, str], log) -> subprocess.Popen:
    """The streaming job as its own process group (so a test can SIGKILL it with its JVM and workers),
    output appended to the open binary file `log`."""
    return subprocess.Popen(
        [sys.executable, "-m", "spark_jobs.streaming.speed_job"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def wait_ready(
    port: int, process: subprocess.Popen, deadline_s: float = 120.0, need_model: bool = True
) -> dict:
    """Poll /readyz until it answers 200 (and, with `need_model`, names a loaded ranker); its JSON."""
    import httpx

    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"lambdarec serve exited with {process.returncode}")
        try:
            response = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
            if response.status_code == 200 and (response.json()["model"] or not need_model):
                return response.json()
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError("lambdarec serve did not become ready")


def stop_server(process: subprocess.Popen) -> None:
    """SIGINT (uvicorn's graceful stop), SIGKILL if it has not exited within 15 s."""
    import signal

    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def spark_cache_is_empty(spark) -> bool:
    """Nothing is cached in the session (what `spark_jobs.session.job_cache` leaves behind)."""
    return spark._jsparkSession.sharedState().cacheManager().isEmpty()


def shop_events(count: int, t0: int, seed: int = 3, first: int = 0, users: int = 12) -> list[dict]:
    """`count` good events (ids `k<first>`...) of `users` users on 8 items in 3 categories, 100 ms apart
    from `t0` (epoch ms; one session per user)."""
    import random

    rng = random.Random(seed)
    kinds = ["view", "view", "view", "click", "add_to_cart", "purchase", "rating"]
    events = []
    for n in range(first, first + count):
        kind = rng.choice(kinds)
        events.append(
            {
                "event_id": f"k{n}",
                "user_id": f"u{rng.randrange(users)}",
                "item_id": f"i{rng.randrange(8)}",
                "event_type": kind,
                "ts": t0 + n * 100,
                "value": 4.0 if kind == "rating" else None,
                "context": {"category": f"c{rng.randrange(3)}"},
            }
        )
    return events


def speed_ground_truth(events: Iterable[dict]) -> dict:
    """The session counters, 1 h trending weights and co-visitation counts that `events` (each counted
    once, all in one session per user and inside the hour) must leave in Redis."""
    from collections import Counter, defaultdict

    from feature_store.events import EventTypes

    weights = {t.name: 1.0 if t.explicit else max(t.weight, 0.0) for t in EventTypes()}
    sessions: dict[str, Counter] = defaultdict(Counter)
    trending: Counter = Counter()
    items_by_user: dict[str, set] = defaultdict(set)
    for e in events:
        sessions[e["user_id"]][f"type:{e['event_type']}"] += 1
        sessions[e["user_id"]][f"cat:{e['context']['category']}"] += 1
        trending[e["item_id"]] += weights[e["event_type"]]
        if weights[e["event_type"]] > 0:
            items_by_user[e["user_id"]].add(e["item_id"])
    covisit: dict[str, Counter] = defaultdict(Counter)
    for items in items_by_user.values():
        for a in items:
            for b in items - {a}:
                covisit[a][b] += 1
    return {"sessions": sessions, "trending": trending, "covisit": covisit}


def speed_feature_mismatches(client, keys, events: Iterable[dict]) -> list[str]:
    """The Redis keys whose speed features differ from `speed_ground_truth(events)`, with both values
    ([] when Redis holds exactly what the events make, each counted once). `events` is read once (a
    generator will do)."""

    def texts(key: str) -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in client.hgetall(key).items()}

    def scores(key: str) -> dict[str, float]:
        return {m.decode(): s for m, s in client.zrange(key, 0, -1, withscores=True)}

    truth = speed_ground_truth(events)
    wrong = []
    for user, counters in truth["sessions"].items():
        key = keys.session_counters(user)
        found = {k: int(v) for k, v in texts(key).items() if k.startswith(("type:", "cat:"))}
        if found != dict(counters):
            wrong.append(f"{key}: {found} != {dict(counters)}")
    expected = {item: w for item, w in truth["trending"].items() if w > 0}
    if (found := scores(keys.trending("1h"))) != expected:
        wrong.append(f"{keys.trending('1h')}: {found} != {expected}")
    for item, neighbours in truth["covisit"].items():
        expected = {k: float(v) for k, v in neighbours.items()}
        if (found := scores(keys.covisit(item))) != expected:
            wrong.append(f"{keys.covisit(item)}: {found} != {expected}")
    return wrong

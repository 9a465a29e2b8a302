"""`lambdarec batch run` on a Spark standalone cluster (a master and two one-core workers started by
`infra/local/spark-cluster.sh`) ends with the same champion as `local[2]` on the same data and seed, and
its recommendations in Redis.

The local run is the test run's shared small nightly (`local_nightly`, tests/nightly.py: the world
and settings tests/integration/test_batch_run.py checks); the cluster run starts from the same bronze
tables, copied before the local nightly added to them. The cluster run is the real CLI in its own process (driver) against the cluster's
executors, so Delta JARs, the executors' Python and both distributed rankers (xgboost.spark over two
executor JVMs, LightGBM's barrier stage) are exercised as a deployment would.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from feature_store.codecs import decode_recs
from feature_store.redis_keys import RedisKeys
from feature_store.settings import project_root
from feature_store.tables import BATCH_SCORES
from lambdarec.testing import settings_environment
from spark_jobs.delta_io import read_table
from tests.nightly import RUN_DATE

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.scale_out, pytest.mark.timeout(3600)]

METRICS = ("ndcg@10", "map@10", "recall@10")
# Both runs see the same rows in the same partitions (two task slots either way) and the same seeds;
# what may differ is floating-point summation order across executor JVMs. The bound is deliberately
# far above that, and a changed champion fails the test whatever the metrics.
TOLERANCE = 0.01


def run_cli(args: list[str], env: dict[str, str], timeout_s: float) -> str:
    code = "import sys; from lambdarec.cli import main; sys.argv = ['lambdarec', *sys.argv[1:]]; main()"
    done = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=timeout_s
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def script(name: str, args: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(
        ["bash", str(project_root() / "infra" / "local" / name), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def champion_results(reports: dict) -> tuple[str, dict[str, dict[str, float]]]:
    """The promoted version and every ranker's holdout metrics of one run's reports."""
    results = reports["evaluate"]["results"]
    return reports["promote"]["version"], {
        label: {m: results[label][m] for m in METRICS} for label in ("xgboost v1", "lightgbm v2")
    }


def test_nightly_on_a_standalone_cluster_matches_local(spark, local_nightly, nightly_redis, tmp_path):
    redis_client = nightly_redis
    cluster_dir = tmp_path / "cluster"
    shutil.copytree(local_nightly.bronze, cluster_dir / "delta")
    local = champion_results(local_nightly.reports)

    cluster_settings = local_nightly.settings.updated(
        data_dir=cluster_dir,
        tables_uri=str(cluster_dir / "delta"),
        redis_key_prefix="cluster",
        spark_cluster_port=0,  # a free port: a developer's cluster on 7077 may be running
    )
    env = {**os.environ, **settings_environment(cluster_settings), "PYTHONPATH": str(project_root())}
    master_url = script("spark-cluster.sh", ["start"], env).strip().splitlines()[-1]
    try:
        assert master_url.startswith("spark://127.0.0.1:")
        env["LAMBDAREC_SPARK_MASTER"] = master_url
        output = run_cli(
            ["batch", "run", "--date", str(RUN_DATE), "--report", str(tmp_path / "cluster-report.json")],
            env,
            timeout_s=3000,
        )
    finally:
        script("spark-cluster.sh", ["stop"], env)

    # The application's executors ran in two worker JVMs: one executor folder (with its log) per worker.
    executors = {p.parent.name for p in (cluster_dir / "spark-cluster" / "work").glob("app-*/*/stderr")}
    assert len(executors) == 2, (executors, output)

    cluster_champion, cluster_metrics = champion_results(
        json.loads((tmp_path / "cluster-report.json").read_text())
    )
    assert cluster_champion == local[0]
    for label, metrics in local[1].items():
        assert cluster_metrics[label] == pytest.approx(metrics, abs=TOLERANCE), (
            label,
            cluster_metrics,
            local[1],
        )

    keys = RedisKeys(cluster_settings.redis.key_prefix)
    version = redis_client.get(keys.batch_pointer).decode()
    meta = redis_client.hgetall(keys.batch_meta(version))
    assert meta[b"as_of"].decode() == str(RUN_DATE)
    scores = read_table(spark, cluster_settings, BATCH_SCORES).collect()
    assert {r.as_of for r in scores} == {RUN_DATE} and int(meta[b"count_recs"]) == len(
        {r.user_id for r in scores}
    )
    user = scores[0].user_id
    expected = sorted((r for r in scores if r.user_id == user), key=lambda r: r["rank"])
    published = decode_recs(redis_client.get(keys.user_recs(version, user)))
    assert [(i.item_id, i.score) for i in published if i.source == "batch"] == [
        (r.item_id, r.score) for r in expected
    ]

"""One small nightly for the whole test run, shared by the tests that need a finished nightly.

`lambdarec batch run` over every step is the slowest thing the tests do (minutes on 2 cores), and two
long tests need one on the same world: `tests/integration/test_batch_run.py` checks what it leaves in
Delta, MLflow and Redis, and `tests/e2e/test_nightly_on_spark_cluster.py` compares a cluster run's
champion with it. `local_nightly` (registered in tests/conftest.py) runs it once per test run, on the
run's Spark session and redis-server. Its keys live in Redis database 1, so the `redis_client`
fixture (which flushes database 0 for each test) cannot wipe them.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from feature_store.settings import Settings, load_settings

START = date(2026, 10, 1)
DAYS = 18
RUN_DATE = START + timedelta(days=DAYS)
NIGHTLY_REDIS_DB = 1


def nightly_settings(base: Settings, redis_url: str) -> Settings:
    """The small nightly's settings: quick models, a two-point ALS grid (so the candidates step tunes)."""
    return base.updated(
        redis_url=redis_url,
        label_horizon_days=3,
        active_user_days=14,
        candidates_per_source=30,
        als_ranks=(8,),
        als_reg_params=(0.05,),
        als_alphas=(10.0, 40.0),
        als_max_iters=(5,),
        ranker_trees=30,
        ranker_max_depth=4,
        max_negatives_per_query=20,
        batch_top_n=20,
        train_num_workers=2,
        # 200 generated users: fewer holdout users than the production default (100) may decide
        promotion_min_users=50,
        # tiny data cannot show a significant gain: these tests check the loop; the gate's decision
        # rule is unit-tested (test_promotion_gate.py)
        promotion_min_gain=-1.0,
    )


@dataclass(frozen=True)
class LocalNightly:
    """A finished `lambdarec batch run --date RUN_DATE` and what it started from."""

    settings: Settings
    output: str  # what the command printed
    reports: dict  # its --report JSON: one entry per step
    bronze: Path  # the Delta tables as ingested, copied before the nightly added to them


def run_local_nightly(spark, base: Settings, redis_url: str, directory: Path) -> LocalNightly:
    """Generate 8,000 events for 200 users, ingest them, then run the nightly through the CLI
    in-process (the shared Spark session) with the settings given as LAMBDAREC_* variables."""
    from typer.testing import CliRunner

    from lambdarec.cli import build_app
    from lambdarec.datagen import GeneratorConfig, generate
    from lambdarec.testing import settings_environment
    from spark_jobs.ingest import ingest

    settings = nightly_settings(
        base.updated(data_dir=directory, tables_uri=str(directory / "delta")), redis_url
    )
    config = GeneratorConfig(events=8_000, users=200, items=250, categories=6, days=DAYS, start=START, seed=3)
    generate(config, directory / "gen")
    ingest(spark, settings, directory / "gen", "jsonl", datetime(2026, 11, 1, tzinfo=UTC))
    bronze = directory / "bronze-copy"
    shutil.copytree(settings.tables_root, bronze)
    with pytest.MonkeyPatch.context() as env:
        for name, value in settings_environment(settings).items():
            env.setenv(name, value)
        assert load_settings() == settings
        report = directory / "report.json"
        done = CliRunner().invoke(
            build_app(),
            ["batch", "run", "--date", str(RUN_DATE), "--report", str(report)],
            env={"COLUMNS": "250"},
        )
    assert done.exit_code == 0, done.output
    return LocalNightly(settings, done.output, json.loads(report.read_text()), bronze)


def nightly_redis_url(server_url: str) -> str:
    """The run's redis-server URL on the nightly's own database."""
    return f"{server_url.rsplit('/', 1)[0]}/{NIGHTLY_REDIS_DB}"

"""Batch models: `batch run` wall time and peak memory vs data size, ranker training time with 1 vs 2
Spark workers, and recommendation quality of popularity, ALS and the rankers on MovieLens.

- `batch_run`: for each data set (quick: 30k synthetic events; full: ml-latest-small when present, 1M
  and 5M synthetic events) generate/ingest it into fresh Delta tables, then time
  `spark_jobs.batch_pipeline.run_batch` (every step, per-step seconds) and the peak resident memory of
  the process tree (Python driver + JVM + Python workers). MovieLens runs with a 90-day label horizon
  (its last years are sparse), synthetic data with 3 days.
- `workers`: on the training set the first synthetic run wrote (quick: 30k, full: 1M events), XGBoost (xgboost.spark) and LightGBM
  (barrier stage) trained with 1 and with 2 workers: seconds (ratio 2 workers / 1 worker, same run)
  and validation NDCG@10 of each (the same quality is the point, the time is what 2 cores give).
- `quality` (full mode): `lambdarec evaluate`'s protocol (spark_jobs.offline_eval) on ml-latest-small
  with a `time` split (ratio 0.8): NDCG@10, Recall@10, MAP@10, HR@10 and coverage of every model.
Quick mode (`make bench QUICK=1` has 15 minutes for every benchmark) leaves MovieLens out: its batch
run and the quality protocol take about 8 and 5 minutes on 2 cores. The result JSON is rewritten after
every data set, so a full run stopped half-way keeps what it measured; a data set whose batch run fails
is recorded with its error (the bigger ones after it are not tried) and the rest of the result stands.
Shuffle partitions grow with the data (`shuffle_partitions`), so a task's share of a shuffle stays about
what it is at 100k events.

Run: `python -m benchmarks.bench_batch_models [--quick]`; writes `<out>/batch_models.json`.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from benchmarks.bench_batch_data import PeakMemory
from benchmarks.common import MOVIELENS_BATCH_SETTINGS, machine_info, main, movielens_dir, write_result

NAME = "batch_models"
QUICK_SIZES = (30_000,)
FULL_SIZES = (1_000_000, 5_000_000)
SYNTHETIC_DAYS = 21
SYNTHETIC_START = date(2026, 9, 1)
INGEST_TIME = datetime(2027, 1, 1, tzinfo=UTC)


def settings_for(root: Path, redis_url: str, movielens: bool, **overrides):
    from feature_store.settings import Settings, project_root

    base = dict(
        data_dir=root,
        jars_dir=project_root() / ".cache" / "jars",
        spark_master="local[2]",
        spark_shuffle_partitions=4,
        # the JVM starts once, with the first data set's settings: sized for the biggest (5M events)
        spark_driver_memory="10g",
        redis_url=redis_url,
        train_num_workers=2,
        ranker_trees=100,
    )
    if movielens:
        # its last 90 days hold 28 holdout users (full run of 2026-12-04): the promotion gate judges
        # on the last 2 years instead, the training cut-off 90 days before them
        base.update(MOVIELENS_BATCH_SETTINGS, holdout_days=730)
    else:
        base.update(label_horizon_days=3, active_user_days=14)
    base.update(overrides)
    return Settings(**base)


def shuffle_partitions(events: int | None) -> int:
    """Shuffle partitions for a data set of `events` (None: MovieLens, 100k ratings): 4 up to 100k events,
    then one per 62,500 events (1M: 16, 5M: 80), so each task's share stays about the same."""
    if events is None or events <= 100_000:
        return 4
    return -(-events // 62_500)


def load_synthetic(spark, settings, events: int, work: Path) -> date:
    """Generate `events` synthetic events and ingest them; returns the run date (the day after the data)."""
    from lambdarec.datagen import GeneratorConfig, generate
    from spark_jobs.ingest import ingest

    users = max(500, events // 60)
    config = GeneratorConfig(
        events=events,
        users=users,
        items=max(500, events // 200),
        days=SYNTHETIC_DAYS,
        start=SYNTHETIC_START,
        shards=4,
        seed=7,
    )
    generate(config, work / "gen")
    ingest(spark, settings, work / "gen", "jsonl", INGEST_TIME)
    return SYNTHETIC_START + timedelta(days=SYNTHETIC_DAYS)


def load_movielens(spark, settings, folder: Path) -> date:
    from pyspark.sql import functions as F

    from feature_store.tables import BRONZE_EVENTS
    from spark_jobs.delta_io import read_table
    from spark_jobs.ingest import ingest

    ingest(spark, settings, folder, "movielens", INGEST_TIME)
    last = read_table(spark, settings, BRONZE_EVENTS).agg(F.max("event_date")).first()[0]
    return last + timedelta(days=1)


def timed_batch_run(spark, settings, run_date: date) -> dict:
    from spark_jobs.batch_pipeline import run_batch

    memory = PeakMemory()
    started = time.perf_counter()
    with memory.measure():
        reports = run_batch(spark, settings, run_date, redis_url=lambda: settings.redis.url)
    seconds = time.perf_counter() - started
    return {
        "run_date": str(run_date),
        "seconds": round(seconds, 1),
        "peak_rss_gib": round(memory.peak / 2**30, 2),
        "step_seconds": {name: r["seconds"] for name, r in reports.items()},
        "promoted": reports["promote"].get("promoted"),
        "gate": {key: reports["promote"].get(key) for key in ("decision", "reason", "evidence")},
        "holdout": reports["evaluate"]["results"],
    }


def workers_comparison(spark, settings, run_date: date) -> dict:
    """Train both rankers with 1 and 2 workers on the run's training set (same data, same params)."""
    from feature_store.tables import TRAINING_SET
    from spark_jobs.delta_io import read_table
    from spark_jobs.rankers.common import RankerParams, collect_queries, mean_ndcg, split_validation
    from spark_jobs.rankers.lightgbm_ranker import train_lightgbm
    from spark_jobs.rankers.xgboost_ranker import train_xgboost
    from spark_jobs.steps.context import Cutoffs
    from spark_jobs.training_set import at

    cut = Cutoffs.of(run_date, settings.batch.label_horizon_days, settings.batch.holdout_days)
    examples = at(read_table(spark, settings, TRAINING_SET), cut.train).cache()
    train_part, validation_part = split_validation(examples, 42)
    train_part = train_part.cache()
    validation = collect_queries(validation_part)
    rows = {}
    for kind, train in (("xgboost", train_xgboost), ("lightgbm", train_lightgbm)):
        for workers in (1, 2):
            ranker = train(train_part, RankerParams.from_settings(settings.ranker, num_workers=workers))
            rows[f"{kind}/{workers}"] = {
                "seconds": round(ranker.train_seconds, 2),
                "validation_ndcg@10": round(mean_ndcg(validation, ranker.predict(validation.features)), 4),
            }
        rows[f"{kind}/ratio_2_vs_1"] = round(rows[f"{kind}/2"]["seconds"] / rows[f"{kind}/1"]["seconds"], 2)
    rows["training_rows"] = train_part.count()
    return rows


def movielens_ratings_csv(folder: Path, work: Path) -> Path:
    """ml-latest-small's ratings.csv with the protocol's header (userId,movieId -> user_id,item_id)."""
    import pandas as pd

    frame = pd.read_csv(folder / "ratings.csv").rename(columns={"userId": "user_id", "movieId": "item_id"})
    work.mkdir(parents=True, exist_ok=True)
    frame.to_csv(work / "ratings.csv", index=False)
    movies = pd.read_csv(folder / "movies.csv").rename(columns={"movieId": "item_id"})
    movies.to_csv(work / "items.csv", index=False)
    return work


def movielens_quality(spark, movielens: Path, work: Path, redis_url: str, quick: bool) -> dict:
    """`lambdarec evaluate`'s protocol on ml-latest-small, time split 0.8."""
    from spark_jobs.offline_eval import evaluate_split, read_items, read_ratings, split_ratings

    folder = movielens_ratings_csv(movielens, work / "ml-csv")
    settings = settings_for(work / "ml-quality", redis_url, movielens=True, ranker_trees=60 if quick else 100)
    train, test = split_ratings(read_ratings(spark, str(folder / "ratings.csv")), "time", 0.8, 42)
    return evaluate_split(
        spark,
        settings,
        train.cache(),
        test.cache(),
        "time",
        0.8,
        42,
        10,
        read_items(spark, str(folder / "items.csv")),
    )


def run(quick: bool, out_dir: Path) -> dict:
    from lambdarec.redis_server import EmbeddedRedis
    from spark_jobs.session import build_spark

    work = Path(tempfile.mkdtemp(prefix="bench-batch-models-"))
    redis = EmbeddedRedis(directory=work / "redis").start()
    movielens = None if quick else movielens_dir()
    notes = ["quick mode: no MovieLens batch run or quality table (full mode has both)"] if quick else []
    result: dict = {"machine": machine_info(), "quick": quick, "batch_run": {}, "notes": notes}
    try:
        datasets = ([("ml-latest-small", None)] if movielens else []) + [
            (f"synthetic-{n // 1000}k", n) for n in (QUICK_SIZES if quick else FULL_SIZES)
        ]
        for label, events in datasets:
            root = work / label
            settings = settings_for(
                root,
                redis.url,
                movielens=events is None,
                ranker_trees=60 if quick else 100,
                spark_shuffle_partitions=shuffle_partitions(events),
            )
            spark = build_spark(settings)
            # one session for every data set: the previous one's caches go, its partition count too
            spark.catalog.clearCache()
            spark.conf.set("spark.sql.shuffle.partitions", str(settings.spark.shuffle_partitions))
            try:
                run_date = (
                    load_movielens(spark, settings, movielens)
                    if events is None
                    else load_synthetic(spark, settings, events, root)
                )
                result["batch_run"][label] = {"events": events, **timed_batch_run(spark, settings, run_date)}
            except Exception as exc:  # the smaller data sets' numbers stand; the bigger ones would fail too
                error = error_summary(exc)
                result["batch_run"][label] = {"events": events, "error": error}
                result["notes"].append(f"{label}: batch run failed ({error}); bigger data sets not tried")
                break
            finally:
                write_result(out_dir, NAME, {**result, "tables": report_tables(result), "partial": True})
            # the slower extras run on the smaller data sets first, so a full run cut short in its
            # biggest batch run keeps them
            if events is None:
                result["quality"] = movielens_quality(spark, movielens, work, redis.url, quick)
            elif "workers" not in result:
                result["workers"] = workers_comparison(spark, settings, run_date)
            write_result(out_dir, NAME, {**result, "tables": report_tables(result), "partial": True})
        if not movielens and not quick:
            result["notes"].append("ml-latest-small not found: no MovieLens run or quality table")
    finally:
        redis.stop()
        shutil.rmtree(work, ignore_errors=True)
    result["tables"] = report_tables(result)
    return write_result(out_dir, NAME, result)


def error_summary(exc: BaseException) -> str:
    """The error's type and its most telling line (a Py4J error's first lines are the Java call, not the cause)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    cause = next(
        (line for line in lines if "Error:" in line or "Exception:" in line), lines[0] if lines else ""
    )
    return f"{type(exc).__name__}: {cause}"[:300]


def batch_run_row(label: str, r: dict) -> list:
    events = r["events"] or "ml-latest-small"
    if "error" in r:
        return [label, events, "failed", "-", r["error"], "-"]
    return [
        label,
        events,
        r["seconds"],
        r["peak_rss_gib"],
        max(r["step_seconds"], key=r["step_seconds"].get),
        r["promoted"],
    ]


def report_tables(result: dict) -> list[dict]:
    tables = [
        {
            "title": "batch run: wall time and peak memory (2 cores)",
            "columns": ["data set", "events", "seconds", "peak RSS GiB", "slowest step", "promoted"],
            "rows": [batch_run_row(label, r) for label, r in result["batch_run"].items()],
        }
    ]
    if "workers" in result:
        w = result["workers"]
        tables.append(
            {
                "title": f"ranker training, 1 vs 2 Spark workers ({w['training_rows']} rows)",
                "columns": [
                    "ranker",
                    "1 worker s",
                    "2 workers s",
                    "ratio 2/1",
                    "NDCG@10 1 worker",
                    "NDCG@10 2 workers",
                ],
                "rows": [
                    [
                        k,
                        w[f"{k}/1"]["seconds"],
                        w[f"{k}/2"]["seconds"],
                        w[f"{k}/ratio_2_vs_1"],
                        w[f"{k}/1"]["validation_ndcg@10"],
                        w[f"{k}/2"]["validation_ndcg@10"],
                    ]
                    for k in ("xgboost", "lightgbm")
                ],
            }
        )
    if "quality" in result:
        quality = result["quality"]
        metrics = ("ndcg", "recall", "map", "hr", "coverage")
        warm, counts = quality["warm_models"], quality["counts"]
        tables.append(
            {
                "title": (
                    f"ml-latest-small, time split 0.8: quality@10 over all {counts['test_users_with_relevant_items']} test users"
                    f" and over the {counts['warm_test_users_with_relevant_items']} warm ones (with train history)"
                ),
                "columns": [
                    "model",
                    "NDCG@10",
                    "Recall@10",
                    "MAP@10",
                    "HR@10",
                    "coverage@10",
                    "warm NDCG@10",
                    "warm HR@10",
                ],
                "rows": [
                    [
                        m,
                        *(round(v[f"{x}@10"], 4) for x in metrics),
                        *(round(warm[m][f"{x}@10"], 4) for x in ("ndcg", "hr")),
                    ]
                    for m, v in quality["models"].items()
                ],
            }
        )
    return tables


if __name__ == "__main__":
    main(run)

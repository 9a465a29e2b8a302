"""Batch data layer: wall time, events/second and peak memory of ingest and features vs data size.

For each size (quick: 50k and 200k synthetic events; full: 1M and 5M) it generates the data
(lambdarec.datagen, 2% bad rows), then on one local Spark session with fresh Delta tables measures:
- `scan`: a plain Spark read + count of the same JSON lines (the baseline the other phases are quoted
  against, measured in the same run);
- `ingest`: spark_jobs.ingest.ingest (parse, validate, dedupe, MERGE into bronze and quarantine, catalog);
- `silver`: spark_jobs.interactions.run_interactions over every event date;
- `features`: spark_jobs.features.run_features for the last 7 as_of dates (a week's backfill);
and the peak resident memory of the whole process tree (Python driver + JVM) during each phase. With
ml-latest-small present (LAMBDAREC_MOVIELENS_DIR or ../shared/data) the full run does the same on
MovieLens (its 22 years of dates make silver slow: minutes, so quick mode leaves it out). A 2k-event
warm-up, not reported, runs first so the first size does not pay the JVM's warm-up alone.

Run: `python -m benchmarks.bench_batch_data [--quick]`; writes `<out>/batch_data.json`.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import threading
import time
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from benchmarks.common import machine_info, main, movielens_dir, process_tree_rss, write_result

NAME = "batch_data"
QUICK_SIZES = (50_000, 200_000)
WARMUP_EVENTS = 2_000
FULL_SIZES = (1_000_000, 5_000_000)
FEATURE_DAYS = 7


class PeakMemory:
    """Samples the process tree's RSS in a thread; `peak` is the maximum seen since `start`."""

    def __init__(self, interval_s: float = 0.2) -> None:
        self.interval_s = interval_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, process_tree_rss(os.getpid()))
            self._stop.wait(self.interval_s)

    @contextmanager
    def measure(self):
        self.peak = process_tree_rss(os.getpid())
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, process_tree_rss(os.getpid()))


def timed(label: str, phases: dict, memory: PeakMemory, action, rows: int):
    with memory.measure():
        started = time.perf_counter()
        result = action()
        seconds = time.perf_counter() - started
    phases[label] = {
        "seconds": round(seconds, 2),
        "events_per_s": round(rows / seconds) if seconds > 0 else None,
        "peak_rss_mib": round(memory.peak / 2**20),
    }
    print(
        f"  {label}: {seconds:.1f}s, {phases[label]['events_per_s']} events/s, peak {phases[label]['peak_rss_mib']} MiB",
        flush=True,
    )
    return result


def measure_dataset(
    spark, settings, label: str, source: Path, fmt: str, rows: int, last_day: date, memory: PeakMemory
) -> dict:
    from spark_jobs.features import run_features
    from spark_jobs.ingest import ingest
    from spark_jobs.interactions import run_interactions
    from spark_jobs.sources import read_source

    print(f"{label}: {rows:,} rows", flush=True)
    phases: dict = {}
    timed("scan", phases, memory, lambda: read_source(spark, source, fmt).events.count(), rows)
    report = timed(
        "ingest", phases, memory, lambda: ingest(spark, settings, source, fmt, datetime.now(UTC)), rows
    )
    first_day = (
        spark.read.format("delta")
        .load(settings.table_path("bronze/events"))
        .agg({"event_date": "min"})
        .first()[0]
    )
    timed(
        "silver",
        phases,
        memory,
        lambda: run_interactions(spark, settings, first_day, last_day + timedelta(days=1)),
        rows,
    )
    end = last_day + timedelta(days=1)
    features = timed(
        "features",
        phases,
        memory,
        lambda: run_features(spark, settings, end - timedelta(days=FEATURE_DAYS), end),
        rows,
    )
    baseline = phases["scan"]["seconds"]
    return {
        "dataset": label,
        "rows": rows,
        "phases": phases,
        "ingest_vs_scan": round(phases["ingest"]["seconds"] / baseline, 1) if baseline else None,
        "ingest_report": {k: v for k, v in report.to_json().items() if k not in ("event_files", "tables")},
        "features_report": {
            "user_rows": features.user_rows,
            "item_rows": features.item_rows,
            "as_of_dates": FEATURE_DAYS,
        },
    }


def run(quick: bool, out_dir: Path) -> dict:
    from feature_store.settings import Settings, project_root
    from lambdarec.datagen import GeneratorConfig, generate
    from spark_jobs.session import build_spark

    sizes = QUICK_SIZES if quick else FULL_SIZES
    work = Path(tempfile.mkdtemp(prefix="lambdarec-bench-batch-"))
    # 2g (the embedded default) ran out of heap in ingest's sort of 5M events (seen 2026-12-02): the full
    # sizes get the same 6g driver as bench_batch_models.
    base = Settings(
        data_dir=work / "state", jars_dir=project_root() / ".cache" / "jars", spark_driver_memory="6g"
    )
    memory = PeakMemory()
    results, generation = [], {}
    try:
        spark = build_spark(base)
        for n in (WARMUP_EVENTS, *sizes):
            config = GeneratorConfig(
                events=n,
                users=max(1_000, n // 100),
                items=max(500, n // 500),
                days=30,
                bad_fraction=0.02,
                shards=4,
                seed=1,
            )
            started = time.perf_counter()
            manifest = generate(config, work / f"gen-{n}")
            seconds = time.perf_counter() - started
            generation[str(n)] = {
                "seconds": round(seconds, 2),
                "events_per_s": round(n / seconds),
                "rows_total": manifest.rows_total,
            }
            settings = base.updated(tables_uri=str(work / f"delta-{n}"))
            last_day = config.start + timedelta(days=config.days - 1)
            measured = measure_dataset(
                spark,
                settings,
                f"synthetic-{n}",
                work / f"gen-{n}",
                "jsonl",
                manifest.rows_total,
                last_day,
                memory,
            )
            if n != WARMUP_EVENTS:
                results.append(measured)
            shutil.rmtree(work / f"gen-{n}", ignore_errors=True)
        ml = None if quick else movielens_dir()
        if ml is not None:
            settings = base.updated(tables_uri=str(work / "delta-ml"))
            rows = sum(1 for _ in (ml / "ratings.csv").open()) - 1
            last = datetime.fromtimestamp(
                max(int(line.rsplit(",", 1)[1]) for line in list((ml / "ratings.csv").open())[1:]), UTC
            ).date()
            results.append(
                measure_dataset(spark, settings, "ml-latest-small", ml, "movielens", rows, last, memory)
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)

    synthetic = [r for r in results if r["dataset"].startswith("synthetic")]
    growth = {}
    if len(synthetic) >= 2:
        small, large = synthetic[0], synthetic[-1]
        size_ratio = large["rows"] / small["rows"]
        for phase in ("scan", "ingest", "silver", "features"):
            ratio = large["phases"][phase]["seconds"] / small["phases"][phase]["seconds"]
            growth[phase] = {
                "time_ratio": round(ratio, 2),
                "size_ratio": round(size_ratio, 2),
                "exponent": round(math.log(ratio) / math.log(size_ratio), 2),
            }
    payload = {
        "quick": quick,
        "machine": machine_info(),
        "spark_master": base.spark.master,
        "driver_memory": base.spark.driver_memory,
        "generation": generation,
        "datasets": results,
        "growth": growth,
        "notes": "Times are wall seconds on one local Spark session (warm after the first dataset); events_per_s = input rows / "
        "phase seconds; peak RSS covers the Python driver and the JVM. `exponent` = log(time ratio) / log(size ratio): "
        "1.0 is linear, below 1 means fixed costs still dominate. ingest_vs_scan quotes ingest against a plain read+count "
        "of the same files in the same run.",
        "tables": [
            {
                "title": "Batch data layer: seconds (events/s) per phase",
                "columns": [
                    "dataset",
                    "rows",
                    "scan",
                    "ingest",
                    "silver",
                    "features (7 as_of)",
                    "peak RSS MiB",
                    "ingest / scan",
                ],
                "rows": [
                    [
                        r["dataset"],
                        r["rows"],
                        *[
                            f"{r['phases'][p]['seconds']} ({r['phases'][p]['events_per_s']:,})"
                            for p in ("scan", "ingest", "silver", "features")
                        ],
                        max(p["peak_rss_mib"] for p in r["phases"].values()),
                        r["ingest_vs_scan"],
                    ]
                    for r in results
                ],
            }
        ],
        "plots": [
            {
                "title": "Batch data layer time vs events",
                "x_label": "events",
                "y_label": "seconds",
                "x": [r["rows"] for r in synthetic],
                "lines": {
                    p: [r["phases"][p]["seconds"] for r in synthetic]
                    for p in ("scan", "ingest", "silver", "features")
                },
                "log_y": False,
            }
        ],
    }
    return write_result(out_dir, NAME, payload)


if __name__ == "__main__":
    main(run)

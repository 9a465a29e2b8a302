"""`lambdarec demo`: the whole loop on a laptop, with embedded services and no manual steps.

Called by `lambdarec demo` (`make demo`) and `lambdarec demo-stop` (`make demo-stop`). Each stage is
a small function that takes settings and a console and returns what it did, so the demo reads top to
bottom in `run_demo`:

1. data in: synthetic events (ending yesterday, so the nightly run of today's interval covers them)
   or MovieLens, validated into bronze (rows in, rows quarantined by reason, tables written);
2. the batch layer's features for the pipeline date (the day after the last event).

Services the demo starts keep running after it ends (their URLs are printed); `lambdarec demo-stop`
stops them all.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Literal

from feature_store.settings import Settings, project_root

Dataset = Literal["synthetic", "movielens"]


class DemoError(RuntimeError):
    """The demo cannot go on; the message says what was wrong and what to do."""


@dataclass(frozen=True)
class DemoData:
    """What the demo loads: a source the ingest reads and its format."""

    dataset: Dataset
    source: Path
    fmt: str


@dataclass
class DemoSummary:
    """What the demo prints at the end."""

    rows_read: int = 0
    rows_ingested: int = 0
    rows_quarantined: dict[str, int] = field(default_factory=dict)
    pipeline_date: date | None = None
    feature_rows: dict[str, int] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)


def default_movielens_dir() -> Path:
    """ml-latest-small next to the repository (../shared/data/ml-latest-small)."""
    return project_root().parent / "shared" / "data" / "ml-latest-small"


def synthetic_config(today: date, days: int = 14):
    """A small synthetic world whose last day is yesterday: the nightly run keyed on today's data
    interval is exactly the run that covers it."""
    from lambdarec.datagen import GeneratorConfig

    return GeneratorConfig(
        events=40_000,
        users=800,
        items=400,
        new_items_per_day=3.0,
        categories=8,
        days=days,
        start=today - timedelta(days=days),
        bad_fraction=0.02,
        seed=7,
    )


def demo_data(settings: Settings, dataset: Dataset, path: Path | None, today: date, console) -> DemoData:
    """Generate the synthetic data set, or find the MovieLens folder."""
    if dataset == "movielens":
        folder = (path or default_movielens_dir()).expanduser().resolve()
        if not (folder / "ratings.csv").exists():
            raise DemoError(
                f"No MovieLens ratings.csv in {folder}. Pass --path to an ml-latest-small folder "
                "(ratings.csv + movies.csv), or run the demo on synthetic data (the default)."
            )
        return DemoData("movielens", folder, "movielens")
    from lambdarec.datagen import generate

    out = path or settings.data_dir / "demo" / "generated"
    config = synthetic_config(today)
    manifest = generate(config, out)
    console.print(
        f"generated {manifest.rows_total:,} rows ({manifest.good_rows:,} good, {manifest.bad_total:,} bad) for "
        f"{manifest.users:,} users and {manifest.items:,} items, {config.start} .. {config.start + timedelta(days=config.days - 1)}"
    )
    return DemoData("synthetic", out, "jsonl")


def last_event_date(spark, settings: Settings) -> date:
    """The newest event date in bronze: the pipeline runs as of the day after it."""
    from pyspark.sql import functions as F

    from feature_store.tables import BRONZE_EVENTS
    from spark_jobs.delta_io import read_table

    newest = read_table(spark, settings, BRONZE_EVENTS).agg(F.max("event_date")).first()[0]
    if newest is None:
        raise DemoError("bronze/events is empty after the ingest: every row was quarantined (see the report above)")
    return newest


def load_data(spark, settings: Settings, data: DemoData, summary: DemoSummary, console) -> date:
    """Ingest the data into bronze, print the report, and return the pipeline date."""
    from lambdarec.commands.data import print_ingest_report
    from spark_jobs.ingest import ingest

    report = ingest(spark, settings, data.source, data.fmt, datetime.now(timezone.utc))
    print_ingest_report(console, report)
    summary.rows_read = report.rows_read
    summary.rows_ingested = report.ingested
    summary.rows_quarantined = dict(report.quarantined)
    return last_event_date(spark, settings) + timedelta(days=1)


def compute_features(spark, settings: Settings, pipeline_date: date, summary: DemoSummary, console) -> None:
    """Gold features as of the pipeline date (silver interactions are refreshed first)."""
    from spark_jobs.features import run_features

    report = run_features(spark, settings, pipeline_date, pipeline_date + timedelta(days=1))
    console.print(f"[bold]features[/bold] as of {report.start}")
    if report.silver_window:
        console.print(f"  silver interactions for [{report.silver_window[0]}, {report.silver_window[1]}): {report.silver_rows:,} rows")
    console.print(f"  user feature rows: {report.user_rows:,}")
    console.print(f"  item feature rows: {report.item_rows:,}")
    for name, path in report.tables.items():
        console.print(f"  table {name}: {path}")
    summary.feature_rows = {"silver/interactions": report.silver_rows, "user_features": report.user_rows, "item_features": report.item_rows}


class _Stage:
    """Times one stage of the demo and prints its title."""

    def __init__(self, title: str, summary: DemoSummary, console) -> None:
        self.title, self.summary, self.console = title, summary, console

    def __enter__(self) -> "_Stage":
        self.console.rule(f"[bold]{self.title}")
        self.started = time.monotonic()
        return self

    def __exit__(self, *exc) -> None:
        self.summary.timings_s[self.title] = round(time.monotonic() - self.started, 1)


def print_summary(settings: Settings, summary: DemoSummary, console) -> None:
    console.rule("[bold]summary")
    quarantined = sum(summary.rows_quarantined.values())
    console.print(f"rows read: {summary.rows_read:,}  ingested: {summary.rows_ingested:,}  quarantined: {quarantined:,}")
    for reason, count in summary.rows_quarantined.items():
        console.print(f"  quarantined {reason}: {count:,}")
    if summary.pipeline_date:
        console.print(f"pipeline date: {summary.pipeline_date}")
    for name, rows in summary.feature_rows.items():
        console.print(f"{name}: {rows:,} rows")
    console.print("time per stage: " + ", ".join(f"{k} {v:.0f}s" for k, v in summary.timings_s.items()))
    console.print(f"all state is under {settings.data_dir}")


def run_demo(settings: Settings, dataset: Dataset, path: Path | None, console, today: date | None = None) -> DemoSummary:
    """The demo, stage by stage; returns what it measured."""
    from lambdarec.composition import spark_session

    today = today or datetime.now(timezone.utc).date()
    summary = DemoSummary()
    with _Stage("data in", summary, console):
        data = demo_data(settings, dataset, path, today, console)
        spark = spark_session(settings)
        summary.pipeline_date = load_data(spark, settings, data, summary, console)
    with _Stage("features", summary, console):
        compute_features(spark, settings, summary.pipeline_date, summary, console)
    spark.stop()
    print_summary(settings, summary, console)
    return summary


def stop_demo(settings: Settings) -> list[str]:
    """Stop every service the demo started; returns what was stopped."""
    from lambdarec.redis_server import stop_shared_redis

    stopped = []
    if stop_shared_redis(settings.run_dir):
        stopped.append("redis-server")
    return stopped

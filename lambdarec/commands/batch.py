"""`lambdarec batch ...`: the batch layer's jobs, one command each, over an explicit `[start, end)` window.

`register(app)` builds the `batch` group and adds every command of `BATCH_COMMANDS`; add a batch job
by writing its command function here and listing it there. Commands are thin: settings and Spark from
the composition root, then one spark_jobs step, then a printed report.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date
from pathlib import Path

import typer

from feature_store.nightly import step_names


def parse_day(text: str, option: str) -> date:
    """A YYYY-MM-DD option value as a date (a clear error otherwise)."""
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise typer.BadParameter(f"{text!r} is not a date (YYYY-MM-DD)", param_hint=option) from exc


def parse_window(start: str, end: str) -> tuple[date, date]:
    first, last = parse_day(start, "--start"), parse_day(end, "--end")
    if last <= first:
        raise typer.BadParameter(
            f"--end {last} must be after --start {first} (the window is [start, end))", param_hint="--end"
        )
    return first, last


def features_command(
    start: str = typer.Option(..., help="First as_of date (YYYY-MM-DD), inclusive."),
    end: str = typer.Option(..., help="End as_of date (YYYY-MM-DD), exclusive."),
) -> None:
    """Gold user and item features for every as_of in [start, end), each from events strictly before
    00:00 UTC of as_of; refreshes silver interactions first. Reruns overwrite exactly that window."""
    from rich.console import Console

    from feature_store.settings import load_settings
    from lambdarec.composition import spark_session

    first, last = parse_window(start, end)
    settings = load_settings()
    console = Console()
    with console.status("starting Spark…"):
        spark = spark_session(settings)
    from spark_jobs.features import run_features

    with console.status(f"computing features for as_of in [{first}, {last})…"):
        report = run_features(spark, settings, first, last)
    console.print(f"[bold]features[/bold] for as_of in [{report.start}, {report.end})")
    if report.silver_window:
        console.print(
            f"  silver interactions rebuilt for [{report.silver_window[0]}, {report.silver_window[1]}): {report.silver_rows:,} rows"
        )
    else:
        console.print("  bronze has no events: nothing to compute (run `lambdarec ingest` first)")
    console.print(f"  user feature rows: {report.user_rows:,}")
    console.print(f"  item feature rows: {report.item_rows:,}")
    for name, path in report.tables.items():
        console.print(f"  table {name}: {path}")


def interactions_command(
    start: str = typer.Option(..., help="First event date (YYYY-MM-DD), inclusive."),
    end: str = typer.Option(..., help="End event date (YYYY-MM-DD), exclusive."),
) -> None:
    """Silver interactions (deduped, labeled, sessionized) for event dates in [start, end)."""
    from rich.console import Console

    from feature_store.settings import load_settings
    from lambdarec.composition import spark_session

    first, last = parse_window(start, end)
    settings = load_settings()
    console = Console()
    with console.status("starting Spark…"):
        spark = spark_session(settings)
    from spark_jobs.interactions import run_interactions

    with console.status(f"building interactions for [{first}, {last})…"):
        report = run_interactions(spark, settings, first, last)
    console.print(
        f"[bold]interactions[/bold] for event dates [{report.start}, {report.end}): {report.rows_written:,} rows -> {report.table}"
    )


def run_command(
    run_date: str = typer.Option(
        ..., "--date", help="Run date D (YYYY-MM-DD): uses events before 00:00 UTC of D."
    ),
    report_path: Path | None = typer.Option(
        None, "--report", help="Also write every step's report as JSON to this file."
    ),
) -> None:
    """The whole nightly pipeline for one date: features, candidates, training set, XGBoost and LightGBM
    (registered in MLflow), evaluation, promotion gate, batch scoring with @champion, publish to Redis,
    expiry of old batch versions. Each step is idempotent: rerun the date to resume."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from feature_store.settings import load_settings
    from lambdarec.composition import redis_url, spark_session

    day = parse_day(run_date, "--date")
    settings = load_settings()
    console = Console()
    with console.status("starting Spark…"):
        spark = spark_session(settings)
    from spark_jobs.batch_pipeline import STEPS, run_batch

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task(f"batch {day}: {next(iter(STEPS))}", total=len(STEPS))
        names = list(STEPS)

        def advance(name: str, report: dict) -> None:
            done = names.index(name) + 1
            progress.update(
                task,
                completed=done,
                description=f"batch {day}: {names[done] if done < len(names) else 'done'}",
            )
            console.print(f"  {name}: {_summary(report)}")

        reports = run_batch(spark, settings, day, redis_url=lambda: redis_url(settings), on_step=advance)
    if report_path is not None:
        report_path.write_text(json.dumps(reports, indent=2, default=_jsonable))


def step_command(
    name: str = typer.Argument(..., help=", ".join(step_names())),
    run_date: str = typer.Option(..., "--date", help="Run date D (YYYY-MM-DD)."),
) -> None:
    """One step of the nightly pipeline for one date (the same steps the Airflow DAG runs)."""
    from rich.console import Console

    from feature_store.settings import load_settings
    from lambdarec.composition import redis_url, spark_session

    day = parse_day(run_date, "--date")
    settings = load_settings()
    console = Console()
    with console.status("starting Spark…"):
        spark = spark_session(settings)
    from spark_jobs.batch_pipeline import STEPS, run_step
    from spark_jobs.steps.context import BatchContext

    if name not in STEPS:
        raise typer.BadParameter(f"unknown step {name!r}; steps: {', '.join(STEPS)}", param_hint="NAME")
    with console.status(f"{name} for {day}…"):
        report = run_step(BatchContext(spark, settings, day, redis_url=lambda: redis_url(settings)), name)
    console.print(f"[bold]{name}[/bold] {day}: {_summary(report)}")


def _jsonable(value):
    """numpy scalars as their Python values, anything else (dates) as text."""
    return value.item() if hasattr(value, "item") else str(value)


def _summary(report: dict) -> str:
    """One line per step report: its scalar fields (nested results are in MLflow and the tables)."""
    return (
        ", ".join(f"{k}={v}" for k, v in report.items() if isinstance(v, (str, int, float, bool))) or "done"
    )


# name -> command function; other batch jobs (candidates, train, score, publish, run) add themselves here.
BATCH_COMMANDS: dict[str, Callable[..., None]] = {
    "interactions": interactions_command,
    "features": features_command,
    "run": run_command,
    "step": step_command,
}


def register(app: typer.Typer) -> None:
    batch_app = typer.Typer(
        help="Batch layer jobs on Spark + Delta over an explicit [start, end) window.", no_args_is_help=True
    )
    for name, command in BATCH_COMMANDS.items():
        batch_app.command(name)(command)
    app.add_typer(batch_app, name="batch")

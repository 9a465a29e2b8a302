"""`lambdarec batch ...`: the batch layer's jobs, one command each, over an explicit `[start, end)` window.

`register(app)` builds the `batch` group and adds every command of `BATCH_COMMANDS`; add a batch job
by writing its command function here and listing it there. Commands are thin: settings and Spark from
the composition root, then one spark_jobs step, then a printed report.
"""

from __future__ import annotations

from datetime import date
from typing import Callable

import typer


def parse_day(text: str, option: str) -> date:
    """A YYYY-MM-DD option value as a date (a clear error otherwise)."""
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise typer.BadParameter(f"{text!r} is not a date (YYYY-MM-DD)", param_hint=option) from exc


def parse_window(start: str, end: str) -> tuple[date, date]:
    first, last = parse_day(start, "--start"), parse_day(end, "--end")
    if last <= first:
        raise typer.BadParameter(f"--end {last} must be after --start {first} (the window is [start, end))", param_hint="--end")
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
        console.print(f"  silver interactions rebuilt for [{report.silver_window[0]}, {report.silver_window[1]}): {report.silver_rows:,} rows")
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
    console.print(f"[bold]interactions[/bold] for event dates [{report.start}, {report.end}): {report.rows_written:,} rows -> {report.table}")


# name -> command function; other batch jobs (candidates, train, score, publish, run) add themselves here.
BATCH_COMMANDS: dict[str, Callable[..., None]] = {
    "interactions": interactions_command,
    "features": features_command,
}


def register(app: typer.Typer) -> None:
    batch_app = typer.Typer(help="Batch layer jobs on Spark + Delta over an explicit [start, end) window.", no_args_is_help=True)
    for name, command in BATCH_COMMANDS.items():
        batch_app.command(name)(command)
    app.add_typer(batch_app, name="batch")

"""`lambdarec generate` and `lambdarec ingest`: data into the system.

Thin commands: parse options, build objects through the composition root, call lambdarec.datagen and
spark_jobs.ingest, print a report. Heavy imports (pyspark, numpy) happen inside the commands.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from enum import Enum
from pathlib import Path

import typer


class SourceFormat(str, Enum):
    jsonl = "jsonl"
    movielens = "movielens"


def register(app: typer.Typer) -> None:
    app.command("generate")(generate_command)
    app.command("ingest")(ingest_command)


def generate_command(
    out: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        help="Folder for events/, items.jsonl and manifest.json (default: <data dir>/generated).",
    ),
    events: int = typer.Option(100_000, help="Good events to write (exact)."),
    users: int = typer.Option(2_000, help="Users."),
    items: int = typer.Option(1_000, help="Items in the catalog on the first day (more arrive daily)."),
    new_items_per_day: float = typer.Option(5.0, help="Mean number of items arriving each day."),
    categories: int = typer.Option(12, help="Item categories."),
    days: int = typer.Option(30, help="Days of activity."),
    start: str = typer.Option("2026-10-01", help="First day (YYYY-MM-DD, UTC)."),
    bad_fraction: float = typer.Option(
        0.0, help="Share of rows that are bad (0-0.5), one quarantine reason each."
    ),
    shards: int = typer.Option(1, help="Event files to spread the events over."),
    seed: int = typer.Option(0, help="Random seed: the same options and seed give byte-identical files."),
) -> None:
    """Write a realistic synthetic event stream (JSON lines), an item catalog and a manifest."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from feature_store.settings import load_settings
    from lambdarec.datagen import GeneratorConfig, GeneratorError, generate

    out = out or load_settings().data_dir / "generated"
    try:
        config = GeneratorConfig(
            events=events,
            users=users,
            items=items,
            new_items_per_day=new_items_per_day,
            categories=categories,
            days=days,
            start=_parse_date(start, "--start"),
            bad_fraction=bad_fraction,
            shards=shards,
            seed=seed,
        )
        config.validate()
    except GeneratorError as exc:
        raise typer.BadParameter(str(exc)) from exc
    console = Console()
    with Progress(
        TextColumn("generating"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as bar:
        task = bar.add_task("events", total=events)
        manifest = generate(config, out, progress=lambda done, total: bar.update(task, completed=done))
    console.print(
        f"[bold]wrote[/bold] {manifest.rows_total:,} rows to {out / 'events'} ({len(manifest.events_files)} file(s))"
    )
    console.print(
        f"  good events: {manifest.good_rows:,}  ({', '.join(f'{k} {v:,}' for k, v in manifest.events_by_type.items())})"
    )
    console.print(
        f"  bad rows:    {manifest.bad_total:,}"
        + "".join(f"\n    {k}: {v:,}" for k, v in manifest.bad_rows.items() if v)
    )
    console.print(f"  catalog:     {manifest.items:,} items -> {out / manifest.catalog_file}")
    console.print(
        f"  users: {manifest.users:,}  sessions: {manifest.sessions:,}  time: {manifest.first_ts} .. {manifest.last_ts}"
    )
    console.print(f"  manifest:    {out / 'manifest.json'}")


def ingest_command(
    source: Path = typer.Option(
        ...,
        "--source",
        "-s",
        help="A .jsonl file, a folder of them (as `generate` writes), or an ml-latest-small folder.",
    ),
    fmt: SourceFormat = typer.Option(SourceFormat.jsonl, "--format", "-f", help="jsonl or movielens."),
    catalog: Path | None = typer.Option(
        None, help="Item catalog (JSON lines); default: items.jsonl next to the events."
    ),
) -> None:
    """Validate raw events and append them to bronze: good rows once to `events`, bad rows with their
    reason to `quarantine`, the catalog to `items`. Re-ingesting the same files adds nothing."""
    from rich.console import Console

    from feature_store.settings import load_settings
    from lambdarec.composition import spark_session
    from spark_jobs.sources import SourceError

    settings = load_settings()
    console = Console()
    if not source.exists():
        raise typer.BadParameter(f"{source} does not exist", param_hint="--source")
    with console.status("starting Spark…"):
        spark = spark_session(settings)
    from spark_jobs.ingest import ingest

    with console.status(f"ingesting {source} ({fmt.value})…"):
        try:
            report = ingest(spark, settings, source, fmt.value, datetime.now(UTC), catalog=catalog)
        except SourceError as exc:
            raise typer.BadParameter(str(exc), param_hint="--source") from exc
    from lambdarec.reports import print_ingest_report

    print_ingest_report(console, report)


def _parse_date(text: str, option: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise typer.BadParameter(f"{text!r} is not a date (YYYY-MM-DD)", param_hint=option) from exc

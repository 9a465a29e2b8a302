"""`lambdarec demo` and `lambdarec demo-stop`: the main job on embedded defaults (logic in lambdarec.demo)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer


class DemoDataset(str, Enum):
    synthetic = "synthetic"
    movielens = "movielens"


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_command)
    app.command("demo-stop")(demo_stop_command)


def demo_command(
    dataset: DemoDataset = typer.Option(
        DemoDataset.synthetic, "--dataset", "-d", help="synthetic (generated) or movielens."
    ),
    path: Path | None = typer.Option(
        None,
        "--path",
        help="MovieLens: an ml-latest-small folder (default ../shared/data/ml-latest-small); synthetic: where to generate.",
    ),
    events: int = typer.Option(
        40_000,
        "--events",
        min=1000,
        help="Synthetic: good events to generate (users and items scale with it).",
    ),
    services_only: bool = typer.Option(
        False, "--services-only", help="Only start the services (no data, no pipeline run)."
    ),
) -> None:
    """Run the whole loop on embedded services and print what happened; services stay up for `demo-stop`."""
    from rich.console import Console

    from feature_store.settings import load_settings
    from lambdarec.airflow_local import AirflowError
    from lambdarec.demo import DemoError, run_demo
    from lambdarec.local_services import ServiceError

    console = Console()
    try:
        run_demo(load_settings(), dataset.value, path, console, services_only=services_only, events=events)
    except (DemoError, ServiceError, AirflowError) as error:
        console.print(f"[red]demo stopped: {error}[/red]")
        console.print("Services it started may still run: `make demo-stop` stops them.")
        raise typer.Exit(1) from error


def demo_stop_command() -> None:
    """Stop every service `lambdarec demo` started (Airflow with SIGINT, so its workers stop too)."""
    from feature_store.settings import load_settings
    from lambdarec.demo import stop_demo

    stopped = stop_demo(load_settings())
    typer.echo(f"stopped: {', '.join(stopped)}" if stopped else "no demo service was running")

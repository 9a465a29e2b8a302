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
    dataset: DemoDataset = typer.Option(DemoDataset.synthetic, "--dataset", "-d", help="synthetic (generated) or movielens."),
    path: Path | None = typer.Option(
        None, "--path", help="MovieLens: an ml-latest-small folder (default ../shared/data/ml-latest-small); synthetic: where to generate."
    ),
) -> None:
    """Run the whole loop on embedded services and print what happened; services stay up for `demo-stop`."""
    from rich.console import Console

    from feature_store.settings import load_settings
    from lambdarec.demo import DemoError, run_demo
    from lambdarec.local_services import ServiceError

    console = Console()
    try:
        run_demo(load_settings(), dataset.value, path, console)
    except (DemoError, ServiceError) as error:
        console.print(f"[red]demo stopped: {error}[/red]")
        raise typer.Exit(1)


def demo_stop_command() -> None:
    """Stop every service `lambdarec demo` started (Airflow with SIGINT, so its workers stop too)."""
    from feature_store.settings import load_settings
    from lambdarec.demo import stop_demo

    stopped = stop_demo(load_settings())
    typer.echo(f"stopped: {', '.join(stopped)}" if stopped else "no demo service was running")

"""The `lambdarec` command line. Each command module in `lambdarec.commands` registers its commands;
modules import the layers lazily inside the commands, so `lambdarec --help` stays fast."""

from __future__ import annotations

import importlib

import typer

# One line per command module; each exposes `register(app)`.
COMMAND_MODULES: tuple[str, ...] = (
    "lambdarec.commands.services",
    "lambdarec.commands.spark_cluster",
    "lambdarec.commands.redis_cluster",
    "lambdarec.commands.stream",
    "lambdarec.commands.events",
    "lambdarec.commands.kafka",
    "lambdarec.commands.s3",
    "lambdarec.commands.data",
    "lambdarec.commands.batch",
    "lambdarec.commands.orchestration",
    "lambdarec.commands.demo",
    "lambdarec.commands.serve",
    "lambdarec.commands.replay",
    "lambdarec.commands.models",
    "lambdarec.commands.evaluate",
)


def build_app() -> typer.Typer:
    app = typer.Typer(
        name="lambdarec",
        help="Real-time recommendations on a lambda architecture (Spark + Delta, Structured Streaming, Redis, MLflow).",
        no_args_is_help=True,
        pretty_exceptions_show_locals=False,
    )
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(app)
    return app


def main() -> None:
    build_app()()

"""`lambdarec spark-cluster start|stop|status`: the local Spark standalone cluster (lambdarec.spark_cluster)."""

from __future__ import annotations

import json

import typer


def register(app: typer.Typer) -> None:
    cluster = typer.Typer(
        help="A Spark standalone master and workers on 127.0.0.1 (LAMBDAREC_SPARK_CLUSTER_*).",
        no_args_is_help=True,
    )

    @cluster.command("start")
    def start_command() -> None:
        """Start the master and workers (or find the running ones); print the master URL to use as
        LAMBDAREC_SPARK_MASTER."""
        from feature_store.settings import load_settings
        from lambdarec.spark_cluster import SparkClusterError, start_cluster

        try:
            state = start_cluster(load_settings())
        except SparkClusterError as exc:
            typer.echo(f"lambdarec spark-cluster: {exc}", err=True)
            raise typer.Exit(1) from None
        typer.echo(state["master_url"])

    @cluster.command("status")
    def status_command() -> None:
        """The recorded cluster (master URL, web UI, pids) as JSON; exit 1 when none is recorded."""
        from feature_store.settings import load_settings
        from lambdarec.spark_cluster import read_state

        state = read_state(load_settings())
        if state is None:
            typer.echo("no Spark cluster recorded for this data directory", err=True)
            raise typer.Exit(1)
        typer.echo(json.dumps(state))

    @cluster.command("stop")
    def stop_command() -> None:
        """Stop the workers and the master."""
        from feature_store.settings import load_settings
        from lambdarec.spark_cluster import stop_cluster

        typer.echo(
            "stopped the Spark cluster" if stop_cluster(load_settings()) else "no Spark cluster was running"
        )

    app.add_typer(cluster, name="spark-cluster")

"""`lambdarec kafka start|stop|bootstrap`: the local single-node Kafka broker (KRaft) of the data
directory, for `LAMBDAREC_EVENT_BUS=kafka` on one machine. `infra/local/start-kafka.sh` and
`stop-kafka.sh` run these."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    kafka = typer.Typer(
        help="The local Kafka broker (one KRaft node on loopback) for LAMBDAREC_EVENT_BUS=kafka.",
        no_args_is_help=True,
    )

    @kafka.command("start")
    def start_command(
        timeout_s: float = typer.Option(180.0, help="How long to wait for the broker to serve metadata."),
    ) -> None:
        """Start the broker (or find it running) with the event topic; prints its bootstrap address."""
        from feature_store.settings import load_settings
        from lambdarec.kafka_broker import KafkaJarsMissing, start_broker
        from lambdarec.local_services import ServiceError

        try:
            bootstrap = start_broker(load_settings(), timeout_s=timeout_s)
        except (KafkaJarsMissing, ServiceError) as exc:
            typer.secho(str(exc), fg=typer.colors.RED, err=True)
            raise typer.Exit(1) from None
        typer.echo(bootstrap)

    @kafka.command("stop")
    def stop_command() -> None:
        """Stop the data directory's broker (its topics stay under <data_dir>/kafka)."""
        from feature_store.settings import load_settings
        from lambdarec.kafka_broker import stop_broker

        typer.echo("stopped kafka" if stop_broker(load_settings()) else "no local kafka broker was running")

    @kafka.command("bootstrap")
    def bootstrap_command() -> None:
        """Print the bootstrap address of the running local broker (exit 1 when none runs)."""
        from feature_store.settings import load_settings
        from lambdarec.kafka_broker import running_bootstrap

        bootstrap = running_bootstrap(load_settings())
        if bootstrap is None:
            typer.secho("no local kafka broker runs", err=True)
            raise typer.Exit(1)
        typer.echo(bootstrap)

    app.add_typer(kafka, name="kafka")

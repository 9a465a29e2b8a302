"""`lambdarec s3 start|stop`: the local S3-compatible endpoint (moto's server) of the data directory,
for Delta tables on `s3a://` on one machine. `infra/local/s3.sh` runs these."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    s3 = typer.Typer(
        help="The local S3-compatible endpoint (in memory, loopback) for LAMBDAREC_TABLES_URI=s3a://...",
        no_args_is_help=True,
    )

    @s3.command("start")
    def start_command(
        timeout_s: float = typer.Option(
            60.0, help="How long to wait for the endpoint to accept connections."
        ),
    ) -> None:
        """Start the endpoint (or find it running) with the tables' bucket; prints `export` lines of the
        settings that put the tables there (`eval "$(lambdarec s3 start)"`)."""
        from feature_store.settings import load_settings
        from lambdarec.local_services import ServiceError
        from lambdarec.s3_server import DEFAULT_TABLES_URI, bucket_of, local_s3_environment, start_local_s3

        settings = load_settings()
        tables_uri = settings.tables_uri if settings.tables_on_s3a else DEFAULT_TABLES_URI
        try:
            endpoint = start_local_s3(settings, bucket_of(tables_uri), timeout_s=timeout_s)
        except ServiceError as exc:
            typer.secho(str(exc), fg=typer.colors.RED, err=True)
            raise typer.Exit(1) from None
        for name, value in local_s3_environment(endpoint, tables_uri).items():
            typer.echo(f"export {name}={value}")

    @s3.command("stop")
    def stop_command() -> None:
        """Stop the data directory's endpoint (its objects, the tables on it, go too)."""
        from feature_store.settings import load_settings
        from lambdarec.s3_server import stop_local_s3

        typer.echo("stopped s3" if stop_local_s3(load_settings()) else "no local s3 endpoint was running")

    app.add_typer(s3, name="s3")

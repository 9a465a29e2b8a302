"""`lambdarec services ...`: the embedded local services (the private redis-server)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    services = typer.Typer(
        help="Embedded local services (private redis-server of the data directory).", no_args_is_help=True
    )

    @services.command("redis-url")
    def redis_url_command() -> None:
        """Print the online store's URL, starting the private redis-server if none runs."""
        from feature_store.settings import load_settings
        from lambdarec.composition import redis_url

        typer.echo(redis_url(load_settings()))

    @services.command("stop")
    def stop_command() -> None:
        """Stop the private redis-server of the data directory."""
        from feature_store.settings import load_settings
        from lambdarec.redis_server import stop_shared_redis

        stopped = stop_shared_redis(load_settings().run_dir)
        typer.echo("stopped redis-server" if stopped else "no private redis-server was running")

    app.add_typer(services, name="services")

"""`lambdarec serve`: the recommendations API under uvicorn (uvloop + httptools), and
`lambdarec hash-api-key`: the digest to configure for an API key.

Thin entry point: settings -> composition root (the online store's URL) -> `serving.app.create_app`.
Never imports pyspark or spark_jobs, so the API process starts in about a second without a JVM.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from serving.tuning import ServingSwitches


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve_command(
        host: Annotated[
            str | None, typer.Option(help="Interface to bind (default LAMBDAREC_API_HOST, 127.0.0.1).")
        ] = None,
        port: Annotated[int | None, typer.Option(help="Port (default LAMBDAREC_API_PORT, 8000).")] = None,
        log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
        workers: Annotated[
            int,
            typer.Option(
                min=1, help="Worker processes sharing the port; each has its own cache and model watcher."
            ),
        ] = 1,
    ) -> None:
        """Serve GET /v1/recommendations, POST /v1/events, /v1/items/{id}/similar, /healthz, /readyz,
        /metrics (OpenAPI docs at /docs). Starts the private redis-server when LAMBDAREC_REDIS_URL is empty."""
        try:
            serve(host=host, port=port, workers=workers, log_level=log_level)
        except ServeRefused as exc:
            typer.echo(f"lambdarec serve: {exc}", err=True)
            raise typer.Exit(2) from None

    @app.command("hash-api-key")
    def hash_api_key_command(
        key: Annotated[str, typer.Argument(help="The API key clients will send in X-API-Key.")],
        scope: Annotated[
            list[str],
            typer.Option(
                help="What the key may do: read (recommendations), write (events); repeat for both. Default: both."
            ),
        ] = [],  # noqa: B006
    ) -> None:
        """Print the entry of an API key for LAMBDAREC_API_KEYS_SHA256 (a JSON list): its SHA-256 digest,
        followed by `:scopes` when it may do less than everything."""
        from serving.auth import SCOPES, hash_api_key

        unknown = sorted(set(scope) - set(SCOPES))
        if unknown:
            typer.echo(
                f"lambdarec hash-api-key: unknown scope(s) {unknown}; scopes are {', '.join(SCOPES)}",
                err=True,
            )
            raise typer.Exit(2)
        typer.echo(hash_api_key(key, tuple(s for s in SCOPES if s in scope)))


class ServeRefused(Exception):
    """The API was not started: no API keys in production, a bad key digest, no store or brokers."""


def serve(
    *,
    host: str | None = None,
    port: int | None = None,
    workers: int = 1,
    log_level: str = "info",
    switches: ServingSwitches | None = None,
) -> None:
    """`lambdarec serve`'s body: the environment's settings, the online store and brokers resolved once,
    then the API under uvicorn until it stops. `switches` (serving.tuning) turn optimizations off, for
    benchmarks (benchmarks.serve_variant); with several workers only the defaults, since each worker
    builds its app from the factory. Raises ServeRefused before anything starts."""
    import os

    import uvicorn

    from feature_store.settings import load_settings
    from lambdarec.composition import api_app, bus_settings, redis_url
    from serving.auth import BadApiKeyDigest, MissingApiKeys, guard_from_settings
    from serving.tuning import ServingSwitches

    switches = switches or ServingSwitches()
    settings = load_settings()
    try:
        if workers > 1 and switches != ServingSwitches():
            raise ValueError(f"switches {switches} apply to one worker; workers build the default app")
        guard_from_settings(settings)  # refuse before starting anything (a private redis-server)
        # Resolved once here and handed to the app (and every worker) through the environment, so
        # all use the same store and brokers (a private redis-server is started once, not per worker).
        settings = bus_settings(settings)
        os.environ["LAMBDAREC_REDIS_URL"] = redis_url(settings)
        if settings.kafka.bootstrap_servers:
            os.environ["LAMBDAREC_KAFKA_BOOTSTRAP_SERVERS"] = settings.kafka.bootstrap_servers
        api = api_app(switches) if workers == 1 else None
    except (MissingApiKeys, BadApiKeyDigest, ValueError) as exc:
        raise ServeRefused(str(exc)) from exc
    uvicorn.run(
        # Several workers: uvicorn spawns processes that each build the app from the factory.
        api if api is not None else "lambdarec.composition:api_app",
        factory=api is None,
        workers=workers,
        host=host or settings.serving.host,
        port=port or settings.serving.port,
        loop="uvloop" if switches.uvloop else "asyncio",
        http="httptools",
        access_log=False,  # a log line per request costs more than the request at these latencies
        log_level=log_level,
        timeout_graceful_shutdown=5,
    )

"""`lambdarec serve`: the recommendations API under uvicorn (uvloop + httptools), and
`lambdarec hash-api-key`: the digest to configure for an API key.

Thin entry point: settings -> composition root (the online store's URL) -> `serving.app.create_app`.
Never imports pyspark or spark_jobs, so the API process starts in about a second without a JVM.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve_command(
        host: Annotated[Optional[str], typer.Option(help="Interface to bind (default LAMBDAREC_API_HOST, 127.0.0.1).")] = None,
        port: Annotated[Optional[int], typer.Option(help="Port (default LAMBDAREC_API_PORT, 8000).")] = None,
        log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
    ) -> None:
        """Serve GET /v1/recommendations, POST /v1/events, /v1/items/{id}/similar, /healthz, /readyz,
        /metrics (OpenAPI docs at /docs). Starts the private redis-server when LAMBDAREC_REDIS_URL is empty."""
        import sys

        import uvicorn

        # MLflow probes `import pyspark` when the model registry client loads; the API process has no
        # use for Spark, so the probe finds nothing and the process stays free of pyspark.
        sys.modules.setdefault("pyspark", None)  # type: ignore[arg-type]

        from feature_store.settings import load_settings
        from lambdarec.composition import bus_settings, redis_url
        from serving.app import create_app
        from serving.auth import BadApiKeyDigest, MissingApiKeys, guard_from_settings

        settings = load_settings()
        try:
            guard_from_settings(settings)  # refuse before starting anything (a private redis-server)
            settings = bus_settings(settings)
            api = create_app(settings, redis_url=redis_url(settings))
        except (MissingApiKeys, BadApiKeyDigest, ValueError) as exc:
            typer.echo(f"lambdarec serve: {exc}", err=True)
            raise typer.Exit(2) from None
        uvicorn.run(
            api,
            host=host or settings.api_host,
            port=port or settings.api_port,
            loop="uvloop" if settings.serving_uvloop else "asyncio",
            http="httptools",
            access_log=False,  # a log line per request costs more than the request at these latencies
            log_level=log_level,
            timeout_graceful_shutdown=5,
        )

    @app.command("hash-api-key")
    def hash_api_key_command(
        key: Annotated[str, typer.Argument(help="The API key clients will send in X-API-Key.")],
        scope: Annotated[list[str], typer.Option(help="What the key may do: read (recommendations), write (events); repeat for both. Default: both.")] = [],  # noqa: B006
    ) -> None:
        """Print the entry of an API key for LAMBDAREC_API_KEYS_SHA256 (a JSON list): its SHA-256 digest,
        followed by `:scopes` when it may do less than everything."""
        from serving.auth import SCOPES, hash_api_key

        unknown = sorted(set(scope) - set(SCOPES))
        if unknown:
            typer.echo(f"lambdarec hash-api-key: unknown scope(s) {unknown}; scopes are {', '.join(SCOPES)}", err=True)
            raise typer.Exit(2)
        typer.echo(hash_api_key(key, tuple(s for s in SCOPES if s in scope)))

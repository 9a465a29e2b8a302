"""`lambdarec redis-cluster start|stop`: the data directory's private Redis Cluster (three masters of
redis-server in cluster mode on loopback, lambdarec.redis_server.EmbeddedRedisCluster)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    cluster = typer.Typer(
        help="A Redis Cluster of three masters on 127.0.0.1 as the online store (LAMBDAREC_REDIS_CLUSTER=true).",
        no_args_is_help=True,
    )

    @cluster.command("start")
    def start_command() -> None:
        """Start the cluster (or find the running one) and wait for cluster_state:ok; print a node's URL
        for LAMBDAREC_REDIS_URL (with LAMBDAREC_REDIS_CLUSTER=true)."""
        from feature_store.settings import load_settings
        from lambdarec.redis_server import RedisServerUnavailable, shared_cluster_url

        settings = load_settings()
        try:
            url = shared_cluster_url(settings.run_dir, settings.redis_cluster_dir, settings.redis.server_bin)
        except RedisServerUnavailable as exc:
            typer.echo(f"lambdarec redis-cluster: {exc}", err=True)
            raise typer.Exit(1) from None
        typer.echo(url)

    @cluster.command("stop")
    def stop_command() -> None:
        """Stop the cluster's redis-servers."""
        from feature_store.settings import load_settings
        from lambdarec.redis_server import stop_shared_cluster

        stopped = stop_shared_cluster(load_settings().run_dir)
        typer.echo("stopped the Redis Cluster" if stopped else "no Redis Cluster was running")

    app.add_typer(cluster, name="redis-cluster")

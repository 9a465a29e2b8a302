"""`lambdarec stream start|stop|status`: the speed layer's streaming job (spark_jobs.streaming.speed_job).

`start` runs the job in the foreground (Ctrl-C or SIGTERM stops it cleanly); `--background` starts it
as a local service (pid file and log under `<data_dir>/run`, lambdarec.local_services) and returns once
the job reports `running` in its status hash. `stop` sends SIGTERM and waits for the clean stop.
`status` prints the status hash `<p>:s:status` (freshness, counters, last batch) and whether a job is
alive: one started here (pid), or on any host while its heartbeat key `<p>:s:heartbeat` lasts (the job
renews it every second with TTL `stream_heartbeat_ttl_s`); `start` never starts a second one.
"""

from __future__ import annotations

import typer

SERVICE = "stream"


def _job_pid(settings, status: dict[str, str]) -> int | None:
    """The running job's pid: the background service's, else the foreground job's from its status."""
    import psutil

    from lambdarec.local_services import running_pid

    pid = running_pid(settings.run_dir, SERVICE)
    if pid is not None:
        return pid
    if status.get("state") != "running" or not status.get("pid", "").isdigit():
        return None
    try:
        cmdline = " ".join(psutil.Process(int(status["pid"])).cmdline())
    except psutil.NoSuchProcess:
        return None
    is_job = "speed_job" in cmdline or ("lambdarec" in cmdline and " stream " in f"{cmdline} ")
    return int(status["pid"]) if is_job else None


def read_status(settings) -> dict[str, str]:
    """The status hash, plus `heartbeat`: `<host>:<pid>` of the job alive on any host ("" when none)."""
    from feature_store.redis_keys import RedisKeys
    from feature_store.stream_liveness import current_heartbeat
    from lambdarec.composition import redis_client

    keys, client = RedisKeys(settings.redis.key_prefix), redis_client(settings)
    status = {k.decode(): v.decode() for k, v in client.hgetall(keys.speed_status).items()}
    status["heartbeat"] = current_heartbeat(client, keys)
    return status


def live_heartbeat(status: dict[str, str]) -> str | None:
    """The identity of the job alive by its heartbeat (feature_store.stream_liveness.live_identity)."""
    from feature_store.stream_liveness import live_identity

    return live_identity(status.get("heartbeat", ""))


def job_alive(settings, status: dict[str, str]) -> bool:
    """A job runs here (pid) or anywhere (its heartbeat lasts)."""
    return live_heartbeat(status) is not None or _job_pid(settings, status) is not None


def _stop_remote(settings, timeout_s: float) -> int:
    """Ask the job named by the heartbeat to stop (through Redis) and wait until its heartbeat is gone."""
    from feature_store.redis_keys import RedisKeys
    from feature_store.stream_liveness import current_heartbeat, request_stop
    from lambdarec.composition import redis_client
    from lambdarec.local_services import wait_until

    keys, client = RedisKeys(settings.redis.key_prefix), redis_client(settings)
    target = current_heartbeat(client, keys)
    if not target:
        typer.echo("the streaming job is not running")
        return 0
    request_stop(client, keys, target, max(timeout_s, settings.stream.heartbeat_ttl_s))
    if not wait_until(lambda: current_heartbeat(client, keys) != target, timeout_s):
        typer.secho(f"{target} did not stop within {timeout_s:.0f}s", fg=typer.colors.RED, err=True)
        return 1
    typer.echo(f"stopped the streaming job ({target})")
    return 0


def job_env(settings, redis_url: str) -> dict[str, str]:
    """What the background job must be told that this process resolved: the online store and, on
    Kafka, the brokers."""
    env = {"LAMBDAREC_REDIS_URL": redis_url}
    if settings.kafka.bootstrap_servers:
        env["LAMBDAREC_KAFKA_BOOTSTRAP_SERVERS"] = settings.kafka.bootstrap_servers
    return env


def register(app: typer.Typer) -> None:
    stream = typer.Typer(
        help="The speed layer: Spark Structured Streaming from the event bus to Redis and Delta.",
        no_args_is_help=True,
    )

    @stream.command("start")
    def start_command(
        background: bool = typer.Option(
            False, "--background", help="Run as a background service (pid file and log in <data_dir>/run)."
        ),
        timeout_s: float = typer.Option(
            180.0, help="With --background: how long to wait for the job to report running."
        ),
    ) -> None:
        """Start the streaming job (foreground unless --background)."""
        import os
        import sys
        import time

        from feature_store.settings import load_settings
        from lambdarec.composition import bus_settings, redis_url

        try:
            settings = bus_settings(load_settings())
        except ValueError as exc:
            typer.secho(str(exc), fg=typer.colors.RED, err=True)
            raise typer.Exit(2) from None
        url = redis_url(settings)  # starts the private redis-server now, so the job finds the same one
        status = read_status(settings)
        running = _job_pid(settings, status)
        if running is not None:
            typer.echo(f"the streaming job already runs (pid {running})")
            return
        elsewhere = live_heartbeat(status)
        if elsewhere is not None:
            typer.echo(f"the streaming job already runs ({elsewhere}, by its heartbeat)")
            return
        if not background:
            from spark_jobs.streaming.speed_job import run_until_signalled

            raise typer.Exit(run_until_signalled(settings, url))
        from lambdarec.local_services import ServiceError, ServiceSpec, log_file, start_service

        started = int(time.time() * 1000)

        def ready() -> bool:
            status = read_status(settings)
            return status.get("state") == "running" and int(status.get("started_at", 0)) >= started

        spec = ServiceSpec(
            SERVICE,
            [sys.executable, "-m", "spark_jobs.streaming.speed_job"],
            env={**os.environ, **job_env(settings, url)},
        )
        try:
            pid = start_service(spec, settings.run_dir, ready, timeout_s=timeout_s)
        except ServiceError as error:
            typer.secho(str(error), fg=typer.colors.RED, err=True)
            raise typer.Exit(1) from error
        typer.echo(f"streaming job running (pid {pid}); log: {log_file(settings.run_dir, SERVICE)}")

    @stream.command("stop")
    def stop_command(
        timeout_s: float = typer.Option(60.0, help="How long to wait for the clean stop before killing."),
        remote: bool = typer.Option(
            False,
            "--remote",
            help="Ask the job through Redis, wherever it runs (its heartbeat names it); it stops cleanly "
            "and exits, and its container or Deployment starts it again.",
        ),
    ) -> None:
        """Stop the streaming job: SIGTERM, then wait until the running micro-batch finished and it exited."""
        import os
        import signal

        from feature_store.settings import load_settings
        from lambdarec.local_services import running_pid, stop_service, wait_until

        settings = load_settings()
        if remote:
            raise typer.Exit(_stop_remote(settings, timeout_s))
        if running_pid(settings.run_dir, SERVICE) is not None:
            stop_service(SERVICE, settings.run_dir, signal.SIGTERM, timeout_s=timeout_s)
            typer.echo("stopped the streaming job")
            return
        status = read_status(settings)
        pid = _job_pid(settings, status)
        elsewhere = live_heartbeat(status)
        if pid is None and elsewhere is not None:
            typer.secho(
                f"the streaming job runs as {elsewhere}, not on this machine: stop it there or with --remote",
                fg=typer.colors.RED,
                err=True,
            )
            raise typer.Exit(1)
        if pid is None:
            typer.echo("the streaming job is not running")
            return
        os.kill(pid, signal.SIGTERM)
        import psutil

        if not wait_until(lambda: not psutil.pid_exists(pid), timeout_s):
            typer.secho(f"pid {pid} did not stop within {timeout_s:.0f}s", fg=typer.colors.RED, err=True)
            raise typer.Exit(1)
        typer.echo("stopped the streaming job")

    @stream.command("status")
    def status_command(
        as_json: bool = typer.Option(False, "--json", help="Print the status hash as JSON."),
    ) -> None:
        """Print the streaming job's status: state, freshness (lag p50/p99), processed/quarantined counts."""
        import json

        from rich.console import Console
        from rich.table import Table

        from feature_store.settings import load_settings

        settings = load_settings()
        status = read_status(settings)
        status["alive"] = "yes" if job_alive(settings, status) else "no"
        if as_json:
            typer.echo(json.dumps(status, indent=2, sort_keys=True))
            return
        table = Table("field", "value", title="streaming job")
        for key in sorted(status):
            table.add_row(key, status[key])
        Console().print(table)

    app.add_typer(stream, name="stream")

"""`lambdarec airflow ...` and `lambdarec mlflow-ui ...`: the local Airflow and MLflow UI.

Thin commands over `lambdarec.airflow_local` (what `make demo` starts, one piece at a time).
"""

from __future__ import annotations

from datetime import date

import typer


def _settings():
    from feature_store.settings import load_settings

    return load_settings()


def _fail(error: Exception) -> None:
    typer.secho(str(error), fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    airflow = typer.Typer(
        help="The local Airflow (`airflow standalone`) running lambdarec's DAGs.", no_args_is_help=True
    )

    @airflow.command("start")
    def start_command() -> None:
        """Start `airflow standalone` on LAMBDAREC_AIRFLOW_PORT and print the admin login."""
        import os

        from lambdarec.airflow_local import airflow_url, start_airflow
        from lambdarec.local_services import ServiceError

        settings = _settings()
        try:
            password = start_airflow(settings, os.environ)
        except ServiceError as error:
            _fail(error)
        typer.echo(
            f"Airflow: {airflow_url(settings)}  (user {settings.airflow.admin_user}, password {password})"
        )

    @airflow.command("stop")
    def stop_command() -> None:
        """Stop the local Airflow (SIGINT, so its scheduler, API server and workers stop too)."""
        from lambdarec.airflow_local import stop_airflow

        typer.echo("stopped Airflow" if stop_airflow(_settings()) else "Airflow was not running")

    @airflow.command("env")
    def env_command() -> None:
        """Print the environment lambdarec runs Airflow with (source it to use the `airflow` CLI)."""
        import os
        import shlex

        from lambdarec.airflow_local import airflow_env, prepare_airflow_home

        settings = _settings()
        prepare_airflow_home(settings)
        env = airflow_env(settings, os.environ)
        for key in sorted(env):
            if key.startswith(("AIRFLOW", "LAMBDAREC_", "PYSPARK_", "SPARK_")) or key == "PATH":
                typer.echo(f"export {key}={shlex.quote(env[key])}")

    @airflow.command("trigger")
    def trigger_command(
        dag_id: str = typer.Argument("lambdarec_nightly", help="DAG to run."),
        day: str = typer.Option(
            None, "--date", help="Pipeline date YYYY-MM-DD (the run's data interval ends then)."
        ),
        wait: bool = typer.Option(True, help="Wait until the run finishes."),
        timeout_s: float = typer.Option(3600, "--timeout", help="Seconds to wait."),
    ) -> None:
        """Trigger a DAG through Airflow's REST API (unpausing it first) and wait for the run."""
        from lambdarec.airflow_local import (
            AirflowClient,
            AirflowError,
            airflow_url,
            ensure_admin_password,
            manual_run_id,
            midnight_utc,
        )

        settings = _settings()
        try:
            when = midnight_utc(date.fromisoformat(day) if day else date.today())
        except ValueError:
            _fail(ValueError(f"--date must be YYYY-MM-DD, got {day!r}"))
        client = AirflowClient(
            airflow_url(settings), settings.airflow.admin_user, ensure_admin_password(settings)
        )
        try:
            client.wait_for_dags((dag_id,), timeout_s=120)
            client.unpause(dag_id)
            run_id = client.trigger(dag_id, when, manual_run_id(dag_id, when, "cli"))
            typer.echo(f"triggered {dag_id} run {run_id}")
            if wait:
                state = client.wait_for_run(dag_id, run_id, timeout_s)
                typer.echo(f"{dag_id} run {run_id}: {state}")
                if state != "success":
                    raise typer.Exit(1)
        except AirflowError as error:
            _fail(error)

    app.add_typer(airflow, name="airflow")

    mlflow_ui = typer.Typer(help="The local MLflow UI on the settings' tracking store.", no_args_is_help=True)

    @mlflow_ui.command("start")
    def mlflow_start_command() -> None:
        """Start `mlflow server` on LAMBDAREC_MLFLOW_UI_PORT (tracking store and artifacts from settings)."""
        import os

        from lambdarec.airflow_local import start_mlflow_ui
        from lambdarec.local_services import ServiceError

        try:
            typer.echo(f"MLflow UI: {start_mlflow_ui(_settings(), os.environ)}")
        except ServiceError as error:
            _fail(error)

    @mlflow_ui.command("stop")
    def mlflow_stop_command() -> None:
        """Stop the local MLflow UI."""
        from lambdarec.airflow_local import stop_mlflow_ui

        typer.echo(
            "stopped the MLflow UI" if stop_mlflow_ui(_settings()) else "the MLflow UI was not running"
        )

    app.add_typer(mlflow_ui, name="mlflow-ui")

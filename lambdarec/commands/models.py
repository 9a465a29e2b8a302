"""`lambdarec models list|promote|rollback`: the ranker's registered versions and its aliases.

The same aliases the nightly promotion gate moves and the MLflow UI shows: `champion` (what batch
scoring and serving load) and `challenger`. Setting `champion` in the MLflow UI is equivalent to
`lambdarec models promote`.
"""

from __future__ import annotations

from datetime import UTC

import typer


def gate_evidence(tags: dict[str, str]) -> str:
    """The gate's measured gain and interval from a version's tags: `+0.0123 [+0.0040, +0.0205] (812)`."""
    if "gate.gain" not in tags:
        return ""
    gain, low, high = (float(tags[f"gate.{k}"]) for k in ("gain", "ci_low", "ci_high"))
    return f"{gain:+.4f} [{low:+.4f}, {high:+.4f}] ({tags['gate.users']})"


def register(app: typer.Typer) -> None:
    models = typer.Typer(
        help="Registered ranker versions and the champion/challenger aliases (MLflow).", no_args_is_help=True
    )

    @models.command("list")
    def list_command() -> None:
        """Every registered version, newest first: aliases, kind, training date, holdout NDCG@10, and the
        gate's decision (promoted / not enough evidence) with the measured gain, its interval and users."""
        from datetime import datetime

        from rich.console import Console
        from rich.table import Table

        from feature_store.settings import load_settings
        from spark_jobs.model_registry import list_versions

        settings = load_settings()
        versions = list_versions(settings)
        if not versions:
            typer.echo(
                f"no versions of {settings.ranker.model_name} yet: run `lambdarec batch run --date YYYY-MM-DD`"
            )
            return
        table = Table(title=f"{settings.ranker.model_name} ({settings.registry_uri})")
        for column in (
            "version",
            "aliases",
            "kind",
            "trained as_of",
            "holdout ndcg@10",
            "created",
            "gate",
            "gain [CI] (users)",
        ):
            table.add_column(column)
        for v in versions:
            tags = v["tags"]
            created = datetime.fromtimestamp(v["created"] / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M")
            ndcg = tags.get("holdout.ndcg_at_10")
            table.add_row(
                v["version"],
                ", ".join(v["aliases"]),
                tags.get("kind", ""),
                tags.get("as_of", ""),
                f"{float(ndcg):.4f}" if ndcg else "",
                created,
                tags.get("gate.decision", ""),
                gate_evidence(tags),
            )
        Console().print(table)

    @models.command("promote")
    def promote_command(
        version: str = typer.Argument(..., help="Registered version to make champion."),
    ) -> None:
        """Make VERSION the champion by hand (no gate); the previous champion is kept for rollback."""
        from feature_store.settings import load_settings
        from spark_jobs.model_registry import list_versions, set_champion

        settings = load_settings()
        if version not in {v["version"] for v in list_versions(settings)}:
            raise typer.BadParameter(
                f"{settings.ranker.model_name} has no version {version}; see `lambdarec models list`",
                param_hint="VERSION",
            )
        set_champion(settings, version)
        typer.echo(f"{settings.ranker.model_name}@champion -> version {version}")

    @models.command("rollback")
    def rollback_command() -> None:
        """Move champion back to the previous champion."""
        from feature_store.settings import load_settings
        from spark_jobs.model_registry import NoChampion, rollback

        settings = load_settings()
        try:
            version = rollback(settings)
        except NoChampion as exc:
            typer.echo(str(exc), err=True)
            raise typer.Exit(1) from exc
        typer.echo(f"{settings.ranker.model_name}@champion -> version {version} (rolled back)")

    app.add_typer(models, name="models")

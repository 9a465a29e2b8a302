"""`lambdarec replay`: replay evaluation through the real layers (batch at T, streaming job, serving).

Thin entry point: options -> `lambdarec.replay.runner.run_replay` with the composition root's Spark
session -> a table and an optional JSON file. The protocol is in lambdarec/replay/protocol.py and the
README's "Replay evaluation" section.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    @app.command("replay")
    def replay_command(
        events: Annotated[
            Path | None,
            typer.Option(help="JSON lines events: a file, or a folder as `lambdarec generate` writes it."),
        ] = None,
        ratings: Annotated[
            Path | None,
            typer.Option(
                help="Ratings CSV user,item,rating,timestamp-seconds (MovieLens ratings.csv), or its folder."
            ),
        ] = None,
        items: Annotated[
            Path | None,
            typer.Option(
                help="Catalog: items.jsonl for --events, movies CSV (item,title,genres) for --ratings."
            ),
        ] = None,
        cutoff: Annotated[
            str | None,
            typer.Option(
                help="Cut-off date T (YYYY-MM-DD, 00:00 UTC): the batch learns from events before it."
            ),
        ] = None,
        holdout_fraction: Annotated[
            float,
            typer.Option(help="Without --cutoff: the midnight leaving about this share of events after T."),
        ] = 0.1,
        k: Annotated[
            int,
            typer.Option(
                min=1, max=100, help="Recommendations per question; a hit is the held-out item among them."
            ),
        ] = 10,
        speed: Annotated[
            str,
            typer.Option(
                help="`max` (as fast as the pipeline allows) or `realtime-xN` (event time N times faster than wall time)."
            ),
        ] = "max",
        slice_seconds: Annotated[
            list[float],
            typer.Option(
                help="Most event time one round's slice spans before a question; repeat for one pass per size."
            ),
        ] = [60.0],  # noqa: B006
        max_targets: Annotated[
            int,
            typer.Option(help="Ask about a seeded uniform sample of this many held-out events (0 = all)."),
        ] = 2000,
        seed: Annotated[int, typer.Option(help="Seed of the sample.")] = 0,
        warmup_days: Annotated[
            float,
            typer.Option(help="Days before T replayed through the speed layer first, without questions."),
        ] = 7.0,
        variant: Annotated[
            list[str],
            typer.Option(
                help="Extra serving configuration asked the same questions: NAME:speed|batch:SETTING=VALUE[,...] (e.g. priors_only:speed:serving_use_ranker=false)."
            ),
        ] = [],  # noqa: B006
        work_dir: Annotated[
            Path | None,
            typer.Option(
                help="Scratch folder (own Redis, Delta, MLflow); default <data_dir>/replay. Emptied first."
            ),
        ] = None,
        output: Annotated[Path | None, typer.Option(help="Write the full result as JSON here.")] = None,
    ) -> None:
        """Train the batch layer on everything before T exactly as the nightly job does, replay the events
        after T in time order through the event bus and the streaming job, and before each sampled
        held-out event ask the serving code for that user's top k. Reports HR, NDCG and MRR at k and
        coverage for popularity, batch only, batch + speed and speed-only heuristics, and the freshness lag."""
        import json

        from feature_store.settings import load_settings
        from lambdarec.replay.dataset import ReplayInputError, parse_cutoff
        from lambdarec.replay.protocol import ReplayProtocolError, ReplaySpeed

        if (events is None) == (ratings is None):
            raise typer.BadParameter(
                "give exactly one of --events FILE.jsonl or --ratings FILE.csv",
                param_hint="--events/--ratings",
            )
        from lambdarec.replay.runner import ReplayOptions, ServingVariant

        try:
            replay_speed = ReplaySpeed.parse(speed)
            cut = parse_cutoff(cutoff) if cutoff else None
            variants = tuple(ServingVariant.parse(v) for v in variant)
        except (ValueError, ReplayInputError, ReplayProtocolError) as exc:
            raise typer.BadParameter(str(exc)) from None

        options = ReplayOptions(
            source=events or ratings,
            format="jsonl" if events else "movielens",
            items=items,
            cutoff=cut,
            holdout_fraction=holdout_fraction,
            k=k,
            speed=replay_speed,
            slice_s=tuple(slice_seconds),
            max_targets=max_targets or None,
            seed=seed,
            warmup_days=warmup_days,
            variants=variants,
        )
        settings = load_settings()
        result = _run(settings, options, work_dir or settings.data_dir / "replay")
        if output:
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text(json.dumps(result, indent=2))
        _print(result)


def _run(settings, options, work_dir: Path) -> dict:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from lambdarec.composition import spark_session
    from lambdarec.replay.dataset import ReplayInputError
    from lambdarec.replay.runner import SpeedLayerStalled, run_replay

    console = Console()
    with console.status("starting Spark…"):
        spark = spark_session(settings)
    tasks: dict[str, int] = {}
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as bar:

        def progress(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(
                    "batch layer at T (ingest, features, models, publish)"
                    if phase == "batch"
                    else f"replay, {phase} slices",
                    total=total,
                )
            bar.update(tasks[phase], completed=done, total=total)

        try:
            return run_replay(spark, settings, options, work_dir, progress)
        except (ReplayInputError, SpeedLayerStalled) as exc:
            console.print(f"[red]lambdarec replay: {exc}[/red]")
            raise typer.Exit(2) from None
        finally:
            spark.stop()


def _print(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    from lambdarec.replay.scoring import MODEL_TITLES

    console = Console()
    k = result["k"]
    console.print(
        f"cut-off {result['cutoff']}: {result['events_before_cutoff']:,} events before, {result['events_held_out']:,} held out "
        f"({result['held_out_share']:.0%}); asked about {result['targets_asked']:,} of {result['targets_eligible']:,} "
        f"held-out first-time events of {result['users_asked']:,} users"
    )
    for one in result["passes"]:
        table = Table(
            title=f"slices of at most {one['slice_s']:g} s: {one['rounds']} rounds, {one['wall_s']} s"
        )
        for column in ("model", f"HR@{k}", f"NDCG@{k}", f"MRR@{k}", f"coverage@{k}"):
            table.add_column(column, justify="left" if column == "model" else "right")
        for name, m in one["models"].items():
            table.add_row(
                MODEL_TITLES.get(name, name),
                f"{m[f'hr@{k}']:.4f} ± {m['hr_se']:.4f}",
                f"{m[f'ndcg@{k}']:.4f}",
                f"{m[f'mrr@{k}']:.4f}",
                f"{m[f'coverage@{k}']:.4f}",
            )
        console.print(table)
        diff = one["batch_speed_minus_batch_only"][f"hr@{k}"]
        fresh = one["freshness_ms"]
        console.print(
            f"batch + speed − batch only: HR@{k} {diff['mean']:+.4f} ± {diff['se']:.4f} (paired s.e.); "
            f"freshness (published → applied) p50 {fresh['p50']:.0f} ms, p95 {fresh['p95']:.0f} ms"
        )

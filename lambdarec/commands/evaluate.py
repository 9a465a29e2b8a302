"""`lambdarec evaluate`: the batch models' offline metrics on any ratings file (protocol in
spark_jobs/offline_eval.py and the README), written as JSON."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def evaluate_command(
    ratings: Path | None = typer.Option(
        None, help="CSV with header user_id,item_id,rating,timestamp (split here)."
    ),
    split: str = typer.Option("time", help="time | stratified-user | stratified-item (with --ratings)."),
    ratio: float = typer.Option(0.75, help="Share of ratings in the train part."),
    seed: int = typer.Option(42, help="Seed of the stratified splits, negative sampling and the rankers."),
    k: int = typer.Option(10, help="Cut-off of every metric (NDCG@k, MAP@k, ...)."),
    output: Path = typer.Option(..., help="Where to write the metrics (JSON)."),
    items: Path | None = typer.Option(
        None, help="Optional CSV item_id,title,genres (first genre = category)."
    ),
    train: Path | None = typer.Option(None, help="Train part split elsewhere (same header as --ratings)."),
    test: Path | None = typer.Option(None, help="Test part split elsewhere (with --train)."),
    predictions: Path | None = typer.Option(
        None, help="Also write every model's top k per test user here (CSV model,user_id,item_id,rank,score)."
    ),
) -> None:
    """Train popularity, ALS, co-visitation, XGBoost, LightGBM and their blend on the train part and
    write each model's metrics@k on the test part (relevance = any held-out rating; items the user had
    in train are never ranked), and the candidate recall@50/100/200 of each source and their union."""
    from rich.console import Console

    from feature_store.settings import load_settings
    from lambdarec.composition import spark_session

    given = train is not None or test is not None
    if given == (ratings is not None):
        raise typer.BadParameter(
            "give either --ratings (and --split) or both --train and --test", param_hint="--ratings"
        )
    if given and (train is None or test is None):
        raise typer.BadParameter("--train and --test go together", param_hint="--train")
    from spark_jobs.offline_eval import SPLITS

    if not given and split not in SPLITS:
        raise typer.BadParameter(f"{split!r} is not one of {', '.join(SPLITS)}", param_hint="--split")
    for path in (ratings, train, test, items):
        if path is not None and not path.is_file():
            raise typer.BadParameter(f"{path} does not exist", param_hint=str(path))

    settings = load_settings()
    console = Console()
    with console.status("starting Spark…"):
        spark = spark_session(settings)
    from spark_jobs.offline_eval import (
        RatingsFileError,
        evaluate_split,
        read_items,
        read_ratings,
        split_ratings,
    )
    from spark_jobs.session import job_cache

    try:
        with job_cache(spark):
            catalog = read_items(spark, str(items)) if items else None
            if given:
                train_df, test_df, method = (
                    read_ratings(spark, str(train)),
                    read_ratings(spark, str(test)),
                    None,
                )
            else:
                train_df, test_df = split_ratings(read_ratings(spark, str(ratings)), split, ratio, seed)
                method = split
            with console.status("evaluating…") as status:
                result = evaluate_split(
                    spark,
                    settings,
                    train_df.cache(),
                    test_df.cache(),
                    method,
                    ratio,
                    seed,
                    k,
                    catalog,
                    progress=lambda message: status.update(f"evaluating: {message}…"),
                    write_predictions=(lambda frame: write_predictions_csv(frame, predictions))
                    if predictions
                    else None,
                )
    except RatingsFileError as exc:
        raise typer.BadParameter(str(exc)) from exc
    result["inputs"] = {
        "ratings": str(ratings) if ratings else None,
        "train": str(train) if train else None,
        "test": str(test) if test else None,
        "items": str(items) if items else None,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2, sort_keys=True))
    counts = result["counts"]
    console.print(
        metrics_table(
            f"metrics@{k} ({result['split']}), {counts['test_users_with_relevant_items']} test users",
            result["models"],
            k,
        )
    )
    console.print(
        metrics_table(
            f"warm test users only ({counts['warm_test_users_with_relevant_items']} with train history)",
            result["warm_models"],
            k,
        )
    )
    console.print(recall_table(result["candidate_recall"]))
    console.print(f"written {output}")
    if predictions:
        console.print(f"written {predictions}")


def write_predictions_csv(frame, path: Path) -> None:
    """One CSV with a header, ordered by model, user and rank (small: k rows per user and model)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.orderBy("model", "user_id", "rank").toPandas().to_csv(path, index=False)


def recall_table(recall: dict[str, float]):
    """A rich Table of candidate recall: one row per source and the union, one column per N."""
    from rich.table import Table

    from spark_jobs.metrics import parse_metric_key

    keys = [parse_metric_key(key) for key in recall if key != "users"]
    cutoffs = sorted({n for _, n in keys})
    table = Table(title=f"candidate recall ({int(recall['users'])} test users)")
    table.add_column("source")
    for n in cutoffs:
        table.add_column(f"recall@{n}", justify="right")
    for source in dict.fromkeys(name for name, _ in keys):
        table.add_row(source, *[f"{recall[f'{source}@{n}']:.4f}" for n in cutoffs])
    return table


def metrics_table(title: str, models: dict[str, dict[str, float]], k: int):
    """A rich Table: one row per model, the metrics@k as columns."""
    from rich.table import Table

    table = Table(title=title)
    metrics = [
        f"ndcg@{k}",
        f"map@{k}",
        f"recall@{k}",
        f"precision@{k}",
        f"hr@{k}",
        f"mrr@{k}",
        f"coverage@{k}",
    ]
    table.add_column("model")
    for metric in metrics:
        table.add_column(metric, justify="right")
    for model, values in models.items():
        table.add_row(model, *[f"{values[m]:.4f}" for m in metrics])
    return table


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate_command)

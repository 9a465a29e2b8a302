"""How sure is "the ranker beats its best input"? Paired per-user NDCG@k from `lambdarec evaluate
--predictions`, with a bootstrap confidence interval of each ranker's difference to each single source.

The evaluate JSON holds means only. This re-splits the ratings exactly as the command did (same
`split_ratings`, ratio and seed), takes the same relevance (`held_out_relevance`), scores every model's
written top k per user with `spark_jobs.metrics.ndcg_at_k` (a user without a list scores 0), checks the
means against the JSON, and pairs users (`spark_jobs.significance.paired_bootstrap`).

`python -m benchmarks.paired_predictions --ratings R.csv --split stratified-item --ratio 0.75 --seed 42
--predictions P.csv --evaluate E.json --out DIR`; `--against P2.csv,E2.json --against-label NAME` also pairs
each ranker with the same ranker of another run (an ablation against its baseline).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from benchmarks.common import machine_info, main, write_result

NAME = "paired_predictions"
RANKERS = ("xgboost", "lightgbm", "blend")


def per_user_ndcg(
    predictions: pd.DataFrame, relevance: Mapping[str, Mapping[str, float]], k: int
) -> dict[str, dict[str, float]]:
    """model -> user -> NDCG@k over every user with relevant items (no list: 0)."""
    from spark_jobs.metrics import ndcg_at_k

    lists = {
        (model, user): group.sort_values("rank")["item_id"].astype(str).tolist()
        for (model, user), group in predictions.groupby(["model", "user_id"])
    }
    models = sorted(predictions["model"].unique())
    return {
        model: {user: ndcg_at_k(lists.get((model, user), []), gains, k) for user, gains in relevance.items()}
        for model in models
    }


def paired_rows(ndcg: Mapping[str, Mapping[str, float]], rankers: Sequence[str], seed: int = 0) -> list[dict]:
    """Each ranker against each other model: mean difference, its 95 % bootstrap interval, and how many
    users are better / worse."""
    from spark_jobs.significance import paired_bootstrap

    rows = []
    for ranker in rankers:
        users = sorted(ndcg[ranker])
        for baseline in sorted(set(ndcg) - set(rankers)):
            mine = [ndcg[ranker][u] for u in users]
            theirs = [ndcg[baseline][u] for u in users]
            diff = paired_bootstrap(mine, theirs, resamples=2000, seed=seed)
            rows.append(
                {
                    "ranker": ranker,
                    "baseline": baseline,
                    "users": diff.users,
                    "ranker_ndcg": round(sum(mine) / len(users), 4),
                    "baseline_ndcg": round(sum(theirs) / len(users), 4),
                    "mean_diff": round(diff.mean, 4),
                    "ci95": [round(diff.low, 4), round(diff.high, 4)],
                    "relative": round(diff.mean / (sum(theirs) / len(users)), 4),
                    "better": sum(a > b for a, b in zip(mine, theirs)),
                    "worse": sum(a < b for a, b in zip(mine, theirs)),
                }
            )
    return rows


def against_rows(
    ndcg: Mapping[str, Mapping[str, float]], rankers: Sequence[str], label: str, seed: int = 0
) -> list[dict]:
    """Each ranker of this run against the same ranker of the run `label` (its models are named
    `<model>@<label>`): the paired difference this run - that run, as `paired_rows` gives it."""
    rows = []
    for ranker in rankers:
        other = f"{ranker}@{label}"
        if other not in ndcg:
            continue
        rows += paired_rows({ranker: ndcg[ranker], other: ndcg[other]}, [ranker], seed)
    return rows


def scored_means(ndcg: Mapping[str, Mapping[str, float]], written: dict, label: str = "") -> dict[str, float]:
    """Each model's mean, checked against the evaluate JSON that wrote its predictions."""
    suffix = f"@{label}" if label else ""
    means = {
        m: sum(v.values()) / len(v)
        for m, v in ndcg.items()
        if m.endswith(suffix) and ("@" in m) == bool(label)
    }
    mismatch = {
        m: (means[m], written["models"][m.removesuffix(suffix)]["ndcg@10"])
        for m in means
        if abs(means[m] - written["models"][m.removesuffix(suffix)]["ndcg@10"]) > 1e-9
    }
    if mismatch:
        raise SystemExit(
            f"re-scored means differ from the evaluate JSON{' of ' + label if label else ''}: {mismatch}"
        )
    return means


def run(
    quick: bool,
    out_dir: Path,
    ratings: str,
    split: str,
    ratio: float,
    seed: int,
    predictions: str,
    evaluate: str,
    against: str | None = None,
    against_label: str = "baseline",
) -> dict:
    from feature_store.settings import Settings
    from lambdarec.composition import spark_session
    from spark_jobs.offline_eval import held_out_relevance, read_ratings, split_ratings

    written = json.loads(Path(evaluate).read_text())
    spark = spark_session(Settings(spark_master="local[2]", spark_shuffle_partitions=2))
    train, test = split_ratings(read_ratings(spark, ratings), split, ratio, seed)
    pairs = held_out_relevance(test, train).toPandas()
    relevance: dict[str, dict[str, float]] = {}
    for user, item, gain in zip(pairs["user_id"], pairs["item_id"], pairs["relevance"]):
        relevance.setdefault(str(user), {})[str(item)] = float(gain)
    frame = pd.read_csv(predictions, dtype={"user_id": str, "item_id": str})
    if against:
        other_predictions, other_evaluate = against.split(",")
        other = pd.read_csv(other_predictions, dtype={"user_id": str, "item_id": str})
        frame = pd.concat([frame, other.assign(model=other["model"] + f"@{against_label}")])
    ndcg = per_user_ndcg(frame, relevance, written["k"])
    means = scored_means(ndcg, written)
    if against:
        means.update(scored_means(ndcg, json.loads(Path(other_evaluate).read_text()), against_label))
    mine = {m: v for m, v in ndcg.items() if "@" not in m}
    rankers = [r for r in RANKERS if r in ndcg]
    result = {
        "machine": machine_info(),
        "inputs": {
            "ratings": ratings,
            "split": split,
            "ratio": ratio,
            "seed": seed,
            "evaluate": evaluate,
            "against": against,
            "against_label": against_label if against else None,
        },
        "users": len(relevance),
        "means": {m: round(v, 4) for m, v in sorted(means.items())},
        "paired": paired_rows(mine, rankers, seed),
        "against": against_rows(ndcg, rankers, against_label, seed) if against else [],
    }
    write_result(out_dir, NAME, result)
    return result


if __name__ == "__main__":
    main(
        run,
        {
            "--ratings": {"required": True},
            "--split": {"default": "stratified-item"},
            "--ratio": {"type": float, "default": 0.75},
            "--seed": {"type": int, "default": 42},
            "--predictions": {"required": True},
            "--evaluate": {"required": True, "help": "the evaluate JSON of the same run (means checked)"},
            "--against": {
                "default": None,
                "help": "P.csv,E.json of another run: each ranker against its own there",
            },
            "--against-label": {"default": "baseline", "help": "that run's name in the result"},
        },
    )

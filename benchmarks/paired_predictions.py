"""How sure is "the ranker beats its best input"? Paired per-user NDCG@k from `lambdarec evaluate
--predictions`, with a bootstrap confidence interval of each ranker's difference to each single source.

The evaluate JSON holds means only. This re-splits the ratings exactly as the command did (same
`split_ratings`, ratio and seed), takes the same relevance (`held_out_relevance`), scores every model's
written top k per user with `spark_jobs.metrics.ndcg_at_k` (a user without a list scores 0), checks the
means against the JSON, and pairs users (`spark_jobs.significance.paired_bootstrap`).

`python -m benchmarks.paired_predictions --ratings R.csv --split stratified-item --ratio 0.75 --seed 42
--predictions P.csv --evaluate E.json --out DIR`.
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


def run(
    quick: bool,
    out_dir: Path,
    ratings: str,
    split: str,
    ratio: float,
    seed: int,
    predictions: str,
    evaluate: str,
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
    ndcg = per_user_ndcg(
        pd.read_csv(predictions, dtype={"user_id": str, "item_id": str}), relevance, written["k"]
    )
    means = {model: sum(v.values()) / len(v) for model, v in ndcg.items()}
    mismatch = {
        m: (means[m], written["models"][m]["ndcg@10"])
        for m in means
        if abs(means[m] - written["models"][m]["ndcg@10"]) > 1e-9
    }
    if mismatch:
        raise SystemExit(f"re-scored means differ from {evaluate}: {mismatch}")
    result = {
        "machine": machine_info(),
        "inputs": {"ratings": ratings, "split": split, "ratio": ratio, "seed": seed, "evaluate": evaluate},
        "users": len(relevance),
        "means": {m: round(v, 4) for m, v in sorted(means.items())},
        "paired": paired_rows(ndcg, [r for r in RANKERS if r in ndcg], seed),
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
        },
    )

"""The nightly batch steps, declared once: name, the steps each waits for, what it reads and writes, and
what makes a rerun for the same run date D safe (its idempotency key).

Read by `spark_jobs.batch_pipeline` (one body per declared step in spark_jobs.steps, run in this order by `lambdarec batch
run`), by the Airflow DAG `lambdarec_nightly` (one task per step, wired by `after`) and by the docs
(ARCHITECTURE.md holds `steps_markdown()`; a unit test checks all of them agree). Pure declarations in
the standard library only: DAG files import this while Airflow parses them. Delta tables are named as
in feature_store.tables; h = `Settings.batch.label_horizon_days`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NightlyStep:
    name: str
    after: tuple[str, ...]  # the steps it waits for
    reads: tuple[str, ...]  # Delta tables (layer/name), MLflow or Redis objects
    writes: tuple[str, ...]
    idempotency: str  # what a rerun for the same run date overwrites or skips


NIGHTLY_STEPS: tuple[NightlyStep, ...] = (
    NightlyStep(
        "features",
        after=(),
        reads=("bronze/events", "bronze/items"),
        writes=("silver/interactions", "gold/user_features", "gold/item_features"),
        idempotency="replaces silver's new days and gold as_of D-2h to D",
    ),
    NightlyStep(
        "candidates",
        after=("features",),
        reads=("silver/interactions",),
        writes=("gold/candidates", "gold/item_similar", "MLflow: candidate recall run"),
        idempotency="replaces as_of D-2h, D-h and D in one commit per table",
    ),
    NightlyStep(
        "training_set",
        after=("candidates",),
        reads=(
            "gold/candidates",
            "gold/user_features",
            "gold/item_features",
            "gold/item_similar",
            "silver/interactions",
        ),
        writes=("gold/training_set",),
        idempotency="replaces as_of D-2h",
    ),
    NightlyStep(
        "train_xgboost",
        after=("training_set",),
        reads=(
            "gold/training_set",
            "gold/candidates",
            "gold/user_features",
            "gold/item_features",
            "gold/item_similar",
            "silver/interactions",
        ),
        writes=("MLflow: training run", "MLflow: registered version"),
        idempotency="skipped when an xgboost version tagged run_date D exists",
    ),
    NightlyStep(
        "train_lightgbm",
        after=("training_set",),
        reads=(
            "gold/training_set",
            "gold/candidates",
            "gold/user_features",
            "gold/item_features",
            "gold/item_similar",
            "silver/interactions",
        ),
        writes=("MLflow: training run", "MLflow: registered version"),
        idempotency="skipped when a lightgbm version tagged run_date D exists",
    ),
    NightlyStep(
        "evaluate",
        after=("train_xgboost", "train_lightgbm"),
        reads=(
            "gold/candidates",
            "gold/user_features",
            "gold/item_features",
            "gold/item_similar",
            "silver/interactions",
            "MLflow: versions of D, @champion",
        ),
        writes=("MLflow: evaluation run with per-user holdout metrics", "MLflow: holdout tags on versions"),
        idempotency="overwrites the versions' holdout tags of D-h",
    ),
    NightlyStep(
        "promote",
        after=("evaluate",),
        reads=("MLflow: evaluation run with per-user holdout metrics", "MLflow: holdout tags on versions"),
        writes=("MLflow: aliases challenger, champion", "MLflow: gate tags on the version"),
        idempotency="sets aliases to the same versions again",
    ),
    NightlyStep(
        "score",
        after=("promote",),
        reads=(
            "gold/candidates",
            "gold/user_features",
            "gold/item_features",
            "gold/item_similar",
            "silver/interactions",
            "MLflow: @champion",
        ),
        writes=("gold/batch_scores",),
        idempotency="replaces as_of D",
    ),
    NightlyStep(
        "publish",
        after=("score",),
        reads=(
            "gold/batch_scores",
            "gold/candidates",
            "gold/user_features",
            "gold/item_features",
            "gold/item_similar",
            "silver/interactions",
        ),
        writes=("Redis: a batch version and the pointer flip",),
        idempotency="publishes as_of D's content under a new version; readers switch atomically",
    ),
    NightlyStep(
        "expire",
        after=("publish",),
        reads=("Redis: batch versions",),
        writes=("Redis: TTLs on old versions",),
        idempotency="sets TTLs on the versions beyond the kept ones",
    ),
)


def step_names() -> tuple[str, ...]:
    """The declared steps in the order one day runs them."""
    return tuple(step.name for step in NIGHTLY_STEPS)


def upstream() -> dict[str, tuple[str, ...]]:
    """Each step and the steps it waits for (the DAG's edges)."""
    return {step.name: step.after for step in NIGHTLY_STEPS}


def steps_chain() -> str:
    """The run order in one line: steps waiting for the same steps run side by side (‖)."""
    groups: list[list[NightlyStep]] = []
    for step in NIGHTLY_STEPS:
        if groups and groups[-1][0].after == step.after:
            groups[-1].append(step)
        else:
            groups.append([step])
    return " → ".join(" ‖ ".join(s.name for s in group) for group in groups)


def steps_markdown() -> str:
    """The declaration as the markdown table the docs show."""
    lines = ["| step | after | reads | writes | a rerun for D |", "|---|---|---|---|---|"]
    for step in NIGHTLY_STEPS:
        cells = [
            ", ".join(step.after) or "—",
            ", ".join(step.reads),
            ", ".join(step.writes),
            step.idempotency,
        ]
        lines.append(f"| `{step.name}` | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"

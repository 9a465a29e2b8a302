"""MLflow: log and register trained rankers, the promotion gate, and moving the aliases.

Reading the registry (configuring MLflow, resolving `@champion`, downloading and loading a version)
is feature_store.registry's, shared with serving.

- `log_ranker_run`: one MLflow run per trained ranker: params, holdout and validation metrics, the
  feature list with importance, an evaluation report (JSON table + markdown + PNG plot) and the model
  as a pyfunc (spark_jobs/ranker_pyfunc.py as code, the MODEL_FILES as artifacts, a signature and
  explicit pip requirements), registered as a new version of `Settings.ranker.model_name`.
- `gate` / `apply_gate`: the new version gets alias `challenger`; it moves `champion` only when the
  paired per-user difference of the holdout metric against the champion (the first model: popularity)
  has a bootstrap confidence interval whose lower bound is above `promotion_min_gain`, over at least
  `promotion_min_users` users; otherwise the decision is "not enough evidence" and the champion stays. Aliases only: MLflow stages are deprecated. Whatever moves `champion`
  (this gate, `lambdarec models promote`, the MLflow UI) is honoured everywhere, because batch scoring
  and serving load `models:/<name>@champion` and nothing else.
- `rollback`: move `champion` back to the previous champion (history kept as a registered-model tag).
- The nightly's bookkeeping: a run date's versions (`run_versions`), one MLflow run per step
  (`log_step_run`), and the evaluate step's per-user table that the promote step reads
  (`evaluation_per_user`).

`import mlflow` happens inside functions: it costs seconds and nothing here may run at import time.
Callers: spark_jobs.steps, spark_jobs.offline_eval, lambdarec.commands.models.

Why one module: everything here writes the registry's state (runs, versions, aliases, their tags), and
the gate, the promotion and the rollback must agree on that state's layout.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

from feature_store.ranking import CHALLENGER_ALIAS, CHAMPION_ALIAS, MODEL_FILES, RANKER_FEATURES
from feature_store.registry import NoChampion, champion_version, configure_mlflow, registry_client
from feature_store.settings import PromotionSettings, Settings
from spark_jobs.significance import PairedDifference, paired_bootstrap

CHAMPION_HISTORY_TAG = "champion_history"
PYFUNC_CODE = Path(__file__).with_name("ranker_pyfunc.py")
MODEL_ARTIFACT_KEYS = {
    "ranker_meta": "meta",
    "model": "onnx",
    "model_compressed": "onnx_compressed",
    "native_model": "native",
}
SERVING_PACKAGES = ("mlflow", "onnxruntime", "numpy", "pandas")


def mlflow_key(name: str) -> str:
    """MLflow metric/tag names allow no '@': `ndcg@10` -> `ndcg_at_10`."""
    return name.replace("@", "_at_")


def client(settings: Settings):
    """A registry client for writes (versions, aliases, tags), after creating the stores if needed."""
    configure_mlflow(settings)
    return registry_client(settings)


# -- the evaluation report -------------------------------------------------------------------------


def report_markdown(results: Mapping[str, Mapping[str, float]]) -> str:
    """A markdown table: one row per model, one column per metric (as in `results`)."""
    metrics = sorted({m for r in results.values() for m in r if m != "users"})
    lines = ["| model | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
    for model, values in results.items():
        lines.append(
            f"| {model} | " + " | ".join(f"{values.get(m, float('nan')):.4f}" for m in metrics) + " |"
        )
    return "\n".join(lines) + "\n"


def report_plot(results: Mapping[str, Mapping[str, float]], path: Path, metrics: tuple[str, ...]) -> Path:
    """A grouped bar chart of `metrics` per model, saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    models = list(results)
    x = np.arange(len(metrics))
    width = 0.8 / max(1, len(models))
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(metrics), 3.6))
    for i, model in enumerate(models):
        ax.bar(x + i * width, [results[model].get(m, 0.0) for m in metrics], width, label=model)
    ax.set_xticks(x + width * (len(models) - 1) / 2, list(metrics))
    ax.set_ylabel("holdout value")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def log_evaluation_report(
    results: Mapping[str, Mapping[str, float]], k: int, artifact_dir: str = "evaluation"
) -> None:
    """Log the report of the active run: evaluation.json (table), evaluation.md, evaluation.png."""
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "evaluation.json").write_text(json.dumps(results, indent=2, sort_keys=True))
        (folder / "evaluation.md").write_text(report_markdown(results))
        report_plot(results, folder / "evaluation.png", (f"ndcg@{k}", f"recall@{k}", f"map@{k}", f"hr@{k}"))
        mlflow.log_artifacts(str(folder), artifact_dir)


# -- logging a trained ranker --------------------------------------------------------------------


@dataclass(frozen=True)
class RegisteredRanker:
    name: str
    version: str
    run_id: str
    model_uri: str


def pip_requirements() -> list[str]:
    """What the pyfunc needs to run, pinned to the versions installed here."""
    return [f"{p}=={package_version(p)}" for p in SERVING_PACKAGES]


def log_ranker_run(
    settings: Settings,
    model_dir: Path,
    meta: Mapping[str, Any],
    params: Mapping[str, Any],
    holdout: Mapping[str, Mapping[str, float]],
    importance: Mapping[str, float],
    tags: Mapping[str, str],
    k: int = 10,
) -> RegisteredRanker:
    """Log one trained ranker (files exported into `model_dir` by rankers.export) and register it.

    `holdout` maps model label -> metrics on the holdout (this ranker under `meta['kind']`, plus the
    baselines); the ranker's own metrics are also set as tags `holdout.<metric>` on the new version."""
    import mlflow
    import numpy as np
    import pandas as pd
    from mlflow.models import infer_signature

    configure_mlflow(settings)
    kind = meta["kind"]
    example = pd.DataFrame(np.zeros((2, len(RANKER_FEATURES))), columns=list(RANKER_FEATURES))
    example.iloc[1, :] = np.nan
    artifacts = {
        key: str(model_dir / Path(getattr(MODEL_FILES, attr)).name)
        for key, attr in MODEL_ARTIFACT_KEYS.items()
    }
    with mlflow.start_run(run_name=f"{kind}-{tags.get('as_of', '')}") as run:
        mlflow.set_tags({"kind": kind, **tags})
        mlflow.log_params(
            {k_: (json.dumps(v) if isinstance(v, (list, dict)) else v) for k_, v in params.items()}
        )
        for model_label, metrics in holdout.items():
            mlflow.log_metrics(
                {f"holdout.{model_label}.{mlflow_key(m)}": float(v) for m, v in metrics.items()}
            )
        compressed = meta["compressed"]
        mlflow.log_metrics(
            {
                "validation.ndcg_at_10": compressed["validation_ndcg@10_full"],
                "validation.ndcg_at_10.compressed": compressed["validation_ndcg@10_compressed"],
                "compressed.trees": compressed["trees"],
                "compressed.size_ratio": compressed["size_ratio"],
                "train_seconds": meta["train_seconds"],
                "trees": meta["n_trees"],
            }
        )
        mlflow.log_dict(
            {"features": list(RANKER_FEATURES), "importance_gain": dict(importance)}, "features.json"
        )
        log_evaluation_report(holdout, k)
        info = mlflow.pyfunc.log_model(
            name="ranker",
            python_model=str(PYFUNC_CODE),
            artifacts=artifacts,
            signature=infer_signature(example, np.zeros(2)),
            input_example=example,
            pip_requirements=pip_requirements(),
        )
        registered = mlflow.register_model(
            info.model_uri, settings.ranker.model_name, tags={"kind": kind, **tags}
        )
    own = holdout.get(kind, {})
    mlflow_client = client(settings)
    for metric, value in own.items():
        mlflow_client.set_model_version_tag(
            settings.ranker.model_name, registered.version, f"holdout.{mlflow_key(metric)}", str(value)
        )
    return RegisteredRanker(
        settings.ranker.model_name, str(registered.version), run.info.run_id, info.model_uri
    )


# -- aliases: the promotion gate, manual promotion, rollback ----------------------------------------


NOT_ENOUGH_EVIDENCE = "not enough evidence"
PROMOTED = "promoted"
GATE_SEED = 20261205  # fixed: the same holdout always gives the same decision
GATE_TAGS = ("gate.decision", "gate.users", "gate.gain", "gate.ci_low", "gate.ci_high")


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str
    evidence: PairedDifference | None = None

    @property
    def decision(self) -> str:
        return PROMOTED if self.promote else NOT_ENOUGH_EVIDENCE

    def tags(self) -> dict[str, str]:
        """The decision as version tags (`lambdarec models list` shows them)."""
        tags = {"gate": self.reason, "gate.decision": self.decision}
        if self.evidence is not None:
            e = self.evidence
            tags.update(
                {
                    "gate.users": str(e.users),
                    "gate.gain": repr(e.mean),
                    "gate.ci_low": repr(e.low),
                    "gate.ci_high": repr(e.high),
                }
            )
        return tags


def gate(
    challenger: Sequence[float], baseline: Sequence[float], baseline_label: str, rule: PromotionSettings
) -> GateDecision:
    """Pure rule on one holdout: `challenger` and `baseline` are the per-user values of `rule.metric`
    (aligned by user). Promote only when there are at least `min_users` users and the lower bound of
    the seeded paired bootstrap interval of the mean gain is above `min_gain`; otherwise the decision
    is "not enough evidence" and the baseline (the champion) stays."""
    evidence = paired_bootstrap(challenger, baseline, rule.resamples, rule.confidence, GATE_SEED)
    measured = (
        f"{rule.metric} gain over {baseline_label} {evidence.mean:+.4f}, {rule.confidence:.0%} CI "
        f"[{evidence.low:+.4f}, {evidence.high:+.4f}] on {evidence.users} users"
    )
    if evidence.users < rule.min_users:
        return GateDecision(
            False,
            f"{NOT_ENOUGH_EVIDENCE}: {evidence.users} holdout users, the gate needs {rule.min_users} ({measured})",
            evidence,
        )
    if evidence.low > rule.min_gain:
        return GateDecision(True, f"{PROMOTED}: {measured}, lower bound above {rule.min_gain}", evidence)
    return GateDecision(
        False, f"{NOT_ENOUGH_EVIDENCE}: {measured}, lower bound not above {rule.min_gain}", evidence
    )


def champion_history(settings: Settings) -> list[str]:
    tags = client(settings).get_registered_model(settings.ranker.model_name).tags
    return json.loads(tags.get(CHAMPION_HISTORY_TAG, "[]"))


def set_champion(settings: Settings, version: str) -> None:
    """Point `champion` at `version`, remembering the previous champion for rollback."""
    mlflow_client = client(settings)
    name = settings.ranker.model_name
    previous = champion_version(settings)
    history = [v for v in champion_history(settings) if v != version]
    if previous and previous != version and (not history or history[-1] != previous):
        history.append(previous)
    mlflow_client.set_registered_model_alias(name, CHAMPION_ALIAS, version)
    mlflow_client.set_registered_model_tag(name, CHAMPION_HISTORY_TAG, json.dumps(history[-20:]))


def apply_gate(settings: Settings, version: str, decision: GateDecision) -> GateDecision:
    """Mark `version` challenger; promote it to champion if the gate said so. Idempotent."""
    mlflow_client = client(settings)
    name = settings.ranker.model_name
    mlflow_client.set_registered_model_alias(name, CHALLENGER_ALIAS, version)
    for key, value in decision.tags().items():
        mlflow_client.set_model_version_tag(name, version, key, value)
    if decision.promote and champion_version(settings) != version:
        set_champion(settings, version)
    return decision


def rollback(settings: Settings) -> str:
    """Move `champion` back to the previous champion; returns that version."""
    history = champion_history(settings)
    current = champion_version(settings)
    earlier = [v for v in history if v != current]
    if not earlier:
        raise NoChampion(f"{settings.ranker.model_name} has no earlier champion to roll back to")
    target = earlier[-1]
    client(settings).set_registered_model_alias(settings.ranker.model_name, CHAMPION_ALIAS, target)
    client(settings).set_registered_model_tag(
        settings.ranker.model_name, CHAMPION_HISTORY_TAG, json.dumps(history[: history.index(target)])
    )
    return target


def list_versions(settings: Settings) -> list[dict[str, Any]]:
    """Every registered version with its aliases and tags, newest first."""
    mlflow_client = client(settings)
    name = settings.ranker.model_name
    versions = mlflow_client.search_model_versions(f"name = '{name}'")
    if not versions:
        return []
    # search results leave `aliases` empty: read them from the registered model
    aliases = mlflow_client.get_registered_model(name).aliases
    return sorted(
        (
            {
                "version": str(v.version),
                "aliases": sorted(a for a, target in aliases.items() if str(target) == str(v.version)),
                "tags": dict(v.tags),
                "created": v.creation_timestamp,
                "run_id": v.run_id,
            }
            for v in versions
        ),
        key=lambda v: int(v["version"]),
        reverse=True,
    )


# -- the nightly's runs ----------------------------------------------------------------------------

PER_USER_ARTIFACT = "holdout_per_user.csv"


def run_versions(settings: Settings, run_date: date) -> dict[str, dict[str, Any]]:
    """The versions registered by the nightly of `run_date`: version -> tags."""
    return {
        v["version"]: v["tags"] for v in list_versions(settings) if v["tags"].get("run_date") == str(run_date)
    }


def holdout_tag(as_of: date | str, metric: str) -> str:
    """The version tag holding `metric` on the holdout of cut-off `as_of`."""
    return f"holdout.{as_of}.{mlflow_key(metric)}"


def per_user_column(version: str) -> str:
    """The column of a registered version in the evaluate run's per-user table."""
    return f"v{version}"


def log_step_run(
    settings: Settings,
    step: str,
    run_date: date,
    holdout_as_of: date,
    metrics: dict[str, float],
    report: dict | None = None,
    params: dict | None = None,
    texts: dict[str, str] | None = None,
    k: int = 10,
) -> None:
    """One MLflow run for a nightly step: tagged with the step, run date and holdout cut-off."""
    import mlflow

    configure_mlflow(settings)
    with mlflow.start_run(run_name=f"{step}-{run_date}"):
        mlflow.set_tags({"step": step, "run_date": str(run_date), "holdout_as_of": str(holdout_as_of)})
        mlflow.log_metrics({mlflow_key(key): float(value) for key, value in metrics.items()})
        if params:
            mlflow.log_params(params)
        if report is not None:
            log_evaluation_report(report, k)
        for name, text in (texts or {}).items():
            mlflow.log_text(text, name)


def evaluation_per_user(settings: Settings, run_date: date, holdout_as_of: date):
    """The per-user table (pandas) of `run_date`'s newest evaluate run on this holdout, or None."""
    import io

    import mlflow
    import pandas as pd

    configure_mlflow(settings)
    runs = mlflow.search_runs(
        experiment_names=[settings.mlflow.experiment],
        filter_string=f"tags.step = 'evaluate' and tags.run_date = '{run_date}' and tags.holdout_as_of = '{holdout_as_of}'",
        order_by=["start_time DESC"],
        max_results=1,
    )
    if runs.empty:
        return None
    run_id = runs.iloc[0]["run_id"]
    # an evaluate run logged before per-user tables existed has none: the caller evaluates again
    if PER_USER_ARTIFACT not in {a.path for a in client(settings).list_artifacts(run_id)}:
        return None
    return pd.read_csv(
        io.StringIO(mlflow.artifacts.load_text(f"runs:/{run_id}/{PER_USER_ARTIFACT}")), dtype={"user_id": str}
    )

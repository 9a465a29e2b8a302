"""Promoting a ranker version by hand: validate it against the champion on the current holdout, move
`champion` only if it passes, or force it with a reason recorded in MLflow.

Called by the `lambdarec_promote` DAG (and usable from a shell). The evaluation and the gate are the
batch layer's own (`spark_jobs.evaluation.evaluate_models`, `spark_jobs.model_registry.gate` and
`set_champion`), so a manual promotion is judged exactly like the nightly one: same holdout, same
metric (`Settings.promotion.metric`), same evidence rule (a paired bootstrap interval above
`Settings.promotion.min_gain` over at least `Settings.promotion.min_users` users). The current holdout
is the one of the newest run date among the registered versions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date

from feature_store.settings import Settings

FORCED_REASON_TAG = "forced_promotion_reason"
MANUAL_PROMOTION_TAG = "manual_promotion"


class PromotionRejected(RuntimeError):
    """The version did not pass the gate (and the promotion was not forced)."""


@dataclass(frozen=True)
class PromotionCheck:
    """The gate's verdict on one version (small values: this is the DAG task's XCom)."""

    version: str
    champion: str | None
    metric: str
    holdout_as_of: str
    candidate_score: float
    champion_score: float | None
    popularity_score: float
    holdout_users: int
    passed: bool
    reason: str

    def as_dict(self) -> dict:
        return asdict(self)


def current_run_date(versions: list[dict]) -> date:
    """The newest `run_date` tag among the registered versions: its holdout is the current one."""
    dates = sorted(v["tags"]["run_date"] for v in versions if v["tags"].get("run_date"))
    if not dates:
        raise PromotionRejected("no registered version carries a run date: run lambdarec_nightly first")
    return date.fromisoformat(dates[-1])


def validate_version(spark, settings: Settings, version: str) -> PromotionCheck:
    """Evaluate `version` and the champion on the current holdout and apply the promotion gate."""
    from feature_store.registry import champion_version, load_ranker
    from spark_jobs.evaluation import evaluate_with_per_user
    from spark_jobs.model_registry import gate, list_versions
    from spark_jobs.scoring import registered_model
    from spark_jobs.steps.context import BatchContext
    from spark_jobs.steps.models import holdout

    versions = list_versions(settings)
    if version not in {v["version"] for v in versions}:
        raise PromotionRejected(f"{settings.ranker.model_name} has no version {version!r}")
    context = BatchContext(spark, settings, current_run_date(versions))
    champion = champion_version(settings)
    candidate = load_ranker(settings, version, preferred="native")
    models = {"candidate": registered_model(candidate)}
    if champion is not None and champion != version:
        current = load_ranker(settings, champion, preferred="native")
        models["champion"] = registered_model(current)
    metric = settings.promotion.metric
    evaluation = evaluate_with_per_user(holdout(context), models, metric, sources=("popular",))
    results, per_user = evaluation.results, evaluation.per_user
    champion_score = results["champion"][metric] if "champion" in results else None
    if champion == version:
        passed, reason = True, f"version {version} already is the champion"
    else:
        baseline, label = (
            ("champion", f"champion v{champion}") if "champion" in per_user else ("popular", "popularity")
        )
        decision = gate(per_user["candidate"], per_user[baseline], label, settings.promotion)
        passed, reason = decision.promote, decision.reason
    return PromotionCheck(
        version=version,
        champion=champion,
        metric=metric,
        holdout_as_of=str(context.cutoffs.holdout),
        candidate_score=results["candidate"][metric],
        champion_score=champion_score,
        popularity_score=results["popular"][metric],
        holdout_users=int(results["candidate"]["users"]),
        passed=passed,
        reason=reason,
    )


def promote_version(settings: Settings, check: dict, force: bool = False, reason: str = "") -> str:
    """Move `champion` to the checked version if it passed, or if forced with a reason; returns what
    happened. The verdict (and a forced promotion's reason) is recorded as tags on the version."""
    from spark_jobs.model_registry import client, set_champion

    version = check["version"]
    if not check["passed"] and not force:
        raise PromotionRejected(f"version {version} stays where it is: {check['reason']}")
    if force and not check["passed"] and not reason.strip():
        raise PromotionRejected(
            "a forced promotion needs a reason (the `reason` param); it is recorded in MLflow"
        )
    mlflow_client = client(settings)
    name = settings.ranker.model_name
    mlflow_client.set_model_version_tag(name, version, MANUAL_PROMOTION_TAG, check["reason"])
    if not check["passed"]:
        mlflow_client.set_model_version_tag(name, version, FORCED_REASON_TAG, reason.strip())
    set_champion(settings, version)
    how = "forced" if not check["passed"] else "passed the gate"
    return f"{name} v{version} is champion ({how}: {reason.strip() or check['reason']})"

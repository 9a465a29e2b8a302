"""The promote step decides on the evaluate step's logged evidence and never runs another step."""

from datetime import date

import pytest

from feature_store.settings import Settings
from spark_jobs.model_registry import holdout_tag
from spark_jobs.steps import models
from spark_jobs.steps.context import BatchContext, BatchStepError

RUN_DATE = date(2026, 11, 20)


@pytest.fixture
def ctx(tmp_path, monkeypatch):
    monkeypatch.setattr("feature_store.registry.champion_version", lambda settings: None)
    # the run date registered a version that no evaluate run has judged yet
    monkeypatch.setattr(models, "run_versions", lambda settings, run_date: {"1": {"kind": "xgboost"}})
    monkeypatch.setattr(models, "step_evaluate", lambda ctx: pytest.fail("promote ran evaluate"))
    return BatchContext(None, Settings(data_dir=tmp_path), RUN_DATE)


def refusal(ctx) -> str:
    with pytest.raises(BatchStepError) as raised:
        models.step_promote(ctx)
    return str(raised.value)


def test_promote_without_an_evaluation_stops_and_names_the_step_to_run(ctx, monkeypatch):
    monkeypatch.setattr(models, "evaluation_per_user", lambda settings, run_date, holdout_as_of: None)
    assert refusal(ctx) == (
        "run date 2026-11-20 has no evaluation on the holdout of 2026-11-13 that covers v1: "
        "run the step `evaluate` first"
    )


def test_promote_with_an_evaluation_that_misses_a_version_stops_too(ctx, monkeypatch):
    import pandas as pd

    tags = {"kind": "xgboost", holdout_tag("2026-11-13", "ndcg@10"): "0.3"}
    monkeypatch.setattr(models, "run_versions", lambda settings, run_date: {"1": tags})
    per_user = pd.DataFrame({"user_id": ["u1"], "popular": [0.1]})
    monkeypatch.setattr(models, "evaluation_per_user", lambda settings, run_date, holdout_as_of: per_user)
    assert refusal(ctx) == (
        "run date 2026-11-20 has no evaluation on the holdout of 2026-11-13 that covers v1: "
        "run the step `evaluate` first"
    )

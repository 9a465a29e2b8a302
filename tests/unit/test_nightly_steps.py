"""The nightly steps are declared once (feature_store.nightly): the pipeline's bodies, the Airflow DAG's
wiring, the CLI and the docs all follow that declaration."""

from __future__ import annotations

import sys

from feature_store.nightly import NIGHTLY_STEPS, step_names, steps_chain, steps_markdown, upstream
from feature_store.settings import project_root
from feature_store.tables import (
    BATCH_SCORES,
    BRONZE_EVENTS,
    CANDIDATES,
    INTERACTIONS,
    ITEM_FEATURES,
    ITEM_SIMILAR,
    ITEMS,
    TRAINING_SET,
    USER_FEATURES,
)

DAGS = project_root() / "dags"


def test_declared_steps_in_run_order():
    assert step_names() == (
        "features",
        "candidates",
        "training_set",
        "train_xgboost",
        "train_lightgbm",
        "evaluate",
        "promote",
        "score",
        "publish",
        "expire",
    )
    assert steps_chain() == (
        "features → candidates → training_set → train_xgboost ‖ train_lightgbm → evaluate → promote → score → publish → expire"
    )
    seen: set[str] = set()
    for step in NIGHTLY_STEPS:  # every step waits only for steps declared before it
        assert set(step.after) <= seen, step.name
        seen.add(step.name)


def test_declared_tables_are_the_delta_tables():
    tables = {
        t.name
        for t in (
            BRONZE_EVENTS,
            ITEMS,
            INTERACTIONS,
            USER_FEATURES,
            ITEM_FEATURES,
            CANDIDATES,
            ITEM_SIMILAR,
            TRAINING_SET,
            BATCH_SCORES,
        )
    }
    named = {
        name
        for step in NIGHTLY_STEPS
        for name in step.reads + step.writes
        if name.split("/")[0] in ("bronze", "silver", "gold")
    }
    assert named == tables


def test_pipeline_has_one_body_per_declared_step():
    from spark_jobs.batch_pipeline import STEP_BODIES, STEPS

    assert tuple(STEPS) == step_names()
    assert set(STEP_BODIES) == set(step_names())


def test_dag_wiring_is_the_declaration():
    sys.path.insert(0, str(DAGS))
    try:
        import _lambdarec
    finally:
        sys.path.remove(str(DAGS))
    assert _lambdarec.NIGHTLY_STEPS == step_names()
    assert _lambdarec.NIGHTLY_UPSTREAM == upstream()


def test_docs_show_the_declaration():
    architecture = (project_root() / "ARCHITECTURE.md").read_text()
    assert steps_markdown() in architecture
    assert steps_chain() in architecture
    dag_doc = " ".join((DAGS / "lambdarec_nightly.py").read_text().split())  # the docstring wraps lines
    assert steps_chain() in dag_doc


def test_cli_step_help_lists_the_declared_steps():
    from typer.testing import CliRunner

    from lambdarec.cli import build_app

    result = CliRunner().invoke(build_app(), ["batch", "step", "--help"], env={"COLUMNS": "400"})
    assert result.exit_code == 0
    assert ", ".join(step_names()) in " ".join(result.output.replace("│", " ").split())

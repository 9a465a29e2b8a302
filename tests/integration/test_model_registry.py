"""MLflow registry (real MLflow on a temporary SQLite store): the registered model's file layout, the
promotion gate with aliases, manual promotion as the MLflow UI does it, and rollback."""

import json
from pathlib import Path

import numpy as np
import pytest

from feature_store.ranking import CHALLENGER_ALIAS, CHAMPION_ALIAS, MODEL_FILES, RANKER_FEATURES
from feature_store.registry import NoChampion, RegistryUnavailable, champion_version, load_ranker
from feature_store.settings import PromotionSettings
from spark_jobs.model_registry import (
    apply_gate,
    client,
    gate,
    list_versions,
    log_ranker_run,
    rollback,
    set_champion,
)
from spark_jobs.rankers.common import LocalQueries, TrainedRanker, predict_native
from spark_jobs.rankers.export import export_ranker, onnx_scores
from spark_jobs.scoring import load_booster

pytestmark = pytest.mark.integration


def queries(seed: int, n_queries: int = 40, per_query: int = 10) -> LocalQueries:
    """Queries whose relevance follows feature 0 (plus noise), some features missing."""
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n_queries * per_query, len(RANKER_FEATURES))).astype(np.float32)
    features[::5, 3] = np.nan
    relevance = np.clip(np.round(features[:, 0] + rng.normal(scale=0.5, size=len(features))), 0, 3)
    qids = np.repeat([f"u{q:03d}" for q in range(n_queries)], per_query).astype(object)
    return LocalQueries(features, relevance, qids, np.arange(len(features)).astype(str).astype(object))


def train_local(kind: str, data: LocalQueries, trees: int = 30) -> TrainedRanker:
    sizes = [end - start for start, end in data.boundaries()]
    if kind == "lightgbm":
        import lightgbm

        booster = lightgbm.train(
            {"objective": "lambdarank", "num_iterations": trees, "verbosity": -1, "min_data_in_leaf": 5},
            lightgbm.Dataset(data.features, label=data.relevance, group=sizes),
        )
        return TrainedRanker("lightgbm", booster, booster.num_trees(), {"num_iterations": trees}, 0.1, 1)
    import xgboost

    dmatrix = xgboost.DMatrix(
        data.features, label=data.relevance, qid=np.repeat(np.arange(len(sizes)), sizes)
    )
    booster = xgboost.train({"objective": "rank:ndcg", "max_depth": 3}, dmatrix, trees)
    return TrainedRanker("xgboost", booster, trees, {"max_depth": 3}, 0.1, 1)


def register(settings, tmp_path: Path, kind: str, ndcg: float, as_of: str = "2024-03-22"):
    ranker = train_local(kind, queries(1))
    model_dir = tmp_path / f"export-{kind}-{ndcg}"
    meta = export_ranker(ranker, queries(2), tolerance=0.01, out_dir=model_dir)
    holdout = {kind: {"ndcg@10": ndcg, "recall@10": 0.5}, "popular": {"ndcg@10": 0.2, "recall@10": 0.3}}
    return (
        ranker,
        meta,
        log_ranker_run(
            settings,
            model_dir,
            meta,
            ranker.params,
            holdout,
            ranker.importance(),
            {"as_of": as_of, "run_date": as_of},
        ),
    )


def decided(gain: float, label: str = "popularity"):
    """The gate's decision on 200 holdout users whose per-user metric moves by `gain` each."""
    baseline = [0.2] * 200
    return gate(
        [v + gain for v in baseline],
        baseline,
        label,
        PromotionSettings(metric="ndcg@10", min_gain=0.002, min_users=100),
    )


@pytest.mark.parametrize("kind", ["xgboost", "lightgbm"])
def test_registered_version_holds_the_model_files_and_serves_as_pyfunc(table_settings, tmp_path, kind):
    import mlflow

    ranker, meta, registered = register(table_settings, tmp_path, kind, ndcg=0.4)
    assert (registered.name, registered.version) == (table_settings.ranker.model_name, "1")
    local = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{registered.name}/1", dst_path=str(tmp_path / "dl")
        )
    )
    for relative in (MODEL_FILES.meta, MODEL_FILES.onnx, MODEL_FILES.onnx_compressed, MODEL_FILES.native):
        assert (local / relative).is_file(), relative
    stored = json.loads((local / MODEL_FILES.meta).read_text())
    assert stored["kind"] == kind and stored["features"] == list(RANKER_FEATURES)
    compressed = stored["compressed"]
    assert compressed["trees"] <= stored["n_trees"] == 30
    assert compressed["validation_ndcg@10_compressed"] >= compressed["validation_ndcg@10_full"] - 0.01
    assert compressed["compressed_onnx_bytes"] <= compressed["onnx_bytes"]
    # ONNX, native file and pyfunc all give the trained booster's scores.
    data = queries(3)
    expected = ranker.predict(data.features)
    _, onnx = onnx_scores((local / MODEL_FILES.onnx).read_bytes(), data.features)
    assert np.abs(onnx - expected).max() < 1e-4
    native = load_booster(kind, (local / MODEL_FILES.native).read_bytes())
    assert np.abs(predict_native(kind, native, data.features) - expected).max() < 1e-6
    _, compressed_scores = onnx_scores((local / MODEL_FILES.onnx_compressed).read_bytes(), data.features)
    assert np.abs(compressed_scores - ranker.predict(data.features, trees=compressed["trees"])).max() < 1e-4
    # The run carries the report and the feature list with importance.
    run_files = {f.path for f in client(table_settings).list_artifacts(registered.run_id, "evaluation")}
    assert run_files == {
        "evaluation/evaluation.json",
        "evaluation/evaluation.md",
        "evaluation/evaluation.png",
    }
    features = mlflow.artifacts.load_dict(f"runs:/{registered.run_id}/features.json")
    assert features["features"] == list(RANKER_FEATURES) and set(features["importance_gain"]) == set(
        RANKER_FEATURES
    )
    set_champion(table_settings, registered.version)
    import pandas as pd

    pyfunc = mlflow.pyfunc.load_model(f"models:/{registered.name}@{CHAMPION_ALIAS}")
    predicted = pyfunc.predict(pd.DataFrame(data.features.astype(np.float64), columns=list(RANKER_FEATURES)))
    assert np.abs(np.asarray(predicted) - expected).max() < 1e-4


def test_promotion_gate_with_aliases_and_rollback(table_settings, tmp_path):
    settings = table_settings
    name = settings.ranker.model_name
    mlflow_client = client(settings)
    with pytest.raises(NoChampion):
        load_ranker(settings)
    # First model worse than popularity: challenger only.
    _, _, v1 = register(settings, tmp_path, "lightgbm", ndcg=0.19)
    apply_gate(settings, v1.version, decided(-0.01))
    assert champion_version(settings) is None
    assert str(mlflow_client.get_model_version_by_alias(name, CHALLENGER_ALIAS).version) == v1.version
    # First model that beats popularity becomes champion.
    _, _, v2 = register(settings, tmp_path, "lightgbm", ndcg=0.30)
    apply_gate(settings, v2.version, decided(0.1))
    assert champion_version(settings) == v2.version
    # A worse model stays challenger; the champion does not move.
    _, _, v3 = register(settings, tmp_path, "xgboost", ndcg=0.25)
    decision = apply_gate(settings, v3.version, decided(-0.05, "champion v2"))
    assert not decision.promote
    assert mlflow_client.get_model_version(name, v3.version).tags["gate.decision"] == "not enough evidence"
    assert (
        champion_version(settings),
        str(mlflow_client.get_model_version_by_alias(name, CHALLENGER_ALIAS).version),
    ) == (v2.version, v3.version)
    # A better one is promoted; rollback returns to the previous champion.
    _, _, v4 = register(settings, tmp_path, "xgboost", ndcg=0.35)
    apply_gate(settings, v4.version, decided(0.05, "champion v2"))
    assert champion_version(settings) == v4.version
    assert load_ranker(settings).version == v4.version and load_ranker(settings).kind == "xgboost"
    assert rollback(settings) == v2.version
    assert champion_version(settings) == v2.version
    assert load_ranker(settings).kind == "lightgbm"
    # A promotion made in the MLflow UI is just the alias: everything that loads @champion follows it.
    mlflow_client.set_registered_model_alias(name, CHAMPION_ALIAS, v3.version)
    assert load_ranker(settings).version == v3.version
    listed = {v["version"]: v for v in list_versions(settings)}
    assert [listed[v.version]["aliases"] for v in (v1, v2, v3, v4)] == [
        [],
        [],
        [CHAMPION_ALIAS],
        [CHALLENGER_ALIAS],
    ]
    assert listed[v4.version]["tags"]["holdout.ndcg_at_10"] == "0.35"
    assert [v["version"] for v in list_versions(settings)] == ["4", "3", "2", "1"]


def test_models_cli_lists_promotes_and_rolls_back(table_settings, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from lambdarec.cli import build_app

    settings = table_settings
    monkeypatch.setenv("LAMBDAREC_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("COLUMNS", "250")
    runner, app = CliRunner(), build_app()
    assert "no versions of lambdarec-ranker yet" in runner.invoke(app, ["models", "list"]).output
    for ndcg in (0.3, 0.2):
        register(settings, tmp_path, "lightgbm", ndcg=ndcg)
    apply_gate(settings, "1", decided(0.1))
    apply_gate(settings, "2", decided(-0.1, "champion v1"))
    promoted = runner.invoke(app, ["models", "promote", "1"])
    assert promoted.exit_code == 0 and promoted.output.strip() == "lambdarec-ranker@champion -> version 1"
    assert runner.invoke(app, ["models", "promote", "2"]).exit_code == 0
    listed = runner.invoke(app, ["models", "list"]).output
    rows = [
        [cell.strip() for cell in line.split("│")[1:-1]]
        for line in listed.splitlines()
        if line.startswith("│")
    ]
    assert {r[0]: (r[1], r[2], r[4], r[6], r[7]) for r in rows if r and r[0].isdigit()} == {
        "2": (
            "challenger, champion",
            "lightgbm",
            "0.2000",
            "not enough evidence",
            "-0.1000 [-0.1000, -0.1000] (200)",
        ),
        "1": ("", "lightgbm", "0.3000", "promoted", "+0.1000 [+0.1000, +0.1000] (200)"),
    }
    unknown = runner.invoke(app, ["models", "promote", "9"])
    assert unknown.exit_code != 0 and "no version 9" in " ".join(unknown.output.replace("│", " ").split())
    back = runner.invoke(app, ["models", "rollback"])
    assert (
        back.exit_code == 0 and back.output.strip() == "lambdarec-ranker@champion -> version 1 (rolled back)"
    )
    assert champion_version(settings) == "1"
    again = runner.invoke(app, ["models", "rollback"])
    assert again.exit_code == 1 and "no earlier champion" in again.output


def test_unreachable_registry_is_not_no_champion(table_settings, monkeypatch):
    """Batch scoring falls back to source fusion only when there is no champion; a registry that
    cannot be asked must stop it instead (and serving keeps its last good model)."""
    import socket

    with socket.socket() as probe:  # a loopback port nobody listens on: connection refused at once
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    unreachable = table_settings.updated(mlflow_tracking_uri=closed, mlflow_registry_uri=closed)
    with pytest.raises(
        RegistryUnavailable, match=f"model registry {closed} could not be asked for lambdarec-ranker@champion"
    ):
        champion_version(unreachable)
    with pytest.raises(RegistryUnavailable):
        load_ranker(unreachable)

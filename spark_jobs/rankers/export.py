"""Exporting a trained ranker into the files of `feature_store.ranking.MODEL_FILES`.

- `native_model`: the booster in its own format (xgboost JSON, LightGBM text).
- `model.onnx`: the full booster converted with onnxmltools. XGBoost's ranking objectives are not known
  to onnxmltools (it would emit a classifier), so the XGBoost booster is relabelled `reg:squarederror`
  first: both predict the raw margin (base score + sum of leaves), so the scores are identical.
- `model_compressed.onnx`: the first K trees only, K the fewest whose validation NDCG@10 stays within
  `tolerance` of the full model's (boosting front-loads the signal, so late trees are cheap to drop).
- `ranker_meta.json`: kind, feature order, ONNX input/output names, what the compression did (trees,
  sizes, validation NDCG of both) and the measured ONNX-vs-native difference.

Called by spark_jobs.model_registry when it logs a training run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from feature_store.ranking import RANKER_FEATURES
from spark_jobs.rankers.common import (
    LocalQueries,
    TrainedRanker,
    choose_tree_count,
    mean_ndcg,
    ndcg_by_tree_count,
    tree_count_grid,
)

ONNX_INPUT = "features"
FILE_NAMES = {
    "meta": "ranker_meta.json",
    "onnx": "model.onnx",
    "onnx_compressed": "model_compressed.onnx",
    "native": "native_model",
}


def as_regression_xgboost(booster):
    """The XGBoost booster relabelled with a regression objective (same raw-margin predictions)."""
    import xgboost

    model = json.loads(bytes(booster.save_raw(raw_format="json")))
    model["learner"]["objective"] = {"name": "reg:squarederror", "reg_loss_param": {"scale_pos_weight": "1"}}
    relabelled = xgboost.Booster()
    relabelled.load_model(bytearray(json.dumps(model).encode()))
    return relabelled


def to_onnx(kind: str, booster) -> bytes:
    """ONNX bytes of a native booster with one float input `features` [N, len(RANKER_FEATURES)]."""
    import onnxmltools
    from onnxmltools.convert.common.data_types import FloatTensorType

    initial_types = [(ONNX_INPUT, FloatTensorType([None, len(RANKER_FEATURES)]))]
    if kind == "xgboost":
        model = onnxmltools.convert_xgboost(as_regression_xgboost(booster), initial_types=initial_types)
    else:
        model = onnxmltools.convert_lightgbm(booster, initial_types=initial_types, zipmap=False)
    return model.SerializeToString()


def onnx_scores(onnx_bytes: bytes, features: np.ndarray) -> tuple[str, np.ndarray]:
    """(output name, scores) of an ONNX ranker on float32 rows."""
    import onnxruntime

    session = onnxruntime.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    output = session.get_outputs()[0].name
    return output, session.run([output], {ONNX_INPUT: np.asarray(features, dtype=np.float32)})[0].ravel()


def export_ranker(
    ranker: TrainedRanker,
    validation: LocalQueries,
    tolerance: float,
    out_dir: Path,
    extra_meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the four model files into `out_dir` and return the meta dict (also written)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    by_trees = ndcg_by_tree_count(ranker, validation, tree_count_grid(ranker.n_trees))
    kept = choose_tree_count(by_trees, tolerance)
    full_onnx = to_onnx(ranker.kind, ranker.booster)
    compressed_onnx = to_onnx(ranker.kind, ranker.first_trees(kept).booster)
    output, full_scores = onnx_scores(full_onnx, validation.features)
    _, compressed_scores = onnx_scores(compressed_onnx, validation.features)
    native_scores = ranker.predict(validation.features)
    (out_dir / FILE_NAMES["native"]).write_bytes(ranker.native_bytes())
    (out_dir / FILE_NAMES["onnx"]).write_bytes(full_onnx)
    (out_dir / FILE_NAMES["onnx_compressed"]).write_bytes(compressed_onnx)
    meta = {
        "kind": ranker.kind,
        "features": list(RANKER_FEATURES),
        "missing": "NaN",
        "onnx_input": ONNX_INPUT,
        "onnx_output": output,
        "n_trees": ranker.n_trees,
        "num_workers": ranker.num_workers,
        "train_seconds": round(ranker.train_seconds, 3),
        "onnx_max_abs_diff_vs_native": float(np.max(np.abs(full_scores - native_scores)))
        if len(native_scores)
        else 0.0,
        "compressed": {
            "method": f"first {kept} of {ranker.n_trees} trees: the fewest whose validation NDCG@10 is within "
            f"{tolerance} of the full model",
            "trees": kept,
            "tolerance": tolerance,
            "validation_ndcg@10_full": mean_ndcg(validation, full_scores),
            "validation_ndcg@10_compressed": mean_ndcg(validation, compressed_scores),
            "validation_ndcg@10_by_trees": {str(n): v for n, v in by_trees.items()},
            "validation_queries": len(validation.boundaries()),
            "onnx_bytes": len(full_onnx),
            "compressed_onnx_bytes": len(compressed_onnx),
            "size_ratio": round(len(compressed_onnx) / len(full_onnx), 4),
        },
        **(extra_meta or {}),
    }
    (out_dir / FILE_NAMES["meta"]).write_text(json.dumps(meta, indent=2, sort_keys=True))
    return meta

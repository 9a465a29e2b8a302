"""The `@champion` contract: how every process reads a ranker out of the MLflow model registry.

One home for batch scoring and evaluation (spark_jobs), serving (its hot-swap watcher in
serving.models) and the CLI:

- `configure_mlflow` / `registry_client`: explicit tracking and registry URIs from settings, never
  MLflow's working-directory defaults.
- `champion_version`: the version `@champion` points at, or None when the registered model or the alias
  does not exist yet. Any other failure (registry unreachable, bad URI) raises `RegistryUnavailable`:
  an outage is never mistaken for "no champion".
- `download_version`: the URI rule. The version's own download location, resolved by a client built
  from settings; `models:/name/version` would be resolved with the process-wide registry URI instead.
- `load_ranker` / `ranker_from_directory`: a version's MODEL_FILES turned into a `LoadedRanker` that
  predicts (ONNX by default, the native booster when ONNX cannot be loaded) and keeps the native bytes
  that Spark tasks score with.
- `parse_native_booster`: an xgboost or LightGBM booster from its bytes (serving and Spark tasks).

`mlflow`, onnxruntime and the boosters are imported inside functions: `import mlflow` costs seconds and
nothing here may run at import time.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from feature_store.ranking import CHAMPION_ALIAS, MODEL_FILES, RANKER_FEATURES
from feature_store.settings import Settings

log = logging.getLogger(__name__)

# What MLflow answers when the registered model or the alias does not exist.
_NOT_FOUND_CODES = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


class NoChampion(LookupError):
    """The registered model has no `champion` alias yet (no model passed the gate or was promoted)."""


class RegistryUnavailable(RuntimeError):
    """The model registry could not be asked (unreachable, misconfigured): not the same as no champion."""


class ModelLoadError(RuntimeError):
    """A registered model version could not be turned into a working ranker (says which and why)."""


def configure_mlflow(settings: Settings) -> None:
    """Point MLflow at the settings' tracking store, registry and experiment (created with its
    artifact location under `settings.artifact_root`)."""
    import mlflow

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.registry_uri)
    if mlflow.get_experiment_by_name(settings.mlflow.experiment) is None:
        root = settings.artifact_root
        location = Path(root).resolve().as_uri() if "://" not in root else root
        mlflow.create_experiment(settings.mlflow.experiment, artifact_location=location)
    mlflow.set_experiment(settings.mlflow.experiment)


def registry_client(settings: Settings):
    """An MlflowClient on the settings' stores; changes no process-wide MLflow state."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.registry_uri)


def champion_version(settings: Settings) -> str | None:
    """The version the `champion` alias points at (wherever it was set: gate, CLI, MLflow UI), or None
    when the model or the alias does not exist. Raises RegistryUnavailable on any other failure."""
    from mlflow.exceptions import MlflowException

    try:
        return str(
            registry_client(settings)
            .get_model_version_by_alias(settings.ranker.model_name, CHAMPION_ALIAS)
            .version
        )
    except MlflowException as exc:
        if getattr(exc, "error_code", "") in _NOT_FOUND_CODES:
            return None
        raise RegistryUnavailable(
            f"model registry {settings.registry_uri} could not be asked for {settings.ranker.model_name}@{CHAMPION_ALIAS}: {exc}"
        ) from exc
    except Exception as exc:  # drivers, network, file system: each fails in its own way
        raise RegistryUnavailable(
            f"model registry {settings.registry_uri} could not be asked for {settings.ranker.model_name}@{CHAMPION_ALIAS}: {type(exc).__name__}: {exc}"
        ) from exc


def download_version(settings: Settings, version: str, destination: Path) -> Path:
    """Download one registered version's model directory into `destination`; returns its path."""
    import mlflow.artifacts

    location = registry_client(settings).get_model_version_download_uri(settings.ranker.model_name, version)
    return Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=location, dst_path=str(destination), tracking_uri=settings.tracking_uri
        )
    )


# -- a registered version as a ranker ---------------------------------------------------------------


@dataclass
class LoadedRanker:
    """A ready-to-call ranker: `predict(matrix in RANKER_FEATURES order) -> scores`, plus the native
    booster's bytes (what Spark tasks score with) and the version's meta."""

    name: str
    version: str
    backend: str  # "onnx", "onnx_compressed", "native:xgboost", "native:lightgbm"
    columns: np.ndarray | None  # indices into RANKER_FEATURES when the model's order differs
    run: Callable[[np.ndarray], np.ndarray]
    kind: str = ""  # "xgboost" or "lightgbm"
    native: bytes = b""
    meta: dict[str, Any] = field(default_factory=dict)
    loaded_at: float = field(default_factory=time.time)

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        if matrix.shape[0] == 0:
            return np.zeros(0, dtype=np.float32)
        if self.columns is not None:
            matrix = matrix[:, self.columns]
        return np.asarray(self.run(np.ascontiguousarray(matrix, dtype=np.float32)), dtype=np.float32).reshape(
            -1
        )


def feature_columns(model_features: list[str]) -> np.ndarray | None:
    """Column indices picking the model's features from a RANKER_FEATURES matrix (None: same order).

    Raises ModelLoadError when the model needs a feature serving does not build."""
    if list(model_features) == list(RANKER_FEATURES):
        return None
    unknown = [f for f in model_features if f not in RANKER_FEATURES]
    if unknown:
        raise ModelLoadError(
            f"the model needs features serving does not build: {unknown}; "
            "train on feature_store.ranking.RANKER_FEATURES"
        )
    return np.array([RANKER_FEATURES.index(f) for f in model_features], dtype=np.intp)


def parse_native_booster(kind: str, native: bytes):
    """An xgboost Booster (JSON/UBJSON bytes) or a LightGBM Booster (model text) from its bytes."""
    if kind.startswith("xgboost"):
        import xgboost

        booster = xgboost.Booster()
        # From a buffer, xgboost tells JSON from UBJSON by content (the file has no extension to go by).
        booster.load_model(bytearray(native))
        return booster
    if kind.startswith("lightgbm"):
        import lightgbm

        return lightgbm.Booster(model_str=native.decode())
    raise ModelLoadError(f"unknown model kind {kind!r} in {MODEL_FILES.meta}; expected xgboost or lightgbm")


def _onnx_runner(path: Path, output: str | None, n_features: int) -> Callable[[np.ndarray], np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    # One thread per call: requests already run concurrently, and 2 cores are shared with Redis.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    outputs = [o.name for o in session.get_outputs()]
    output_name = output if output in outputs else outputs[0]

    def run(matrix: np.ndarray) -> np.ndarray:
        return session.run([output_name], {input_name: matrix})[0]

    run(np.zeros((1, n_features), dtype=np.float32))  # fail here at load, not in a request
    return run


def _native_runner(kind: str, native: bytes) -> Callable[[np.ndarray], np.ndarray]:
    if not native:
        raise ModelLoadError(f"no {MODEL_FILES.native} in the model directory")
    booster = parse_native_booster(kind, native)
    if kind.startswith("xgboost"):
        booster.set_param({"nthread": 1})
        return lambda matrix: booster.inplace_predict(matrix)
    return lambda matrix: booster.predict(matrix, num_threads=1)


def _native_bytes(path: Path) -> bytes:
    """The native model may be logged as a file or as a folder holding one file; b"" when absent."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        if not files:
            raise ModelLoadError(f"{path} holds no model file")
        path = files[0]
    return path.read_bytes() if path.exists() else b""


def ranker_from_directory(directory: Path, name: str, version: str, preferred: str = "onnx") -> LoadedRanker:
    """Build a ranker from a downloaded MLflow model directory (the MODEL_FILES layout): the
    `preferred` ONNX graph, falling back to the native booster ("native": the booster only)."""
    meta_path = directory / MODEL_FILES.meta
    if not meta_path.exists():
        raise ModelLoadError(
            f"{name} v{version} has no {MODEL_FILES.meta}; was it logged in the MODEL_FILES layout?"
        )
    meta = json.loads(meta_path.read_text())
    columns = feature_columns(meta.get("features") or list(RANKER_FEATURES))
    n_features = len(columns) if columns is not None else len(RANKER_FEATURES)
    kind = str(meta.get("kind", ""))
    native = _native_bytes(directory / MODEL_FILES.native)
    attempts: list[tuple[str, Callable[[], Callable[[np.ndarray], np.ndarray]]]] = []
    onnx_files = {"onnx": MODEL_FILES.onnx, "onnx_compressed": MODEL_FILES.onnx_compressed}
    if preferred in onnx_files:
        attempts.append(
            (
                preferred,
                lambda: _onnx_runner(directory / onnx_files[preferred], meta.get("onnx_output"), n_features),
            )
        )
    attempts.append((f"native:{kind.split(':')[0] or 'unknown'}", lambda: _native_runner(kind, native)))
    errors: list[str] = []
    for backend, build in attempts:
        try:
            return LoadedRanker(
                name=name,
                version=version,
                backend=backend,
                columns=columns,
                run=build(),
                kind=kind,
                native=native,
                meta=meta,
            )
        except Exception as exc:  # each backend may fail in its own library's way; try the next one
            errors.append(f"{backend}: {type(exc).__name__}: {exc}")
            log.warning("ranker %s v%s: %s backend failed: %s", name, version, backend, exc)
    raise ModelLoadError(f"{name} v{version} could not be loaded: " + "; ".join(errors))


def load_ranker(settings: Settings, version: str | None = None, preferred: str | None = None) -> LoadedRanker:
    """Download a registered version (default: `@champion`, NoChampion when there is none) and build
    its ranker; `preferred` defaults to `settings.serving.ranker_file`. Blocking: serving calls it in
    a worker thread."""
    if version is None:
        version = champion_version(settings)
        if version is None:
            raise NoChampion(
                f"{settings.ranker.model_name} has no `{CHAMPION_ALIAS}` alias yet: run the batch (`lambdarec batch run`) or promote a version"
            )
    with tempfile.TemporaryDirectory(prefix="lambdarec-ranker-") as tmp:
        local = download_version(settings, str(version), Path(tmp))
        # onnxruntime and the boosters read the files fully at load, so the folder can go afterwards.
        return ranker_from_directory(
            local, settings.ranker.model_name, str(version), preferred or settings.serving.ranker_file
        )

"""The @champion ranker in the serving process: loading from MLflow, running it, and hot swapping.

Who uses it: the FastAPI lifespan (`serving.app`) starts a `ChampionWatcher`; requests read
`ModelHolder.current` once and keep that object for the whole request, so a swap (one attribute
assignment) never changes the model under a running request and never fails one.

- `resolve_champion` / `load_ranker` do the blocking work (MLflow registry, artifact download,
  onnxruntime session) and run in a worker thread: the event loop never blocks on them. `mlflow` is
  imported only here, inside functions (it costs seconds to import).
- A model version's MLflow directory holds `feature_store.ranking.MODEL_FILES`: the meta JSON
  (`kind`, `features`, `onnx_output`), the ONNX graph (and a compressed one) and the native booster.
  ONNX runs by default; when it cannot be loaded the native booster (xgboost / lightgbm) is the fallback.
- The registry unreachable or a broken new version: the last good model keeps serving and the error
  is counted and shown on /readyz.
"""

from __future__ import annotations

import asyncio
import json
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from feature_store.ranking import CHAMPION_ALIAS, MODEL_FILES, RANKER_FEATURES
from feature_store.settings import Settings

log = logging.getLogger(__name__)


class ModelLoadError(RuntimeError):
    """A registered model version could not be turned into a working ranker (says which and why)."""


@dataclass
class LoadedRanker:
    """A ready-to-call ranker: `predict(matrix in RANKER_FEATURES order) -> scores`."""

    name: str
    version: str
    backend: str  # "onnx", "onnx_compressed", "native:xgboost", "native:lightgbm"
    columns: np.ndarray | None  # indices into RANKER_FEATURES when the model's order differs
    run: Callable[[np.ndarray], np.ndarray]
    loaded_at: float = field(default_factory=time.time)

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        if matrix.shape[0] == 0:
            return np.zeros(0, dtype=np.float32)
        if self.columns is not None:
            matrix = matrix[:, self.columns]
        return np.asarray(self.run(np.ascontiguousarray(matrix, dtype=np.float32)), dtype=np.float32).reshape(-1)


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


def _single_file(path: Path) -> Path:
    """The native model may be logged as a file or as a folder holding one file."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        if not files:
            raise ModelLoadError(f"{path} holds no model file")
        return files[0]
    return path


def _native_runner(path: Path, kind: str) -> Callable[[np.ndarray], np.ndarray]:
    path = _single_file(path)
    if kind.startswith("xgboost"):
        import xgboost

        booster = xgboost.Booster()
        # From a buffer, xgboost tells JSON from UBJSON by content; from a path it goes by the file
        # extension, and `native_model` has none.
        booster.load_model(bytearray(path.read_bytes()))
        booster.set_param({"nthread": 1})
        return lambda matrix: booster.inplace_predict(matrix)
    if kind.startswith("lightgbm"):
        import lightgbm

        booster = lightgbm.Booster(model_file=str(path))
        return lambda matrix: booster.predict(matrix, num_threads=1)
    raise ModelLoadError(f"unknown model kind {kind!r} in {MODEL_FILES.meta}; expected xgboost or lightgbm")


def ranker_from_directory(directory: Path, name: str, version: str, preferred: str = "onnx") -> LoadedRanker:
    """Build a ranker from a downloaded MLflow model directory (the MODEL_FILES layout)."""
    meta_path = directory / MODEL_FILES.meta
    if not meta_path.exists():
        raise ModelLoadError(f"{name} v{version} has no {MODEL_FILES.meta}; was it logged in the MODEL_FILES layout?")
    meta = json.loads(meta_path.read_text())
    columns = feature_columns(meta.get("features") or list(RANKER_FEATURES))
    n_features = len(columns) if columns is not None else len(RANKER_FEATURES)
    kind = str(meta.get("kind", ""))
    attempts: list[tuple[str, Callable[[], Callable[[np.ndarray], np.ndarray]]]] = []
    onnx_files = {"onnx": MODEL_FILES.onnx, "onnx_compressed": MODEL_FILES.onnx_compressed}
    if preferred in onnx_files:
        attempts.append((preferred, lambda: _onnx_runner(directory / onnx_files[preferred], meta.get("onnx_output"), n_features)))
    attempts.append((f"native:{kind.split(':')[0] or 'unknown'}", lambda: _native_runner(directory / MODEL_FILES.native, kind)))
    errors: list[str] = []
    for backend, build in attempts:
        try:
            return LoadedRanker(name=name, version=version, backend=backend, columns=columns, run=build())
        except Exception as exc:  # each backend may fail in its own library's way; try the next one
            errors.append(f"{backend}: {type(exc).__name__}: {exc}")
            log.warning("ranker %s v%s: %s backend failed: %s", name, version, backend, exc)
    raise ModelLoadError(f"{name} v{version} could not be loaded: " + "; ".join(errors))


def resolve_champion(settings: Settings) -> str | None:
    """The registered version the champion alias points at (None: no such model or alias yet).
    Blocking (MLflow client): call in a thread. Registry errors propagate."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.registry_uri)
    try:
        return str(client.get_model_version_by_alias(settings.ranker_model_name, CHAMPION_ALIAS).version)
    except MlflowException as exc:
        if getattr(exc, "error_code", "") in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def load_ranker(settings: Settings, version: str) -> LoadedRanker:
    """Download one registered version and build its ranker. Blocking: call in a thread."""
    import mlflow.artifacts
    from mlflow.tracking import MlflowClient

    # Not `models:/name/version`: MLflow resolves that URI with the process-wide registry URI
    # (`./mlflow.db` in the working directory by default), not the registry_uri passed along, so
    # the version would be looked up in the wrong registry. Our client resolves it, then the
    # download reads the version's own artifact location.
    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.registry_uri)
    location = client.get_model_version_download_uri(settings.ranker_model_name, version)
    with tempfile.TemporaryDirectory(prefix="lambdarec-ranker-") as tmp:
        local = mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=tmp, tracking_uri=settings.tracking_uri)
        # onnxruntime and the boosters read the files fully at load, so the folder can go afterwards.
        return ranker_from_directory(Path(local), settings.ranker_model_name, version, settings.serving_ranker_file)


class ModelHolder:
    """The ranker in use. Requests read `current` once; a swap is one reference assignment."""

    def __init__(self) -> None:
        self.current: LoadedRanker | None = None
        self.champion_version: str | None = None  # what the registry said last (None: no champion)
        self.last_error: str | None = None
        self.swaps = 0
        self.registry_errors = 0

    def swap(self, ranker: LoadedRanker) -> None:
        self.current = ranker
        self.swaps += 1


class ChampionWatcher:
    """Loads the champion at start-up and polls the alias; a moved alias loads the new version in a
    worker thread and swaps it in. Resolver and loader are injected so tests can use real MLflow
    with their own settings."""

    def __init__(
        self,
        settings: Settings,
        holder: ModelHolder,
        resolve: Callable[[Settings], str | None] = resolve_champion,
        load: Callable[[Settings, str], LoadedRanker] = load_ranker,
        on_swap: Callable[[LoadedRanker], object] | None = None,
    ) -> None:
        self.settings = settings
        self.holder = holder
        self.resolve = resolve
        self.load = load
        self.on_swap = on_swap
        self._failed_version: str | None = None
        self._task: asyncio.Task | None = None
        self.checks = 0

    async def check(self) -> bool:
        """One poll: True when a new ranker was swapped in. Never raises."""
        self.checks += 1
        try:
            version = await asyncio.to_thread(self.resolve, self.settings)
        except Exception as exc:  # registry down, network, auth: keep serving the last good model
            self.holder.registry_errors += 1
            self.holder.last_error = f"registry unreachable: {type(exc).__name__}: {exc}"
            log.warning("model registry check failed, keeping %s: %s", self._describe(), exc)
            return False
        self.holder.champion_version = version
        current = self.holder.current
        if version is None or (current is not None and current.version == version) or version == self._failed_version:
            if version is None or (current is not None and current.version == version):
                self.holder.last_error = None
            return False
        try:
            ranker = await asyncio.to_thread(self.load, self.settings, version)
        except Exception as exc:  # a broken version must not replace a working one
            self._failed_version = version
            self.holder.last_error = f"champion v{version} failed to load: {exc}"
            log.error("champion v%s failed to load, keeping %s: %s", version, self._describe(), exc)
            return False
        self.holder.swap(ranker)
        self.holder.last_error = None
        self._failed_version = None
        log.info("serving %s v%s (%s)", ranker.name, ranker.version, ranker.backend)
        if self.on_swap is not None:
            result = self.on_swap(ranker)
            if asyncio.iscoroutine(result):
                await result
        return True

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.settings.model_poll_interval_s)
            await self.check()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._poll(), name="champion-watcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    def _describe(self) -> str:
        current = self.holder.current
        return f"v{current.version}" if current else "no model"

"""The @champion ranker in the serving process: hot swapping what feature_store.registry loads.

Who uses it: the FastAPI lifespan (`serving.app`) starts a `ChampionWatcher`; requests read
`ModelHolder.current` once and keep that object for the whole request, so a swap (one attribute
assignment) never changes the model under a running request and never fails one.

- Resolving the alias, downloading and building the ranker (ONNX, or the native booster when ONNX
  cannot be loaded) is feature_store.registry's `champion_version` / `load_ranker`, the same code batch
  scoring uses. It blocks (MLflow registry, artifact download, onnxruntime session), so it runs in a
  worker thread: the event loop never blocks on it.
- The registry unreachable or a broken new version: the last good model keeps serving and the error
  is counted and shown on /readyz.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from feature_store.registry import LoadedRanker, champion_version, load_ranker
from feature_store.settings import Settings

log = logging.getLogger(__name__)


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
        resolve: Callable[[Settings], str | None] = champion_version,
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
        if (
            version is None
            or (current is not None and current.version == version)
            or version == self._failed_version
        ):
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
            await asyncio.sleep(self.settings.serving.model_poll_interval_s)
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

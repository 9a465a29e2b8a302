"""Micro-batching of model calls: concurrent requests' candidate matrices go through one `predict`.

Who uses it: `serving.recommender` when `settings.serving.microbatch_enabled`. The first request to
arrive opens a batch and waits up to `wait_ms` for others (or until `max_rows`), then one call scores
all rows in a worker thread (onnxruntime and the boosters release the GIL) and each request gets its
slice back. Requests hold their own ranker; rows scored with different rankers (during a swap) are
batched separately, so a swap never mixes models.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import numpy as np

from feature_store.registry import LoadedRanker


@dataclass
class _Batch:
    ranker: LoadedRanker
    matrices: list[np.ndarray] = field(default_factory=list)
    futures: list[asyncio.Future] = field(default_factory=list)
    rows: int = 0


class MicroBatcher:
    def __init__(self, wait_ms: float = 1.0, max_rows: int = 4096) -> None:
        self.wait_s = wait_ms / 1000.0
        self.max_rows = max_rows
        self._open: _Batch | None = None
        self.calls = 0
        self.requests = 0

    async def predict(self, ranker: LoadedRanker, matrix: np.ndarray) -> np.ndarray:
        loop = asyncio.get_running_loop()
        batch = self._open
        if batch is None or batch.ranker is not ranker:
            batch = self._open = _Batch(ranker)
            loop.call_later(self.wait_s, self._flush, batch)
        future: asyncio.Future = loop.create_future()
        batch.matrices.append(matrix)
        batch.futures.append(future)
        batch.rows += matrix.shape[0]
        self.requests += 1
        if batch.rows >= self.max_rows:
            self._flush(batch)
        return await future

    def _flush(self, batch: _Batch) -> None:
        if self._open is batch:
            self._open = None
        if not batch.futures or all(f.done() for f in batch.futures):
            return
        asyncio.get_running_loop().create_task(self._score(batch))

    async def _score(self, batch: _Batch) -> None:
        matrices, futures = batch.matrices, batch.futures
        batch.matrices, batch.futures = [], []
        self.calls += 1
        try:
            scores = await asyncio.to_thread(batch.ranker.predict, np.concatenate(matrices))
        except Exception as exc:  # hand the error to every waiting request; each falls back alone
            for future in futures:
                if not future.done():
                    future.set_exception(exc)
            return
        start = 0
        for matrix, future in zip(matrices, futures):
            end = start + matrix.shape[0]
            if not future.done():
                future.set_result(scores[start:end])
            start = end

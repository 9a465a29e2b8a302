"""Rules on whole DataFrames that several jobs share (one home each)."""

from __future__ import annotations

from collections.abc import Iterable

from pyspark.sql import DataFrame


def union_all(frames: Iterable[DataFrame]) -> DataFrame:
    """The rows of every frame, columns matched by name (frames must have the same columns)."""
    first, *rest = list(frames)
    for frame in rest:
        first = first.unionByName(frame)
    return first

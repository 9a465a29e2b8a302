"""What every nightly step gets (`BatchContext`) and the three cut-offs of a run date (`Cutoffs`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta

from pyspark.sql import DataFrame, SparkSession

from feature_store.settings import Settings
from feature_store.tables import Table

EVAL_K = 10


class BatchStepError(RuntimeError):
    """A step cannot run on the data it found (the message says what is missing and what to run)."""


@dataclass(frozen=True)
class Cutoffs:
    """The three cut-offs of run date D with label horizon h and holdout length H (default h): judge on
    D-H (labels up to D), train on D-H-h (labels up to D-H), serve D."""

    train: date
    holdout: date
    serve: date

    @classmethod
    def of(cls, run_date: date, horizon_days: int, holdout_days: int | None = None) -> Cutoffs:
        holdout = run_date - timedelta(days=holdout_days or horizon_days)
        return cls(train=holdout - timedelta(days=horizon_days), holdout=holdout, serve=run_date)

    @property
    def holdout_days(self) -> int:
        return (self.serve - self.holdout).days


@dataclass
class BatchContext:
    """What every step gets: the session, settings, run date, and the outside world passed in."""

    spark: SparkSession
    settings: Settings
    run_date: date
    redis_url: Callable[[], str] = field(default=lambda: "")
    clock: Callable[[], float] = time.time

    @property
    def cutoffs(self) -> Cutoffs:
        return Cutoffs.of(
            self.run_date, self.settings.batch.label_horizon_days, self.settings.batch.holdout_days
        )

    def read(self, table: Table) -> DataFrame:
        from spark_jobs.delta_io import read_table

        return read_table(self.spark, self.settings, table)

    def replace_where(self, table: Table, df: DataFrame, condition: str) -> int:
        """Overwrite exactly the rows of `table` matching `condition` with `df` (spark_jobs.delta_io)."""
        from spark_jobs.delta_io import replace_where

        return replace_where(self.spark, self.settings, table, df, condition)

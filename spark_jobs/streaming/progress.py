"""Where a speed micro-batch's time goes, from Spark's own progress reports.

Who calls it: the job's restart loop (`speed_job._run_queries`) once a second, which writes the result
into the status hash as `speed_phase_<phase>_ms` fields; `benchmarks.bench_freshness` records them
per rate. Freshness is the time from publish to visible, and the job's own `last_batch_ms` only
covers the `foreachBatch` body: these phases (Spark's `durationMs`: `latestOffset` asks the source how
far the bus goes, `walCommit`/`commitOffsets` write the checkpoint, `addBatch` runs the batch,
`triggerExecution` is the whole micro-batch) say what the rest of the lag is made of. The speed
writer splits `addBatch` itself (`writer_phases`: `speed_phase_read_ms`, `speed_phase_apply_ms`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from statistics import median

PHASE_PREFIX, PHASE_SUFFIX = "speed_phase_", "_ms"


def progress_phases(progress: Iterable[Mapping]) -> dict[str, int]:
    """Median ms per `durationMs` phase over the reports of micro-batches that read something (an
    empty poll costs `latestOffset` alone and would hide the batches that carry events); {} when none did."""
    batches = [p["durationMs"] for p in progress if p.get("numInputRows", 0) > 0 and p.get("durationMs")]
    phases = sorted({name for durations in batches for name in durations})
    return {name: round(median(d[name] for d in batches if name in d)) for name in phases}


def writer_phases(read_ms: Iterable[int], apply_ms: Iterable[int]) -> dict[str, int]:
    """`addBatch` split by the speed query's own writer, median ms over its recent batches with
    entries: `read` (Spark runs the source and collects the entries into the driver) and `apply` (check,
    decode and apply them to Redis, record the offset); {} before the first such batch."""
    read, apply = list(read_ms), list(apply_ms)
    return {"read": round(median(read)), "apply": round(median(apply))} if read and apply else {}


def phase_fields(phases: Mapping[str, int]) -> dict[str, int]:
    """The status-hash fields of `progress_phases`."""
    return {f"{PHASE_PREFIX}{name}{PHASE_SUFFIX}": ms for name, ms in phases.items()}


def phases_in_status(status: Mapping[str, str]) -> dict[str, int]:
    """The phases back from the status hash (`phase_fields` read as strings)."""
    return {
        name[len(PHASE_PREFIX) : -len(PHASE_SUFFIX)]: int(value)
        for name, value in status.items()
        if name.startswith(PHASE_PREFIX) and name.endswith(PHASE_SUFFIX)
    }

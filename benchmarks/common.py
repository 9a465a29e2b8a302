"""Shared helpers for benchmarks (`make bench` runs every `benchmarks/bench_*.py`).

Convention of a benchmark module `bench_<name>.py`:
- `run(quick: bool, out_dir: Path) -> dict` does the measurement, writes `out_dir/<name>.json` with
  `write_result` and returns the same dict;
- the dict has `"machine"` (from `machine_info()`), and for the report optionally
  `"tables": [{"title", "columns": [...], "rows": [[...], ...]}]` and
  `"plots": [{"title", "x_label", "y_label", "x": [...], "lines": {"name": [...]}, "log_y": bool}]`;
  speed is quoted as ratios against a baseline measured in the same run.
- `python -m benchmarks.bench_<name> [--quick]` runs it alone (see `main`).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import json
import os
import platform
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def machine_info() -> dict:
    import psutil

    return {
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()}",
    }


def percentiles(values: Iterable[float], points: tuple[float, ...] = (50, 95, 99)) -> dict[str, float]:
    import numpy as np

    data = np.asarray(list(values), dtype=float)
    if data.size == 0:
        return {percentile_name(p): float("nan") for p in points}
    return {percentile_name(p): float(np.percentile(data, p)) for p in points}


def percentile_name(point: float) -> str:
    """`p99` for 99, `p999` for 99.9."""
    return f"p{point:g}".replace(".", "")


def _sum_over_tree(pid: int, measure: Callable) -> float:
    """`measure(process)` summed over a process and its living children (one that exits meanwhile
    counts 0); 0 when the process is gone."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for proc in procs:
        try:
            total += measure(proc)
        except psutil.NoSuchProcess:
            pass
    return total


def process_tree_rss(pid: int) -> int:
    """Resident memory of a process and all its children (the JVM of a PySpark driver included), bytes."""
    return int(_sum_over_tree(pid, lambda proc: proc.memory_info().rss))


def _cpu_s(proc) -> float:
    t = proc.cpu_times()
    return t.user + t.system + t.children_user + t.children_system


def process_tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process and its living children have used so far, with what its
    exited children used once waited for; 0.0 when the process is gone."""
    return float(_sum_over_tree(pid, _cpu_s))


# -- the API as a process under load ------------------------------------------------------------
def start_ready(
    env: dict[str, str], log: Path, attempts: int = 3, workers: int = 1, off: tuple[str, ...] = ()
) -> tuple[subprocess.Popen, int, dict]:
    """Start `lambdarec serve` (with the serving switches `off`: benchmarks.serve_variant) on a free
    port until it is ready (a port taken between choosing and binding it makes the server exit; then
    another port is tried)."""
    from benchmarks.serve_variant import command
    from lambdarec.redis_server import free_port
    from lambdarec.testing import start_server, stop_server, wait_ready

    for attempt in range(attempts):
        port = free_port()
        process = start_server(env, port, log, workers, command=command(off) if off else None)
        raise_priority(process.pid)
        try:
            return process, port, wait_ready(port, process)
        except RuntimeError:
            stop_server(process)
            if attempt == attempts - 1:
                raise RuntimeError(
                    f"lambdarec serve did not start; its log ends with:\n{log.read_text()[-2000:]}"
                ) from None
    raise AssertionError("unreachable")


def run_load(coroutine):
    """The load generator runs on uvloop (less of the shared CPU than the stdlib loop, so it does
    not starve the server it measures), with the garbage collector off: the record of answers grows
    by every request, a full collection of it (~480k objects) pauses the generator for 220-310 ms, and
    latency measured from the scheduled time charged those pauses to the server. What was alive before
    is frozen out of the way; the collector comes back after the run."""
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        try:
            import uvloop
        except ImportError:  # pragma: no cover - uvloop is a serving dependency
            return asyncio.run(coroutine)
        return uvloop.run(coroutine)
    finally:
        gc.enable()
        gc.unfreeze()


def raise_priority(pid: int = 0, nice: int = -10) -> bool:
    """Ask the scheduler to favour a process (0: this one) of the benchmark (load generator, server,
    redis-server): on a shared machine a neighbour's Spark job otherwise decides the latency. Linux
    schedules sessions as autogroups, so both the process's nice value and its autogroup's are set.
    Needs root; recorded in the results either way."""
    try:
        os.setpriority(os.PRIO_PROCESS, pid, nice)
        autogroup = Path(f"/proc/{pid or 'self'}/autogroup")
        if autogroup.exists():
            autogroup.write_text(str(nice))
        return True
    except (PermissionError, OSError):
        return False


# ml-latest-small's last years are sparse: a week of labels before a cut-off holds too few ratings to
# train on, so batch runs on it use 90-day horizons and a year of activity/popularity.
MOVIELENS_BATCH_SETTINGS = dict(
    label_horizon_days=90,
    active_user_days=365,
    popular_window_days=365,
    popular_half_life_days=60.0,
    session_gap_minutes=60,
)


def movielens_path() -> Path:
    """Where ml-latest-small is looked for: LAMBDAREC_MOVIELENS_DIR, else ../shared/data."""
    return Path(
        os.environ.get("LAMBDAREC_MOVIELENS_DIR", REPO.parent / "shared" / "data" / "ml-latest-small")
    )


def movielens_dir() -> Path | None:
    """ml-latest-small at `movielens_path`, when present."""
    candidate = movielens_path()
    return candidate if (candidate / "ratings.csv").exists() else None


def default_out_dir() -> Path:
    return REPO / "benchmarks" / "results" / dt.date.today().isoformat()


def write_result(out_dir: Path, name: str, payload: dict) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    payload.setdefault("machine", machine_info())
    payload.setdefault("name", name)
    (out_dir / f"{name}.json").write_text(json.dumps(payload, indent=2, default=str))
    return payload


def main(run: Callable[..., dict], options: dict[str, dict] | None = None) -> None:
    """Run one benchmark from the command line; `options` are its own flags (argparse keyword
    arguments by flag), passed to `run` as keyword arguments."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="smaller sizes, shorter durations")
    parser.add_argument(
        "--out", type=Path, default=None, help="results folder (default benchmarks/results/<date>)"
    )
    for flag, spec in (options or {}).items():
        parser.add_argument(flag, **spec)
    args = vars(parser.parse_args())
    quick, out = args.pop("quick"), args.pop("out")
    result = run(quick, out or default_out_dir(), **args)
    print(json.dumps({k: v for k, v in result.items() if k not in ("plots",)}, indent=2, default=str)[:20000])

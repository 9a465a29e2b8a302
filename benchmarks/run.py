"""`make bench`: run every benchmark module, then write benchmarks/REPORT.md with tables and plots.

Each `benchmarks/bench_<name>.py` exposes `run(quick, out_dir) -> dict` (see benchmarks/common.py).
A benchmark that fails is recorded with its error and the others still run; the exit code says so.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
import traceback
from pathlib import Path

from benchmarks.common import REPO, default_out_dir, write_result
from benchmarks.report import write_report

# Order: cheap and independent first; replay last (it uses every layer).
ORDER = (
    "batch_data",
    "batch_models",
    "capacity",
    "freshness",
    "faults",
    "soak",
    "serving",
    "feast",
    "replay",
)


def _order(name: str) -> tuple[int, str]:
    return (ORDER.index(name) if name in ORDER else len(ORDER), name)


def discover() -> list[str]:
    return sorted(
        (p.stem.removeprefix("bench_") for p in (REPO / "benchmarks").glob("bench_*.py")), key=_order
    )


def run_all(quick: bool, out_dir: Path, only: list[str] | None = None) -> dict[str, dict]:
    results: dict[str, dict] = {}
    for name in only or discover():
        started = time.monotonic()
        print(f"== benchmark {name} ({'quick' if quick else 'full'})", flush=True)
        try:
            module = importlib.import_module(f"benchmarks.bench_{name}")
            results[name] = module.run(quick, out_dir)
        except Exception as exc:  # one broken benchmark must not hide the others' numbers
            traceback.print_exc()
            results[name] = write_result(out_dir, name, {"error": f"{type(exc).__name__}: {exc}"})
        results[name]["wall_s"] = round(time.monotonic() - started, 1)
        results[name]["quick"] = quick
        write_result(out_dir, name, results[name])  # again, with the wall time and mode
        print(f"   {name}: {results[name]['wall_s']} s", flush=True)
    return results


def previous_results(out_dir: Path, skip: set[str]) -> dict[str, dict]:
    """Results of benchmarks not re-run this time, from their JSON in `out_dir` (so `--only X` rewrites
    REPORT.md with X's new numbers and everything else as it was)."""
    found: dict[str, dict] = {}
    for name in discover():
        path = out_dir / f"{name}.json"
        if name not in skip and path.is_file():
            found[name] = json.loads(path.read_text())
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", nargs="*", help="benchmark names (default: all)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out_dir = args.out or default_out_dir()
    results = run_all(args.quick, out_dir, args.only)
    if args.only:
        results = {**previous_results(out_dir, set(results)), **results}
        results = {name: results[name] for name in sorted(results, key=_order)}
    report = write_report(results, out_dir, REPO / "benchmarks" / "REPORT.md", quick=args.quick)
    print(f"wrote {report} and {out_dir}/*.json")
    (out_dir / "index.json").write_text(json.dumps(sorted(results), indent=2))
    return 1 if any("error" in r for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())

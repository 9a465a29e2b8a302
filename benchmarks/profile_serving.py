"""Where a request's CPU goes: `lambdarec serve` on bench_serving's set-up (same online store, same
champion, same open-loop load with one event in five), sampled by py-spy while it serves a fixed rate.

The server runs alone on the first CPU, the load generator, redis-server and py-spy on the others.
py-spy samples only running (non-idle) threads, so the samples are the server's CPU time; each
function's share of them, times the CPU per request measured over the same window, is its CPU
milliseconds per request. Written: `profile_serving.json` (top functions by self and by inclusive
time, and by module) and `profile_serving.raw.txt` (py-spy's collapsed stacks, for a flame graph:
`flamegraph.pl` or speedscope.app read it).

`python -m benchmarks.profile_serving [--rate 100] [--seconds 30] [--off SWITCH ...] --out DIR`.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

from benchmarks.bench_serving import open_loop, pin, serving_setup
from benchmarks.common import machine_info, main, run_load, start_ready, write_result
from lambdarec.testing import stop_server

TOP = 40


def parse_collapsed(lines: list[str]) -> list[tuple[list[str], int]]:
    """py-spy's raw output: one `frame;frame;...;leaf count` line per distinct stack, root first."""
    stacks = []
    for line in lines:
        line = line.rstrip("\n")
        if not line:
            continue
        stack, _, count = line.rpartition(" ")
        stacks.append((stack.split(";"), int(count)))
    return stacks


def frame_function(frame: str) -> str:
    """`recommend (serving/service.py:120)` -> `recommend (serving/service.py)`: one row per function,
    whichever line of it was running."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    return f"{name} ({path})" if path else name


def frame_module(frame: str) -> str:
    """The file a frame runs in (`serving/service.py`), or the frame itself when py-spy gives none."""
    _, _, where = frame.partition(" (")
    return where.rstrip(")").rsplit(":", 1)[0] or frame


def shares(stacks: list[tuple[list[str], int]]) -> dict[str, list[tuple[str, float]]]:
    """Each function's and module's share of all samples: self (it was the running frame) and
    inclusive (it was anywhere on the stack, counted once per sample)."""
    total = sum(count for _, count in stacks) or 1
    own: Counter = Counter()
    inclusive: Counter = Counter()
    module_own: Counter = Counter()
    for frames, count in stacks:
        own[frame_function(frames[-1])] += count
        module_own[frame_module(frames[-1])] += count
        for function in {frame_function(f) for f in frames}:
            inclusive[function] += count

    def top(counter: Counter) -> list[tuple[str, float]]:
        return [(name, round(n / total, 4)) for name, n in counter.most_common(TOP)]

    return {"self": top(own), "inclusive": top(inclusive), "module_self": top(module_own)}


def run(quick: bool, out_dir: Path, rate: int, seconds: float, off: list[str] | None) -> dict:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    cpus = sorted(os.sched_getaffinity(0))
    server_cpus, others = ({cpus[0]}, set(cpus[1:])) if len(cpus) >= 2 else (None, None)
    seconds = min(seconds, 10.0) if quick else seconds
    out_dir.mkdir(parents=True, exist_ok=True)
    raw = out_dir / "profile_serving.raw.txt"
    with serving_setup(pin_others=others) as setup:
        process, port, ready = start_ready(setup.env, setup.work / "serve.log", off=tuple(off or ()))
        if server_cpus:
            pin(process.pid, server_cpus)
        try:
            rng = random.Random(1)
            run_load(open_loop(port, rate, 3.0, rng, process.pid))  # warm-up, not profiled
            spy = subprocess.Popen(
                [py_spy, "record", "--pid", str(process.pid), "--duration", str(int(seconds) + 1)]
                + ["--rate", "250", "--format", "raw", "--nonblocking", "--output", str(raw)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            row = run_load(open_loop(port, rate, seconds, rng, process.pid))
            _, err = spy.communicate(timeout=60)
            if spy.returncode != 0:
                raise RuntimeError(f"py-spy failed: {err.decode()[-2000:]}")
        finally:
            stop_server(process)
    stacks = parse_collapsed(raw.read_text().splitlines())
    found = shares(stacks)
    cpu_ms = row["server_cpu_ms_per_request"]

    def with_ms(entries: list[tuple[str, float]]) -> list[list]:
        return [[name, share, round(share * cpu_ms, 3)] for name, share in entries]

    result = {
        "machine": machine_info(),
        "rate": rate,
        "seconds": seconds,
        "switches_off": off or [],
        "model_backend": ready["model"]["backend"],
        "load": row,
        "samples": sum(count for _, count in stacks),
        "server_cpu_ms_per_request": cpu_ms,
        "self": with_ms(found["self"]),
        "inclusive": with_ms(found["inclusive"]),
        "module_self": with_ms(found["module_self"]),
        "tables": [
            {
                "title": f"{title} at {rate} req/s ({cpu_ms} ms CPU/request, {row['p99']} ms p99)",
                "columns": ["function", "share of samples", "CPU ms/request"],
                "rows": with_ms(found[key])[:20],
            }
            for key, title in (("self", "Self time"), ("inclusive", "Inclusive time"))
        ],
    }
    return write_result(out_dir, "profile_serving", result)


if __name__ == "__main__":
    main(
        run,
        {
            "--rate": {"type": int, "default": 100, "help": "requests/s while sampling"},
            "--seconds": {"type": float, "default": 30.0, "help": "seconds sampled"},
            "--off": {"nargs": "*", "default": None, "help": "serving.tuning switches turned off"},
        },
    )

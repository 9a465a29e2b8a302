"""Fault-injection points of the streaming job, for the fault benchmark (benchmarks/bench_faults.py).

`LAMBDAREC_FAILPOINT=<point>[:<seconds>]` arms one point in a job process. When the job reaches it,
the job's whole process group (driver, JVM, Python workers) is SIGKILLed: at once, or `seconds` later
from a timer while the job carries on (so the kill lands inside work the JVM is doing, such as a Delta
commit). A random SIGKILL rarely lands inside the few milliseconds that matter; these points make the
benchmark's kills land there every time. Nothing in production sets the variable (it is not a setting:
no deployment should), and an unarmed point costs one environment lookup per micro-batch.

Points:
- `bronze_write`: a bronze micro-batch starts its Delta MERGEs (events, then quarantine);
- `redis_apply`: a speed micro-batch has written the first half of its shards to Redis, not the rest.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Mapping

ENV = "LAMBDAREC_FAILPOINT"
BRONZE_WRITE = "bronze_write"
REDIS_APPLY = "redis_apply"
POINTS = (BRONZE_WRITE, REDIS_APPLY)


def armed(point: str, environ: Mapping[str, str] = os.environ) -> float | None:
    """Seconds until the kill when `point` is the armed one (0 = at once), else None."""
    spec = environ.get(ENV, "")
    if not spec:
        return None
    name, _, delay = spec.partition(":")
    if name not in POINTS:
        raise ValueError(f"{ENV}={spec!r}: unknown point {name!r}; known: {', '.join(POINTS)}")
    if name != point:
        return None
    try:
        seconds = float(delay or 0)
    except ValueError:
        raise ValueError(f"{ENV}={spec!r}: the delay after ':' must be seconds") from None
    return max(seconds, 0.0)


def kill_process_group() -> None:
    os.killpg(os.getpgid(0), signal.SIGKILL)


def reach(
    point: str,
    environ: Mapping[str, str] = os.environ,
    kill: Callable[[], None] = kill_process_group,
) -> bool:
    """Kill the job here (or after the armed delay) when `point` is armed; True when it was."""
    delay = armed(point, environ)
    if delay is None:
        return False
    if delay == 0:
        kill()
    else:
        timer = threading.Timer(delay, kill)
        timer.daemon = True
        timer.start()
    return True

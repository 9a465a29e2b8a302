import gc
import os
import subprocess
import sys

from benchmarks.common import process_tree_cpu_s, run_load


async def collector_state() -> tuple[bool, int]:
    return gc.isenabled(), len(gc.get_objects(2))


def test_the_load_generator_runs_without_garbage_collection_and_restores_it():
    """A full collection of its growing record of answers pauses it for hundreds of ms: pauses of the
    client that the latency, measured from each request's scheduled time, charged to the server."""
    kept = [[i] for i in range(10_000)]  # long-lived containers the collector would traverse
    assert gc.isenabled()
    enabled, old_objects = run_load(collector_state())
    assert (enabled, old_objects) == (False, 0)  # off, and what was alive before is frozen away
    assert gc.isenabled()
    assert gc.get_freeze_count() == 0
    assert len(kept) == 10_000


BUSY_CHILD = """
import sys, time
while time.process_time() < 0.3:
    pass
print(time.process_time(), flush=True)
sys.stdin.read()  # alive (and idle) until the parent closes stdin
"""


def test_a_process_trees_cpu_includes_its_living_children():
    """The streaming job's CPU is its JVM and Python workers, all children of the job's process."""
    child = subprocess.Popen(
        [sys.executable, "-c", BUSY_CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        child_cpu = float(child.stdout.readline())
        own = sum(os.times()[:2])
        tree = process_tree_cpu_s(os.getpid())
        assert child_cpu >= 0.3
        assert tree >= own + child_cpu - 0.02  # the child's busy loop counts while it lives
    finally:
        child.stdin.close()
        child.wait()
    assert process_tree_cpu_s(child.pid) == 0.0  # gone

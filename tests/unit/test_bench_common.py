import gc

from benchmarks.common import run_load


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

from spark_jobs.streaming.progress import phase_fields, phases_in_status, progress_phases, writer_phases


def report(rows: int, **durations: int) -> dict:
    return {"numInputRows": rows, "durationMs": durations}


def test_the_phases_are_medians_over_the_batches_that_read_events():
    reports = [
        report(10, latestOffset=30, addBatch=200, triggerExecution=300),
        report(0, latestOffset=900, triggerExecution=900),  # an empty poll: left out
        report(5, latestOffset=50, addBatch=100, triggerExecution=250, walCommit=20),
        report(7, latestOffset=40, addBatch=150, triggerExecution=260),
    ]
    assert progress_phases(reports) == {
        "addBatch": 150,
        "latestOffset": 40,
        "triggerExecution": 260,
        "walCommit": 20,
    }


def test_no_batch_with_events_gives_no_phases():
    assert progress_phases([report(0, latestOffset=5), {"numInputRows": 3}]) == {}


def test_the_status_fields_name_each_phase():
    assert phase_fields({"addBatch": 150, "walCommit": 20}) == {
        "speed_phase_addBatch_ms": 150,
        "speed_phase_walCommit_ms": 20,
    }


def test_the_phases_read_back_from_the_status_hash_are_the_ones_written():
    status = {"speed_phase_addBatch_ms": "150", "speed_phase_walCommit_ms": "20", "last_batch_ms": "90"}
    assert phases_in_status(status) == {"addBatch": 150, "walCommit": 20}


def test_the_writer_splits_add_batch_into_reading_and_applying_by_median():
    assert writer_phases([40, 120, 80], [30, 10, 20]) == {"read": 80, "apply": 20}
    assert phase_fields(writer_phases([7, 8], [3, 4])) == {
        "speed_phase_read_ms": 8,
        "speed_phase_apply_ms": 4,
    }
    assert writer_phases([], []) == {}

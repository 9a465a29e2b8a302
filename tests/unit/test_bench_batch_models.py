from benchmarks.bench_batch_models import error_summary, report_tables, shuffle_partitions


def test_shuffle_partitions_grow_with_the_data():
    assert [shuffle_partitions(n) for n in (None, 30_000, 100_000, 1_000_000, 5_000_000)] == [4, 4, 4, 16, 80]


def test_error_summary_picks_the_cause_out_of_a_java_error():
    exc = RuntimeError(
        "An error occurred while calling o29393.save.\n: org.apache.spark.SparkException: Job aborted\n\tat x"
    )
    assert error_summary(exc) == "RuntimeError: : org.apache.spark.SparkException: Job aborted"
    assert error_summary(ValueError("")) == "ValueError: "


def test_a_failed_data_set_is_a_row_of_the_batch_run_table():
    result = {
        "batch_run": {
            "synthetic-30k": {
                "events": 30_000,
                "seconds": 100.2,
                "peak_rss_gib": 8.39,
                "step_seconds": {"features": 9.0, "candidates": 30.5},
                "promoted": True,
            },
            "synthetic-1000k": {"events": 1_000_000, "error": "Py4JJavaError: out of memory"},
        }
    }
    (table,) = report_tables(result)
    assert table["rows"] == [
        ["synthetic-30k", 30_000, 100.2, 8.39, "candidates", True],
        ["synthetic-1000k", 1_000_000, "failed", "-", "Py4JJavaError: out of memory", "-"],
    ]

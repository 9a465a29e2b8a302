"""The DAG files: they import cleanly, do nothing but wiring at parse time, follow the policy (owner,
retries, tags, catchup, doc) and have the expected tasks and dependencies.

Airflow is loaded in a subprocess (a fresh interpreter with its own AIRFLOW_HOME): importing Airflow
configures logging and writes its home folder, which must not leak into the rest of the test run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from feature_store.settings import project_root

DAGS = project_root() / "dags"
sys.path.insert(0, str(DAGS))

import _lambdarec  # noqa: E402  (the DAGs' shared wiring: pure helpers, no Airflow import)

EXPECTED_DAG_IDS = {
    "lambdarec_nightly",
    "lambdarec_backfill",
    "lambdarec_promote",
    "lambdarec_streaming_watchdog",
}

# Loads the DagBag as the dag-processor does and prints what the tests check, as JSON.
_DESCRIBE = r"""
import json, sys
from pathlib import Path
from airflow.dag_processing.dagbag import BundleDagBag

folder = Path(sys.argv[1])
bag = BundleDagBag(dag_folder=str(folder), bundle_path=folder)
out = {"import_errors": {k: str(v) for k, v in bag.import_errors.items()}, "dags": {}}
for dag_id, dag in bag.dags.items():
    tasks = {}
    for t in dag.tasks:
        tasks[t.task_id] = {
            "type": type(t).__name__,
            "upstream": sorted(t.upstream_task_ids),
            "owner": t.owner,
            "retries": t.retries,
            "conn_id": getattr(t, "_conn_id", None),
            "application": getattr(t, "application", None),
            "application_args": getattr(t, "application_args", None),
            "trigger_dag_id": getattr(t, "trigger_dag_id", None) or getattr(getattr(t, "partial_kwargs", {}), "get", lambda k: None)("trigger_dag_id"),
            "mapped": type(t).__name__ == "MappedOperator",
        }
    out["dags"][dag_id] = {
        "file": dag.fileloc,
        "tags": sorted(dag.tags),
        "catchup": dag.catchup,
        "max_active_runs": dag.max_active_runs,
        "timetable": type(dag.timetable).__name__,
        "schedule": getattr(dag.timetable, "expression", None),
        "doc_md": dag.doc_md,
        "params": sorted(dag.params.keys()),
        "owner": dag.owner,
        "tasks": tasks,
    }
print("DAGBAG-JSON " + json.dumps(out))
"""

# Imports each DAG file with an audit hook on: anything but reading Python source is parse-time I/O.
_PARSE_PROBE = r"""
import importlib.util, json, sys
sys.dont_write_bytecode = True
folder = sys.argv[1]
sys.path.insert(0, folder)
import pendulum, airflow.sdk  # Airflow itself may do I/O on import; the DAG files may not.
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
WATCHED = ("open", "socket.", "subprocess.", "os.system", "os.exec", "os.spawn", "os.mkdir", "os.remove",
           "os.rename", "shutil.", "sqlite3.connect", "urllib.", "http.client", "os.putenv")
events, recording = [], False
def hook(event, args):
    if not recording or not event.startswith(WATCHED):
        return
    if event == "open" and str(args[0]).endswith((".py", ".pyc")) and args[1] in ("r", "rb"):
        return
    events.append([event, repr(args)[:200]])
sys.addaudithook(hook)
before = set(sys.modules)
results = {}
for name in sys.argv[2:]:
    events.clear()
    recording = True
    spec = importlib.util.spec_from_file_location(name, f"{folder}/{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    recording = False
    results[name] = list(events)
results["new_modules"] = sorted(set(sys.modules) - before)
print("PROBE-JSON " + json.dumps(results))
"""


def _run_airflow_python(script: str, *args: str, tmp_path: Path) -> dict:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AIRFLOW", "LAMBDAREC_"))}
    env.update(
        {
            "AIRFLOW_HOME": str(tmp_path / "airflow"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
            "LAMBDAREC_DATA_DIR": str(tmp_path / "data"),
        }
    )
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    marker = [line for line in done.stdout.splitlines() if line.startswith(("DAGBAG-JSON ", "PROBE-JSON "))]
    assert marker, done.stdout[-2000:] + done.stderr[-2000:]
    return json.loads(marker[-1].split(" ", 1)[1])


@pytest.fixture(scope="module")
def dagbag(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return _run_airflow_python(_DESCRIBE, str(DAGS), tmp_path=tmp_path_factory.mktemp("dagbag"))


def test_dagbag_imports_all_four_dags_without_errors(dagbag: dict) -> None:
    assert dagbag["import_errors"] == {}
    assert set(dagbag["dags"]) == EXPECTED_DAG_IDS


def test_dag_files_do_no_io_and_no_heavy_imports_at_parse_time(tmp_path: Path) -> None:
    names = sorted(p.stem for p in DAGS.glob("lambdarec_*.py"))
    assert names == sorted(EXPECTED_DAG_IDS)
    probe = _run_airflow_python(_PARSE_PROBE, str(DAGS), *names, tmp_path=tmp_path)
    assert {name: probe[name] for name in names} == {name: [] for name in names}
    heavy = (
        "pyspark",
        "mlflow",
        "xgboost",
        "lightgbm",
        "redis",
        "pandas",
        "sklearn",
        "onnx",
        "spark_jobs",
        "serving",
        "lambdarec",
    )
    assert [m for m in probe["new_modules"] if m.split(".")[0] in heavy] == []


@pytest.mark.parametrize("dag_id", sorted(EXPECTED_DAG_IDS))
def test_policy_owner_retries_tags_catchup_doc(dagbag: dict, dag_id: str) -> None:
    dag = dagbag["dags"][dag_id]
    assert dag["catchup"] is False
    assert "lambdarec" in dag["tags"]
    assert dag["owner"] == "lambdarec"
    assert {t["owner"] for t in dag["tasks"].values()} == {"lambdarec"}
    assert all(isinstance(t["retries"], int) for t in dag["tasks"].values())
    # doc_md is the DAG file's module docstring, headed by the DAG id.
    assert dag["doc_md"].startswith(f"### {dag_id}")
    source = Path(dag["file"]).read_text()
    assert dag["doc_md"] in source


def test_nightly_runs_every_step_on_spark_in_order(dagbag: dict) -> None:
    nightly = dagbag["dags"]["lambdarec_nightly"]
    assert nightly["timetable"] == "CronDataIntervalTimetable"
    assert nightly["schedule"] == "0 0 * * *"
    assert nightly["max_active_runs"] == 1
    assert {task_id: t["upstream"] for task_id, t in nightly["tasks"].items()} == {
        "features": [],
        "candidates": ["features"],
        "training_set": ["candidates"],
        "train_xgboost": ["training_set"],
        "train_lightgbm": ["training_set"],
        "evaluate": ["train_lightgbm", "train_xgboost"],
        "promote": ["evaluate"],
        "score": ["promote"],
        "publish": ["score"],
        "expire": ["publish"],
    }
    for step, task in nightly["tasks"].items():
        assert task["type"] == "SparkSubmitOperator"
        assert task["conn_id"] == "spark_default"
        assert task["application"] == str(project_root() / "lambdarec" / "batch_task.py")
        # Keyed on the data interval, never the wall clock.
        assert task["application_args"] == [step, "--date", "{{ data_interval_end | ds }}"]
        assert task["retries"] == 2


def test_backfill_triggers_the_nightly_once_per_day(dagbag: dict) -> None:
    backfill = dagbag["dags"]["lambdarec_backfill"]
    assert backfill["timetable"] == "NullTimetable"
    assert backfill["params"] == ["end", "start"]
    tasks = backfill["tasks"]
    assert set(tasks) == {"pipeline_days", "run_nightly"}
    assert tasks["run_nightly"]["upstream"] == ["pipeline_days"]
    assert tasks["run_nightly"]["mapped"] is True
    assert tasks["run_nightly"]["trigger_dag_id"] == "lambdarec_nightly"


def test_watchdog_checks_then_restarts_or_not(dagbag: dict) -> None:
    watchdog = dagbag["dags"]["lambdarec_streaming_watchdog"]
    assert watchdog["timetable"] == "CronTriggerTimetable"
    assert watchdog["schedule"] == "*/5 * * * *"
    assert watchdog["max_active_runs"] == 1
    assert {task_id: t["upstream"] for task_id, t in watchdog["tasks"].items()} == {
        "check_stream": [],
        "decide": ["check_stream"],
        "restart_stream": ["check_stream", "decide"],
        "stream_healthy": ["decide"],
    }
    assert watchdog["tasks"]["decide"]["type"] == "_BranchPythonDecoratedOperator"


def test_promote_validates_then_moves_the_alias(dagbag: dict) -> None:
    promote = dagbag["dags"]["lambdarec_promote"]
    assert promote["timetable"] == "NullTimetable"
    assert promote["params"] == ["force", "reason", "version"]
    assert {task_id: t["upstream"] for task_id, t in promote["tasks"].items()} == {
        "validate": [],
        "move_champion": ["validate"],
    }
    assert {t["retries"] for t in promote["tasks"].values()} == {0}


def test_backfill_runs_cover_the_range_oldest_first() -> None:
    assert _lambdarec.backfill_runs("2024-02-28", "2024-03-01") == [
        {"logical_date": "2024-02-28T00:00:00+00:00", "trigger_run_id": "backfill__2024-02-28"},
        {"logical_date": "2024-02-29T00:00:00+00:00", "trigger_run_id": "backfill__2024-02-29"},
        {"logical_date": "2024-03-01T00:00:00+00:00", "trigger_run_id": "backfill__2024-03-01"},
    ]
    assert _lambdarec.backfill_runs("2024-03-01", "2024-03-01") == [
        {"logical_date": "2024-03-01T00:00:00+00:00", "trigger_run_id": "backfill__2024-03-01"}
    ]


def test_backfill_rejects_reversed_and_oversized_ranges() -> None:
    with pytest.raises(ValueError, match="before its start"):
        _lambdarec.backfill_runs("2024-03-02", "2024-03-01")
    with pytest.raises(ValueError, match="longer than 366"):
        _lambdarec.backfill_runs("2020-01-01", "2024-01-01")

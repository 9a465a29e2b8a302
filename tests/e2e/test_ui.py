"""The main job end to end, and its three UIs in a real browser.

One `lambdarec demo` run (small synthetic data, free ports, a temporary data directory) starts every
embedded service, runs `lambdarec_nightly` through Airflow's REST API (every declared step a task
that succeeded), streams new events through the API and shows the recommendations changing. Then headless Chromium (Debian's `chromium` driven by
selenium through `chromedriver`, installed by `make test`) checks what a person would look at:
- the Airflow UI lists the four DAGs and shows the demo's nightly run as successful;
- the MLflow UI shows the registered ranker with its `champion` alias;
- the API's /docs page renders its endpoints.
Screenshots land in test-artifacts/ (git-ignored). `lambdarec demo-stop` stops everything afterwards.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from feature_store.settings import Settings, project_root
from lambdarec.redis_server import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(3600)]  # the first test pays for the whole demo

ARTIFACTS = project_root() / "test-artifacts"
DAG_IDS = ("lambdarec_nightly", "lambdarec_backfill", "lambdarec_promote", "lambdarec_streaming_watchdog")
LAMBDAREC = str(Path(sys.executable).parent / "lambdarec")
PAGE_TIMEOUT_S = 60


def demo_env(data_dir: Path) -> dict[str, str]:
    """A private data directory, free ports and a small, quick batch layer."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LAMBDAREC_", "AIRFLOW"))}
    env.update(
        {
            "LAMBDAREC_DATA_DIR": str(data_dir),
            "LAMBDAREC_AIRFLOW_PORT": str(free_port()),
            "LAMBDAREC_MLFLOW_UI_PORT": str(free_port()),
            "LAMBDAREC_API_PORT": str(free_port()),
            "LAMBDAREC_SPARK_MASTER": "local[2]",
            "LAMBDAREC_SPARK_SHUFFLE_PARTITIONS": "2",
            "LAMBDAREC_RANKER_TREES": "30",
            "LAMBDAREC_ALS_MAX_ITERS": "[5]",
            "LAMBDAREC_ALS_REG_PARAMS": "[0.05]",
            "LAMBDAREC_ALS_ALPHAS": "[40.0]",  # one grid point: the demo does not tune ALS (test_batch_run does)
            # tiny data cannot show a significant gain: these tests check the loop; the gate's decision rule is unit-tested (test_promotion_gate.py)
            "LAMBDAREC_PROMOTION_MIN_USERS": "20",
            "LAMBDAREC_PROMOTION_MIN_GAIN": "-1.0",
            "LAMBDAREC_LABEL_HORIZON_DAYS": "3",
            "LAMBDAREC_AIRFLOW_PARALLELISM": "3",
            "SPARK_LOCAL_IP": "127.0.0.1",
        }
    )
    return env


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory):
    """The demo's output and settings while its services run; stopped afterwards."""
    data_dir = tmp_path_factory.mktemp("demo-data")
    env = demo_env(data_dir)
    ARTIFACTS.mkdir(exist_ok=True)
    output = ARTIFACTS / "demo-output.txt"
    try:
        # Into a file, not a pipe: the services the demo leaves running must not hold our read end open.
        with output.open("w") as sink:
            done = subprocess.run(
                [LAMBDAREC, "demo", "--events", "6000"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=3300,
                check=False,
            )
        stdout = output.read_text()
        assert done.returncode == 0, stdout[-5000:]
        settings = Settings(
            **{
                k.removeprefix("LAMBDAREC_").lower(): json.loads(v) if v.startswith("[") else v
                for k, v in env.items()
                if k.startswith("LAMBDAREC_")
            }
        )
        password_line = re.search(r"Airflow UI : \S+\s+\(user (\S+), password (\S+)\)", stdout)
        assert password_line, stdout[-2000:]
        yield {
            "stdout": stdout,
            "settings": settings,
            "env": env,
            "user": password_line[1],
            "password": password_line[2],
        }
    finally:
        subprocess.run(
            [LAMBDAREC, "demo-stop"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=300,
            check=False,
        )


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver, (
        "Chromium and chromedriver are installed by `make test` (infra/local/install-chromium.sh)"
    )
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    profile = tempfile.mkdtemp(prefix="lambdarec-chromium-")
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--window-size=1440,1000",
    ):
        options.add_argument(flag)
    session = webdriver.Chrome(service=Service(driver), options=options)
    yield session
    session.quit()
    shutil.rmtree(profile, ignore_errors=True)


def _wait_for_text(browser, texts: tuple[str, ...], screenshot: str) -> str:
    """Wait until every text shows in the rendered page; save a screenshot either way."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    ARTIFACTS.mkdir(exist_ok=True)
    try:
        WebDriverWait(browser, PAGE_TIMEOUT_S, poll_frequency=0.5).until(
            lambda b: all(t in b.find_element("tag name", "body").text for t in texts)
        )
    except TimeoutException:
        browser.save_screenshot(str(ARTIFACTS / screenshot))
        missing = [t for t in texts if t not in browser.find_element("tag name", "body").text]
        pytest.fail(f"{browser.current_url} never showed {missing}; see test-artifacts/{screenshot}")
    browser.save_screenshot(str(ARTIFACTS / screenshot))
    return browser.find_element("tag name", "body").text


def test_demo_shows_the_whole_loop(demo: dict) -> None:
    out = demo["stdout"]
    assert "quarantined" in out
    assert re.search(r"nightly run demo__\d{4}-\d{2}-\d{2}: success", out)
    assert re.search(r"champion: lambdarec-ranker v\d+", out)
    assert re.search(r"recommendations for \S+, before and after", out)
    assert re.search(r"p50 [\d.]+ ms over \d+ requests", out)


def test_the_nightly_ran_every_declared_step_through_airflow(demo: dict) -> None:
    """The demo's lambdarec_nightly run, through the scheduler and SparkSubmitOperator: one task per
    declared step (feature_store.nightly), each a success."""
    from feature_store.nightly import step_names
    from lambdarec.airflow_local import AirflowClient, airflow_url

    run_id = re.search(r"nightly run (demo__\S+):", demo["stdout"])[1]
    client = AirflowClient(airflow_url(demo["settings"]), demo["user"], demo["password"])
    assert client.task_states("lambdarec_nightly", run_id) == dict.fromkeys(step_names(), "success")


def test_airflow_ui_lists_the_dags_and_a_successful_nightly_run(demo: dict, browser) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    base = f"http://127.0.0.1:{demo['settings'].airflow.port}"
    browser.get(f"{base}/")
    WebDriverWait(browser, PAGE_TIMEOUT_S).until(ec.presence_of_element_located((By.NAME, "username")))
    browser.find_element(By.NAME, "username").send_keys(demo["user"])
    browser.find_element(By.NAME, "password").send_keys(demo["password"])
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    WebDriverWait(browser, PAGE_TIMEOUT_S).until(lambda b: "/auth/login" not in b.current_url)
    browser.get(f"{base}/dags")
    _wait_for_text(browser, DAG_IDS, "airflow-dags.png")
    run_id = re.search(r"nightly run (demo__\S+):", demo["stdout"])[1]
    browser.get(f"{base}/dags/lambdarec_nightly/runs/{run_id}")
    # The run's header shows its id, then its state ("Running", "Failed", "Success").
    page = _wait_for_text(
        browser, (f"{run_id}\nSuccess", "train_xgboost", "publish"), "airflow-nightly-run.png"
    )
    assert "Failed" not in page


def test_mlflow_ui_shows_the_ranker_with_its_champion_alias(demo: dict, browser) -> None:
    settings = demo["settings"]
    browser.get(f"http://127.0.0.1:{settings.mlflow.ui_port}/#/models/{settings.ranker.model_name}")
    # "@ champion" is how the versions table shows an alias (a tag such as champion_history does not count).
    _wait_for_text(browser, (settings.ranker.model_name, "@ champion"), "mlflow-ranker.png")


def test_api_docs_render_the_endpoints(demo: dict, browser) -> None:
    browser.get(f"http://127.0.0.1:{demo['settings'].serving.port}/docs")
    _wait_for_text(browser, ("/v1/recommendations/{user_id}", "/v1/events"), "api-docs.png")


def _lambdarec(args: list[str], env: dict[str, str], timeout_s: float = 300) -> str:
    done = subprocess.run(
        [LAMBDAREC, *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    assert done.returncode == 0, (args, done.stdout, done.stderr[-3000:])
    return done.stdout


def test_the_service_commands_run_a_dag_and_restart_airflow_and_mlflow(demo: dict) -> None:
    """The README's commands for the pieces one by one, run to their end on the demo's services (so
    last in this module): `lambdarec airflow env|trigger|stop|start`, `lambdarec mlflow-ui stop|start`."""
    import httpx

    from lambdarec.airflow_local import AirflowClient, airflow_url

    settings, env = demo["settings"], demo["env"]
    exports = _lambdarec(["airflow", "env"], env).splitlines()
    assert f"export AIRFLOW_HOME={settings.data_dir / 'airflow'}" in exports
    assert f"export LAMBDAREC_DATA_DIR={settings.data_dir}" in exports

    # The watchdog DAG on the demo's running streaming job: a manual run through the REST API.
    day = "2026-01-02"
    triggered = _lambdarec(["airflow", "trigger", "lambdarec_streaming_watchdog", "--date", day], env)
    run_id = re.search(r"^triggered lambdarec_streaming_watchdog run (\S+)$", triggered, re.M)[1]
    assert f"lambdarec_streaming_watchdog run {run_id}: success" in triggered
    client = AirflowClient(airflow_url(settings), demo["user"], demo["password"])
    assert client.task_states("lambdarec_streaming_watchdog", run_id) == {
        "check_stream": "success",
        "decide": "success",
        "stream_healthy": "success",
        "restart_stream": "skipped",
    }

    assert _lambdarec(["mlflow-ui", "stop"], env).strip() == "stopped the MLflow UI"
    mlflow_ui = f"http://127.0.0.1:{settings.mlflow.ui_port}"
    assert _lambdarec(["mlflow-ui", "start"], env).strip() == f"MLflow UI: {mlflow_ui}"
    assert httpx.get(f"{mlflow_ui}/health", timeout=5).text == "OK"

    assert _lambdarec(["airflow", "stop"], env).strip() == "stopped Airflow"
    assert _lambdarec(["airflow", "stop"], env).strip() == "Airflow was not running"
    started = _lambdarec(["airflow", "start"], env, timeout_s=600).strip()
    assert started == f"Airflow: {airflow_url(settings)}  (user {demo['user']}, password {demo['password']})"
    # the restarted Airflow (a new client: a new API server signs new tokens) still knows the nightly run
    client = AirflowClient(airflow_url(settings), demo["user"], demo["password"])
    nightly_run = re.search(r"nightly run (demo__\S+):", demo["stdout"])[1]
    assert set(client.task_states("lambdarec_nightly", nightly_run).values()) == {"success"}

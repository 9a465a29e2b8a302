"""`lambdarec serve --workers 2`: two uvicorn worker processes share the port, and both answer."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from lambdarec.redis_server import free_port
from tests.integration.test_api_resilience import seed

pytestmark = [pytest.mark.integration, pytest.mark.scale_out]

PID_LINE = re.compile(r"^lambdarec_worker_pid (\S+)$", re.MULTILINE)


def scraped_pid(base_url: str) -> int:
    """The pid /metrics reports, over a fresh connection (so the kernel may hand it to either worker)."""
    with httpx.Client(base_url=base_url) as client:
        return int(float(PID_LINE.search(client.get("/metrics").text).group(1)))


def test_two_workers_share_the_port_and_both_serve(serving_settings, redis_server, redis_client, tmp_path):
    seed(redis_server.url)
    port = free_port()
    env = {
        **os.environ,
        "LAMBDAREC_DATA_DIR": str(tmp_path),
        "LAMBDAREC_REDIS_URL": redis_server.url,
        "LAMBDAREC_MLFLOW_TRACKING_URI": serving_settings.tracking_uri,
        "LAMBDAREC_MLFLOW_ARTIFACT_ROOT": serving_settings.artifact_root,
    }
    code = "import sys; from lambdarec.cli import main; sys.argv = ['lambdarec', *sys.argv[1:]]; main()"
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            code,
            "serve",
            "--port",
            str(port),
            "--workers",
            "2",
            "--log-level",
            "warning",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240  # two processes importing MLflow on a loaded 2-core machine
        with httpx.Client(base_url=base_url) as client:
            while True:
                try:
                    if client.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert process.poll() is None, process.stdout.read()
                assert time.monotonic() < deadline, "lambdarec serve --workers 2 did not come up"
                time.sleep(0.05)
            recs = client.get("/v1/recommendations/u1", params={"k": 2}).json()
        # Concurrent fresh connections until both workers have answered (bounded: a worker that never
        # accepts fails the test).
        pids: set[int] = set()
        with ThreadPoolExecutor(8) as pool:
            for _ in range(25):
                pids |= set(pool.map(scraped_pid, [base_url] * 16))
                if len(pids) == 2:
                    break
        workers = {
            int(line)
            for line in subprocess.run(
                ["pgrep", "-P", str(process.pid)], capture_output=True, text=True, check=False
            ).stdout.split()
        }
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=60)
    assert [i["item_id"] for i in recs["items"]] == ["i1", "i2"] and recs["degraded"] is False
    assert len(pids) == 2 and pids <= workers, (pids, workers, output)
    assert process.returncode == 0, output

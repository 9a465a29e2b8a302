"""The streaming job under a steady event rate; per-process/thread CPU from probe_cpu.py.
Usage: job_cpu.py RATE SECONDS [bronze_trigger_ms]"""

import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import redis

from benchmarks.bench_freshness import _events, _status, _wait, start_speed_job
from benchmarks.common import REPO
from feature_store.event_bus import open_publisher
from feature_store.redis_keys import RedisKeys
from feature_store.settings import Settings
from lambdarec.redis_server import EmbeddedRedis

rate, secs = int(sys.argv[1]), float(sys.argv[2])
work = Path(tempfile.mkdtemp(prefix="jobcpu-"))
server = EmbeddedRedis(directory=work / "redis").start()
client = redis.Redis.from_url(server.url)
settings = Settings(data_dir=work / "data", redis_url=server.url)
keys = RedisKeys(settings.redis.key_prefix)
env = {
    **os.environ,
    "LAMBDAREC_DATA_DIR": str(settings.data_dir),
    "LAMBDAREC_REDIS_URL": server.url,
    "PYTHONPATH": str(REPO),
}
if len(sys.argv) > 3:
    env["LAMBDAREC_STREAM_BRONZE_TRIGGER_MS"] = sys.argv[3]
job = start_speed_job(env, open(work / "job.log", "ab"))
try:
    assert _wait(lambda: _status(client, keys).get("state") == "running", 300.0, 0.2)
    pub = open_publisher(settings, redis_client=redis.Redis.from_url(server.url), trim=False)
    pub.publish(_events(0, 100, int(time.time() * 1000)))
    assert _wait(lambda: int(_status(client, keys).get("bronze_last_batch_rows", 0)) > 0, 600.0)
    stop = threading.Event()

    def load():
        sent, start = 0, time.monotonic()
        while not stop.is_set():
            due = int(rate * (time.monotonic() - start)) - sent
            if due > 0:
                pub.publish(_events(100 + sent, due, int(time.time() * 1000)))
                sent += due
            time.sleep(0.005)

    th = threading.Thread(target=load, daemon=True)
    th.start()
    time.sleep(float(os.environ.get("WARM_S", "5")))
    subprocess.run([sys.executable, str(Path(__file__).with_name("probe_cpu.py")), str(job.pid), str(secs)])
    stop.set()
    th.join()
finally:
    job.terminate()
    job.wait(60)
    server.stop()

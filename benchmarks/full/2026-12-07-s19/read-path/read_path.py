"""Where the speed query's read of one micro-batch goes: the redis_stream source into foreachBatch,
timed per variant. Usage: python read_path.py VARIANT SECONDS RATE PORT
VARIANT: collect | arrow | count | simple_collect | simple_arrow"""

import json
import statistics
import sys
import tempfile
import threading
import time

import redis

from feature_store.settings import Settings
from spark_jobs.session import build_spark
from spark_jobs.streaming.redis_stream_source import register_redis_stream_source
from spark_jobs.streaming.speed_job import streaming_spark_conf

variant, seconds, rate, port = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
url = f"redis://127.0.0.1:{port}/0"
client = redis.Redis.from_url(url)
client.flushall()
stream = "exp:events"
payload = json.dumps(
    {
        "event_id": "x" * 32,
        "user_id": "u1",
        "item_id": "i1",
        "event_type": "view",
        "ts": 1,
        "context": {"a": 1},
    }
)


def produce(stop):
    n = 0
    start = time.monotonic()
    while not stop.is_set():
        due = start + n / rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        pipe = client.pipeline(transaction=False)
        for _ in range(10):
            pipe.xadd(stream, {"event": payload})
        pipe.execute()
        n += 10


settings = Settings(data_dir=tempfile.mkdtemp())
spark = build_spark(settings, streaming_spark_conf(settings))
times: list[tuple[int, float, float]] = []

if variant.startswith("simple"):
    from pyspark.sql.datasource import DataSource, SimpleDataSourceStreamReader

    from feature_store.event_bus import entry_time_ms
    from spark_jobs.streaming.redis_stream_source import SOURCE_SCHEMA

    class SimpleReader(SimpleDataSourceStreamReader):
        def __init__(self, options):
            self.url, self.stream = options["url"], options["stream"]
            self._c = None

        @property
        def c(self):
            if self._c is None:
                self._c = redis.Redis.from_url(self.url)
            return self._c

        def initialOffset(self):
            return {"id": "0-0"}

        def _rows(self, entries):
            return [
                (i.decode(), entry_time_ms(i.decode()), f[b"event"].decode(), len(f[b"event"]))
                for i, f in entries
            ]

        def read(self, start):
            entries = self.c.xrange(self.stream, "(" + start["id"], "+", count=20000)
            if not entries:
                return iter([]), start
            return iter(self._rows(entries)), {"id": entries[-1][0].decode()}

        def readBetweenOffsets(self, start, end):
            return iter(self._rows(self.c.xrange(self.stream, "(" + start["id"], end["id"])))

        def commit(self, end):
            pass

    class SimpleSource(DataSource):
        @classmethod
        def name(cls):
            return "simple_redis"

        def schema(self):
            return SOURCE_SCHEMA

        def simpleStreamReader(self, schema):
            return SimpleReader(dict(self.options))

    spark.dataSource.register(SimpleSource)
    fmt = "simple_redis"
else:
    register_redis_stream_source(spark)
    fmt = "redis_stream"


def writer(df, batch_id):
    t0 = time.monotonic()
    if variant.endswith("collect"):
        n = len([(r.entry_id, r.bus_time_ms, r.raw, r.size_bytes) for r in df.collect()])
    elif variant.endswith("arrow"):
        t = df.toArrow()
        n = len(
            list(zip(*(t.column(c).to_pylist() for c in ("entry_id", "bus_time_ms", "raw", "size_bytes"))))
        )
    else:
        n = df.count()
    times.append((n, (time.monotonic() - t0) * 1000, t0))


ck = tempfile.mkdtemp()
q = (
    spark.readStream.format(fmt)
    .option("url", url)
    .option("stream", stream)
    .load()
    .writeStream.foreachBatch(writer)
    .option("checkpointLocation", ck)
    .trigger(processingTime="250 milliseconds")
    .start()
)
stop = threading.Event()
th = threading.Thread(target=produce, args=(stop,), daemon=True)
th.start()
time.sleep(seconds)
stop.set()
progress = q.recentProgress
q.stop()
steady = [t for t in times[5:] if t[0] > 0]
ms = [t[1] for t in steady]
phases = {}
for p in progress[5:]:
    for k, v in (p.durationMs or {}).items():
        phases.setdefault(k, []).append(v)
print(
    json.dumps(
        {
            "variant": variant,
            "rate": rate,
            "batches": len(steady),
            "rows_median": statistics.median(t[0] for t in steady),
            "read_ms_median": statistics.median(ms),
            "read_ms_p90": sorted(ms)[int(0.9 * len(ms))],
            "phases_median": {k: statistics.median(v) for k, v in phases.items()},
        }
    )
)
spark.stop()

"""How long Spark's offset/commit log writes take per micro-batch, by checkpoint location and FS impl."""

import json
import shutil
import statistics
import sys
import time
from pathlib import Path

from feature_store.settings import Settings
from spark_jobs.session import build_spark

variant = sys.argv[1]
root = Path(sys.argv[2])
extra = {}
if variant == "raw":
    extra["spark.hadoop.fs.file.impl"] = "org.apache.hadoop.fs.RawLocalFileSystem"
    extra["spark.hadoop.fs.AbstractFileSystem.file.impl"] = "org.apache.hadoop.fs.local.RawLocalFs"
if variant in ("bare", "barefc"):
    from feature_store.settings import Settings as S
    from spark_jobs.session import delta_jar_paths

    extra["spark.jars"] = ",".join(
        [str(p) for p in delta_jar_paths(S().jars_dir)] + ["/work/exp/hadoop-bare-naked-local-fs-0.1.0.jar"]
    )
    extra["spark.hadoop.fs.file.impl"] = "com.globalmentor.apache.hadoop.fs.BareLocalFileSystem"
    if variant == "bare":
        extra["spark.sql.streaming.checkpointFileManagerClass"] = (
            "org.apache.spark.sql.execution.streaming.checkpointing.FileSystemBasedCheckpointFileManager"
        )
if variant == "fsraw":
    extra["spark.hadoop.fs.file.impl"] = "org.apache.hadoop.fs.RawLocalFileSystem"
    extra["spark.sql.streaming.checkpointFileManagerClass"] = (
        "org.apache.spark.sql.execution.streaming.checkpointing.FileSystemBasedCheckpointFileManager"
    )
if variant == "fsonly":
    extra["spark.sql.streaming.checkpointFileManagerClass"] = (
        "org.apache.spark.sql.execution.streaming.checkpointing.FileSystemBasedCheckpointFileManager"
    )
if variant == "nopurge":
    extra["spark.sql.streaming.minBatchesToRetain"] = "10000"
settings = Settings()
spark = build_spark(settings, extra)
shutil.rmtree(root, ignore_errors=True)
df = spark.readStream.format("rate").option("rowsPerSecond", 1000).load()
q = (
    df.writeStream.foreachBatch(lambda b, i: None)
    .option("checkpointLocation", str(root / "ck"))
    .trigger(processingTime="250 milliseconds")
    .start()
)
time.sleep(40)
progs = [p for p in q.recentProgress][-100:]
q.stop()
phases = {}
for p in progs:
    for k, v in p["durationMs"].items():
        phases.setdefault(k, []).append(v)
print(variant, root, len(progs), json.dumps({k: statistics.median(v) for k, v in phases.items()}))

#!/usr/bin/env bash
# A Spark standalone cluster on 127.0.0.1 from the PySpark installation: `start` (master + workers, prints
# the master URL for LAMBDAREC_SPARK_MASTER), `status`, `stop`. Size and port: LAMBDAREC_SPARK_CLUSTER_*
# (2 workers x 1 core x 2g on :7077 by default); work dirs and logs under <data_dir>/spark-cluster.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec .venv/bin/lambdarec spark-cluster "$@"

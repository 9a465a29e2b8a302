#!/usr/bin/env bash
# A Redis Cluster of three masters on 127.0.0.1 from Debian's redis-server (cluster mode, own client and
# cluster-bus ports, no persistence): `start` (waits for cluster_state:ok, prints a node's URL for
# LAMBDAREC_REDIS_URL; set LAMBDAREC_REDIS_CLUSTER=true too), `stop`. Nodes under <data_dir>/redis-cluster,
# ports and pids in <data_dir>/run/redis-cluster.json.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec .venv/bin/lambdarec redis-cluster "$@"

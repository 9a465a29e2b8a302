#!/usr/bin/env bash
# The local S3-compatible endpoint (moto's server, in memory, on a free 127.0.0.1 port) for Delta tables
# on s3a://: `start` creates the tables' bucket and prints `export` lines of the settings that put the
# tables there (eval "$(infra/local/s3.sh start)"), `stop`. Pid and log in <data_dir>/run/s3.*.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec .venv/bin/lambdarec s3 "$@"

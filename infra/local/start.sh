#!/usr/bin/env bash
# Start the local services `make demo` uses without loading data or running the pipeline: the private
# redis-server, the MLflow UI (:5000), Airflow standalone (:8080, admin password printed), the streaming
# job and the API (:8000). Ports and the data directory come from LAMBDAREC_* variables.
# `infra/local/stop.sh` (or `make demo-stop`) stops them again.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec .venv/bin/lambdarec demo --services-only

#!/usr/bin/env bash
# Stop the local Kafka broker `infra/local/start-kafka.sh` started (its topics stay under <data_dir>/kafka).
set -euo pipefail
cd "$(dirname "$0")/../.."
exec .venv/bin/lambdarec kafka stop

#!/usr/bin/env bash
# Stop every local service lambdarec started (the same as `make demo-stop`).
set -euo pipefail
cd "$(dirname "$0")/../.."
exec .venv/bin/lambdarec demo-stop

#!/usr/bin/env bash
# Start the local Kafka broker (one KRaft node, broker + controller, on a free loopback port) with the
# event topic LAMBDAREC_KAFKA_TOPIC; prints its bootstrap address (also in <data_dir>/run/kafka.bootstrap).
# Its JARs come from `make setup` (.cache/kafka/libs); state under <data_dir>/kafka.
# Use it with LAMBDAREC_EVENT_BUS=kafka; `infra/local/stop-kafka.sh` stops it.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec .venv/bin/lambdarec kafka start "$@"

#!/usr/bin/env bash
# Make sure a redis-server binary exists for the embedded online store.
set -euo pipefail
if command -v redis-server >/dev/null 2>&1; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
  echo "Installing redis-server from Debian's packages..."
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  # The Debian package may start a system service; lambdarec runs its own servers on free ports.
  command -v redis-server >/dev/null && exit 0
fi
cat >&2 <<'MSG'
redis-server is not installed and could not be installed automatically (needs apt-get as root).
Install Redis 7+ yourself (e.g. `sudo apt-get install redis-server` or `brew install redis`),
or point lambdarec at an existing server with LAMBDAREC_REDIS_URL=redis://host:port/0.
MSG
exit 1

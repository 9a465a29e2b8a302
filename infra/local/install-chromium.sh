#!/usr/bin/env bash
# Headless Chromium and its WebDriver for the browser e2e test (tests/e2e/test_ui.py), from Debian's packages.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
  echo "Installing chromium and chromium-driver from Debian's packages..."
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  command -v chromium >/dev/null && command -v chromedriver >/dev/null && exit 0
fi
cat >&2 <<'MSG'
The browser test needs Chromium and chromedriver, which could not be installed automatically (needs
apt-get as root). Install them yourself (Debian/Ubuntu: `sudo apt-get install chromium chromium-driver`).
MSG
exit 1

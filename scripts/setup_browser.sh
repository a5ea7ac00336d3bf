#!/usr/bin/env bash
# Installs Debian's chromium for the page tests (tests/test_publish.py drives it headless through the
# playwright client already in .venv, with executable_path: no browser download). Idempotent: does
# nothing when the browser is there. BENCHBRIDGE_CHROMIUM points the tests at another binary.
set -euo pipefail
CHROMIUM=${BENCHBRIDGE_CHROMIUM:-/usr/bin/chromium}
if [ -x "$CHROMIUM" ]; then
  echo "setup_browser: $CHROMIUM is installed"
  exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null; then
  as_root=(sudo)
else
  echo "setup_browser: $CHROMIUM is missing; install Debian's chromium as root (apt-get install chromium)" >&2
  exit 1
fi
"${as_root[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq --no-install-recommends chromium >/dev/null
echo "setup_browser: installed $("$CHROMIUM" --version 2>/dev/null)"

#!/usr/bin/env bash
# The test command: builds .venv (scripts/setup.sh) and runs the whole suite, frameworks included.
#   bash scripts/test.sh           the full tier (CI): Chromium page tests and real framework runs too
#   bash scripts/test.sh --fast    < 60 s: no Chromium, no framework run (-m "not framework and not browser")
# Arguments after --fast (or instead of it) go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
fast=0
if [ "${1:-}" = "--fast" ]; then
  fast=1
  shift
fi
bash scripts/setup.sh
if [ "$fast" = 0 ]; then
  bash scripts/setup_browser.sh  # Debian's chromium: the published page is tested in a real browser
fi
export USE_TF=0 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# Bytecode caches (gitignored __pycache__): with PYTHONDONTWRITEBYTECODE set, as on this machine, pytest rewrites
# and compiles every test module again in each worker (collection 4.3 s a process, 1.8 s with caches).
unset PYTHONDONTWRITEBYTECODE
.venv/bin/ruff check .
.venv/bin/mypy  # bridges/ and leaderboards/ ([tool.mypy] in pyproject.toml); incremental via .mypy_cache
# pytest exits 5 when it collected no test: that is a failure here too, as is any other non-zero.
if [ "$fast" = 1 ]; then
  # pytest-xdist workers, one more than cores: the tests are independent, and some wait on timers (keep-alive,
  # retry pauses) while another worker can use the core (2 cores: 57-59 s with 2 workers, 52.6 s with 3).
  .venv/bin/python -m pytest -ra -n "$(( $(nproc) + 1 ))" -m "not framework and not browser" "$@"
else
  .venv/bin/python -m pytest -ra "$@"
fi

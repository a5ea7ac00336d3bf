#!/usr/bin/env bash
# The test command: builds .venv (scripts/setup.sh) and runs the whole suite, frameworks included.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/setup_browser.sh  # Debian's chromium: the published page is tested in a real browser
export USE_TF=0 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
.venv/bin/ruff check .
.venv/bin/mypy  # bridges/ and leaderboards/ ([tool.mypy] in pyproject.toml)
# pytest exits 5 when it collected no test: that is a failure here too, as is any other non-zero.
.venv/bin/python -m pytest -ra "$@"

#!/usr/bin/env bash
# The main job: set up .venv, then run all four frameworks on the bundled datasets with the embedded
# SmolLM2-135M-Instruct model and publish the board to leaderboards/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export USE_TF=0 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec .venv/bin/benchbridge run configs/demo.yaml "$@"

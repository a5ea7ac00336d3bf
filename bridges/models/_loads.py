"""A log of the model loads benchbridge's own processes make, so a run can show (and a test assert)
that each local model was loaded once.

`benchbridge run` sets `$BENCHBRIDGE_MODEL_LOADS` to `<run dir>/model_loads.jsonl`; every process it
starts inherits it. Each time a backend loads weights (`hf`) or builds a model object (`python`), it
appends one JSON line: the load's `ref` (what was loaded: an `hf` folder, a `python` target), the
spec's `name`, `kind`, `pid` and `seconds`. Lines are short single `write`s to a file opened for
appending, so lines from concurrent processes do not interleave. Loads a framework makes natively
(OpenCompass's or lm-eval's own `hf` models) are not benchbridge's and are not logged.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path

ENV_LOADS = "BENCHBRIDGE_MODEL_LOADS"
LOADS_FILE = "model_loads.jsonl"


def note_load(kind: str, ref: str, name: str, started: float) -> None:
    """Appends one load (begun at `time.monotonic()` value `started`) to the run's log, if a run set one."""
    path = os.environ.get(ENV_LOADS)
    if not path:
        return
    line = {"kind": kind, "ref": ref, "name": name, "pid": os.getpid(), "seconds": round(time.monotonic() - started, 2)}
    data = (json.dumps(line, ensure_ascii=False) + "\n").encode()
    Path(path).parent.mkdir(parents=True, exist_ok=True)  # the run folder, made by the first load if none yet
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def read_loads(path: Path) -> list[dict[str, object]]:
    """The loads logged in `path` (a run's `model_loads.jsonl`); none when the file is absent."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def loads_by_ref(path: Path) -> dict[str, int]:
    """How many times each model (`kind:ref`) was loaded, from a run's load log."""
    return dict(Counter(f"{line['kind']}:{line['ref']}" for line in read_loads(path)))

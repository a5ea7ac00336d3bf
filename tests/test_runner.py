"""`benchbridge run` end to end through the runner: a run killed half way loses nothing stored before it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bridges import load_config
from bridges._runner import run
from leaderboards import ResultsStore, load
from tests.conftest import DATASETS, ROOT

CONFIG = f"""
name: killed
work_dir: runs
models:
  - name: keyed
    kind: python
    target: bridges.testing:AnswerKeyModel
    args: {{datasets: ["{DATASETS / "qa_capitals"}"], wrong_ids: [cap-3]}}
datasets:
  - path: {DATASETS / "qa_capitals"}
frameworks:
  lm_eval: {{}}
"""


@pytest.mark.framework
def test_killed_run_keeps_earlier_results_and_the_board_builds(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(CONFIG, encoding="utf-8")
    config = load_config(path)
    first = run(config)
    assert first.ok
    store = ResultsStore(config.results_db)
    assert len(store.runs()) == 1

    # A second run, killed (SIGKILL: no cleanup) once lm-eval is under way.
    env = {**os.environ, "BENCHBRIDGE_CACHE": str(tmp_path / "no-cache.sqlite")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bridges.cli", "run", str(path), "--no-publish", "--no-cache"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        started = [d for d in (tmp_path / "runs").iterdir() if d.is_dir() and d.name != first.run_id]
        if started and (started[0] / "lm_eval").exists():
            break
        assert proc.poll() is None, "the run ended before it could be killed"
        time.sleep(0.2)
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    assert store.check() == []
    assert [r["run_id"] for r in store.runs()] == [first.run_id]
    board = load(config.results_db)
    assert board.loc["keyed", "lm_eval/qa_capitals/exact_match,strip"] == pytest.approx(87.5)

    # The next run completes and adds rows; the first run's history stays.
    second = run(config)
    assert second.ok
    assert [r["run_id"] for r in store.runs()] == [first.run_id, second.run_id]

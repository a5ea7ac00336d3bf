"""`benchbridge run` end to end through the runner: a run killed half way loses nothing stored before it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bridges import load_config, run
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


PREP_CONFIG = f"""
name: prep
models:
  - name: keyed
    kind: python
    target: bridges.testing:AnswerKeyModel
    args: {{datasets: ["{DATASETS / "qa_capitals"}"]}}
datasets:
  - path: {DATASETS / "qa_capitals"}
frameworks:
  lm_eval: {{}}
"""


def test_prepare_never_deletes_a_folder_it_did_not_write(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bridges.cli import main

    config = tmp_path / "c.yaml"
    config.write_text(PREP_CONFIG, encoding="utf-8")
    out = tmp_path / "out"
    (out / "lm_eval").mkdir(parents=True)
    (out / "lm_eval" / "my-notes.txt").write_text("a week of work", encoding="utf-8")

    assert main(["prepare", str(config), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--out: {out} is not empty and was not written by `benchbridge prepare`" in err
    assert (out / "lm_eval" / "my-notes.txt").read_text(encoding="utf-8") == "a week of work"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml", "out"]  # no temp folder left


def test_prepare_replaces_only_the_folders_its_marker_lists(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bridges.cli import main

    config = tmp_path / "c.yaml"
    config.write_text(PREP_CONFIG, encoding="utf-8")
    out = tmp_path / "out"
    assert main(["prepare", str(config), "--out", str(out)]) == 0
    marker = json.loads((out / ".benchbridge-prepared").read_text(encoding="utf-8"))
    assert marker["frameworks"] == ["lm_eval"]
    (out / "lm_eval" / "stale.txt").write_text("from an older prepare", encoding="utf-8")
    (out / "README-mine.txt").write_text("the user's", encoding="utf-8")

    # Again: lm_eval (ours) is rewritten whole; the user's file beside it stays.
    assert main(["prepare", str(config), "--out", str(out)]) == 0
    assert not (out / "lm_eval" / "stale.txt").exists()
    assert (out / "lm_eval" / "jobs" / "keyed.json").is_file()
    assert (out / "README-mine.txt").read_text(encoding="utf-8") == "the user's"

    # A framework folder the marker does not list is the user's: refused, nothing changed.
    config.write_text(PREP_CONFIG + "  openai_evals: {}\n", encoding="utf-8")
    (out / "openai_evals").mkdir()
    (out / "openai_evals" / "mine.yaml").write_text("x: 1\n", encoding="utf-8")
    before = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    capsys.readouterr()
    assert main(["prepare", str(config), "--out", str(out)]) == 2
    assert f"--out: {out / 'openai_evals'} exists and was not written by `benchbridge prepare`" in capsys.readouterr().err
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml", "out"]

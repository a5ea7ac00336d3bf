"""Parallel units: frameworks run up to `max_parallel` at once and give the records they give one after
another; a `python` model asked by every framework that takes one is loaded once per run."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from bridges import load_config, run
from bridges._parallel import run_units, unit_threads
from bridges.models._loads import LOADS_FILE, loads_by_ref
from tests.conftest import DATASETS


def test_units_run_at_most_max_parallel_at_once_and_keep_their_order() -> None:
    running, most = 0, 0
    lock = threading.Lock()

    def unit(n: int) -> int:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.05 * (5 - n))  # later units end first
        with lock:
            running -= 1
        return n * 10

    assert run_units(list(range(5)), unit, 2) == [0, 10, 20, 30, 40]
    assert most == 2
    most = 0
    assert run_units(list(range(5)), unit, 1) == [0, 10, 20, 30, 40]
    assert most == 1


def test_torch_threads_times_units_fit_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("bridges._parallel.cores", lambda: 2)
    assert unit_threads(2)["OMP_NUM_THREADS"] == "1"
    assert unit_threads(1)["OMP_NUM_THREADS"] == "2"
    assert unit_threads(8)["OMP_NUM_THREADS"] == "1"
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's choice is kept
    assert unit_threads(2) == {}


def config_text(name: str, wrong: str) -> str:
    ds = DATASETS / "qa_capitals"
    return f"""
name: {name}
work_dir: runs
models:
  - name: keyed
    kind: python
    target: bridges.testing:AnswerKeyModel
    args: {{datasets: ["{ds}"], wrong_ids: [cap-3, {wrong}]}}
datasets:
  - path: {ds}
frameworks:
  opencompass: {{}}
  lm_eval: {{}}
  openai_evals: {{datasets: {{qa_capitals: [match]}}}}
"""


@pytest.mark.framework
def test_parallel_units_give_the_sequential_records_and_load_the_model_once(tmp_path: Path) -> None:
    outcomes = {}
    for parallel in (1, 3):
        folder = tmp_path / f"p{parallel}"
        folder.mkdir()
        path = folder / "run.yaml"
        # A fresh identity per run (an id no sample has): asked, so loaded, not answered from the cache.
        path.write_text(config_text(f"p{parallel}", f"x-{parallel}-{tmp_path.name}"), encoding="utf-8")
        outcome = run(load_config(path), max_parallel=parallel)
        assert outcome.ok, [f.error for f in outcome.frameworks]
        assert [f.framework for f in outcome.frameworks] == ["opencompass", "lm_eval", "openai_evals"]
        outcomes[parallel] = outcome
        loads = loads_by_ref(outcome.run_dir / LOADS_FILE)
        # Three frameworks, each with its own processes, one load: benchbridge's, served to all of them.
        assert loads == {"python:bridges.testing:AnswerKeyModel": 1}, loads

    def values(parallel: int) -> dict[tuple[str, str, str, str], float | None]:
        return {
            (r.framework, r.benchmark, r.subset, r.metric): r.value
            for f in outcomes[parallel].frameworks
            for r in f.records
            if not r.metric.endswith("_bootstrap_std")  # evals resamples with an unseeded random: differs per run
        }

    assert values(3) == values(1)
    # cap-3 is answered wrong on purpose: 7 of 8 capitals, in every framework.
    assert values(1)[("openai_evals", "qa_capitals", "", "match_accuracy")] == pytest.approx(7 / 8)


def test_progress_is_a_row_per_framework_on_a_terminal_and_plain_lines_elsewhere() -> None:
    import io

    from rich.console import Console

    from bridges._progress import RunProgress

    messages = ["[opencompass] starting", "[lm_eval] starting", "[lm_eval] ok in 1.0s, 3 records"]
    messages += ["[opencompass] failed in 2.0s, 4 records"]
    for terminal in (False, True):
        out = io.StringIO()
        console = Console(file=out, force_terminal=terminal, width=120, color_system=None)
        with RunProgress(console) as progress:
            for m in messages:
                progress(m)
        text = out.getvalue()
        assert all(m in text for m in messages)  # every message is logged either way
        rows = "- lm_eval: ok in 1.0s, 3 records" in text and "- opencompass: failed in 2.0s, 4 records" in text
        assert rows == terminal

"""Per-sample rows in the results store: same transaction as the run's records, append-only, old stores
open, secrets masked, and each fixture cell's value is the mean of its samples' scores."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bridges import Sample
from leaderboards.store import ResultsStore
from leaderboards.testing import sample_records, sample_runs, sample_samples, sample_store
from tests.conftest import ROOT

SECRET = "sk-bb-test-5e3c7a1f9d2b4e6a8c0f"


def test_samples_round_trip_with_their_run(tmp_path: Path) -> None:
    store = sample_store(tmp_path / "r.sqlite")
    expected = sample_samples(sample_records())
    assert [s.model_dump() for s in store.samples()] == [s.model_dump() for s in expected]
    assert store.check() == []
    cell = store.samples(model="smollm2-135m", framework="lm_eval", benchmark="qa_capitals")
    assert [s.sample_id for s in cell] == [f"cap-{i}" for i in range(1, 9)]
    assert [s.scores["exact_match"] for s in cell] == [0, 0, 1, 1, 1, 1, 1, 1]
    assert cell[0].prompt is not None and cell[0].prompt.endswith("Question: What is the capital of France?\nAnswer:")
    light = [s for s in store.sample_scores() if s.framework == "opencompass" and s.benchmark == "ceval_mini"]
    assert {s.group for s in light} == {"computer_network", "high_school_chemistry"}
    manifest = next(m for m in store.runs() if m["framework"] == "lm_eval")
    assert manifest["n_sample_rows"] == sum(1 for s in expected if s.run_id == manifest["run_id"] and s.framework == "lm_eval")


def test_each_fixture_cell_is_the_mean_of_its_samples() -> None:
    samples = sample_samples(sample_records())
    checked = 0
    for record in sample_records():
        if not record.primary:
            continue
        mine = [
            s.scores[record.metric]
            for s in samples
            if (s.run_id, s.model, s.framework, s.benchmark, s.subset)
            == (record.run_id, record.model, record.framework, record.benchmark, record.subset)
        ]
        if not mine:
            continue
        mean = sum(v or 0.0 for v in mine) / len(mine) * record.scale
        # AlpacaEval's fixture win rates are written to 2 decimals (66.67 for 4 of 6)
        assert mean == pytest.approx(record.value, abs=0.005 if record.framework == "alpaca_eval" else 1e-12)
        assert len(mine) == record.n_samples
        checked += 1
    assert checked == 25


def test_samples_of_another_run_write_nothing(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "r.sqlite")
    manifest, records = sample_runs()[0]
    stranger = sample_samples(sample_runs()[1][1])[0]
    with pytest.raises(ValueError, match="stored under run"):
        store.add_run(manifest, records, samples=[stranger])
    assert store.records() == [] and store.samples() == []


def test_an_old_store_without_the_samples_table_opens_and_takes_samples(tmp_path: Path) -> None:
    db = tmp_path / "old.sqlite"
    manifest, records = sample_runs()[0]
    ResultsStore(db).add_run(manifest, records)
    with sqlite3.connect(db) as conn:  # as version 1 wrote it
        conn.execute("DROP TABLE samples")
        conn.execute("PRAGMA user_version=1")
    store = ResultsStore(db)
    assert store.samples() == [] and len(store.records()) == len(records)
    manifest2, records2 = sample_runs()[1]
    store.add_run(manifest2, records2, samples=sample_samples(records2))
    assert len(store.samples()) == len(sample_samples(records2)) > 0
    assert store.check() == []


def test_a_secret_in_a_sample_is_masked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENCHBRIDGE_JUDGE_KEY", SECRET)
    manifest, records = sample_runs()[0]
    manifest = {**manifest, "models": [*manifest["models"], {"api_key_env": "BENCHBRIDGE_JUDGE_KEY"}]}
    leaky = sample_samples(records)[0].model_copy(update={"output": f"my key is {SECRET}"})
    store = ResultsStore(tmp_path / "r.sqlite")
    store.add_run(manifest, records, samples=[leaky])
    assert SECRET not in (store.samples()[0].output or "")
    for path in tmp_path.iterdir():
        assert SECRET.encode() not in path.read_bytes(), path


KILLED = """
    import sys
    from leaderboards.store import ResultsStore
    from leaderboards.testing import sample_runs, sample_samples
    store = ResultsStore(sys.argv[1])
    for manifest, records in sample_runs()[:3]:
        store.add_run(manifest, records, samples=sample_samples(records))
    print("committed", flush=True)
    manifest, records = sample_runs()[3]
    template = sample_samples(sample_runs()[0][1])[0]
    big = "x" * 2000
    samples = [
        template.model_copy(update={"run_id": manifest["run_id"], "framework": manifest["framework"],
                                    "sample_id": str(i), "output": big})
        for i in range(40000)
    ]
    store.add_run(manifest, records, samples=samples)
    print("finished", flush=True)
"""


def test_a_run_killed_while_writing_samples_leaves_no_part_of_it(tmp_path: Path) -> None:
    db, wal = tmp_path / "r.sqlite", tmp_path / "r.sqlite-wal"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    code = [sys.executable, "-c", textwrap.dedent(KILLED), str(db)]
    proc = subprocess.Popen(code, env=env, cwd=tmp_path, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "committed"
    deadline = time.monotonic() + 60
    while not wal.exists() or wal.stat().st_size < 4_000_000:
        assert proc.poll() is None, "the writer ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    store = ResultsStore(db)
    assert store.check() == []
    assert len(store.runs()) == 3
    fourth = sample_runs()[3][0]
    assert store.samples(run_id=fourth["run_id"], framework=fourth["framework"]) == []
    assert len(store.samples()) == sum(len(sample_samples(r)) for _, r in sample_runs()[:3])


def test_sample_type_fits_messages_and_judge() -> None:
    s = Sample(
        run_id="r",
        model="m",
        framework="openai_evals",
        benchmark="qa",
        sample_id="cap-1",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}],
        output="Paris",
        scores={"accuracy": 1.0},
        judge={"model": "j", "verdict": "Y", "reasoning": "correct"},
    )
    assert s.input_text == "system: Be brief.\nuser: Capital of France?"
    assert s.judge is not None and s.judge.verdict == "Y"

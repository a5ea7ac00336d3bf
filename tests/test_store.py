"""The results store: append-only history, latest success per cell, concurrent writers, kills, secrets."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bridges import BenchbridgeError
from bridges.records import Record
from leaderboards.board import open_board
from leaderboards.store import ResultsStore, cell_key, latest_per_cell
from leaderboards.testing import sample_records, sample_runs, sample_store
from tests.conftest import ROOT

SECRET = "sk-bb-test-5e3c7a1f9d2b4e6a8c0f"


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def test_round_trip_history_and_runs(tmp_path: Path) -> None:
    store = sample_store(tmp_path / "r.sqlite")
    stored = store.records()
    assert [r.model_dump() for r in stored] == [r.model_dump() for r in sample_records()]
    runs = store.runs()
    assert len(runs) == len(sample_runs()) == 7
    assert all(m["n_records"] > 0 and m["git_commit"] and m["packages"]["torch"] for m in runs)
    assert store.check() == []

    lm = store.history(framework="lm_eval", model="tiny-random", benchmark="qa_zh")
    assert [(r.status, r.run_id) for r in lm] == [
        ("failed", "20261120-090000-a1b2c3"),
        ("ok", "20261121-100000-d4e5f6"),
    ]
    assert {r.framework for r in store.history(status="failed")} == {
        "opencompass",
        "lm_eval",
        "openai_evals",
        "alpaca_eval",
    }
    assert [m["framework"] for m in store.runs(run_id="20261121-100000-d4e5f6")] == ["lm_eval", "opencompass"]
    assert store.records(config_name="another-config") == []
    assert len(store.records(config_name="sample")) == len(stored)


def test_latest_successful_record_per_cell_wins(tmp_path: Path) -> None:
    latest = {cell_key(r): r for r in sample_store(tmp_path / "r.sqlite").latest()}
    assert latest == latest_per_cell(sample_records())

    def pick(model: str, framework: str, benchmark: str, metric: str, judge: str | None = None) -> Record:
        return latest[(model, framework, benchmark, "", metric, judge)]

    # a rerun replaces an older success
    assert pick("smollm2-135m", "opencompass", "mcq_science_en", "accuracy").value == 62.5
    # a failure fixed by a later rerun
    fixed = pick("tiny-random", "lm_eval", "qa_zh", "exact_match")
    assert (fixed.status, fixed.value) == ("ok", 0.0)
    # a later failure does not hide the last success
    kept = pick("smollm2-135m", "alpaca_eval", "open_instructions", "win_rate", "smollm2-judge")
    assert (kept.status, kept.value, kept.run_id) == ("ok", 50.0, "20261120-090000-a1b2c3")
    # a cell that only ever failed shows its latest failure
    assert pick("tiny-random", "openai_evals", "*", "accuracy").status == "failed"


def test_equal_times_later_stored_wins() -> None:
    first, second = sample_records()[0], sample_records()[0].model_copy(update={"value": 99.0})
    assert latest_per_cell([first, second])[cell_key(first)].value == 99.0


def test_bad_manifest_or_foreign_records_write_nothing(tmp_path: Path) -> None:
    store = sample_store(tmp_path / "r.sqlite")
    manifest, records = sample_runs()[0]
    before = len(store.runs())
    incomplete = {k: v for k, v in manifest.items() if k != "git_commit"}
    with pytest.raises(ValueError, match="git_commit"):
        store.add_run(incomplete, records)
    with pytest.raises(ValueError, match="stored under run"):
        store.add_run(sample_runs()[1][0], records)
    assert len(store.runs()) == before
    assert len(store.records()) == len(sample_records())


def test_missing_database_is_one_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "results.sqlite"
    with pytest.raises(BenchbridgeError, match="no results database here"):
        open_board(missing)
    assert not missing.parent.exists()  # reading created nothing
    assert ResultsStore(missing).records() == []


def test_secrets_never_reach_the_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENCHBRIDGE_JUDGE_KEY", SECRET)  # a spec's api_key_env, not a *KEY*-looking name only
    manifest, records = sample_runs()[0]
    leaked = f"HTTP 401 for POST /v1/chat/completions (Authorization: Bearer {SECRET})\nkey={SECRET}"
    records = [*records, records[0].model_copy(update={"status": "failed", "value": None, "error": leaked})]
    manifest = {**manifest, "error": leaked, "models": [*manifest["models"], {"api_key_env": "BENCHBRIDGE_JUDGE_KEY"}]}
    store = ResultsStore(tmp_path / "r.sqlite")
    store.add_run(manifest, records)
    assert "***" in store.runs()[0]["error"] and SECRET not in store.runs()[0]["error"]
    assert any(r.error and "Bearer ***" in r.error for r in store.records())
    for path in tmp_path.iterdir():  # the database, its WAL and shared memory, byte for byte
        assert SECRET.encode() not in path.read_bytes(), path


WRITER = """
    import sys, time
    from pathlib import Path
    from leaderboards.store import ResultsStore
    from leaderboards.testing import manifest_for, sample_records
    db, tag, n, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
    template = sample_records()[:20]
    store = ResultsStore(db)
    while not go.exists():
        time.sleep(0.005)
    for i in range(n):
        run_id = f"{tag}-{i:03d}"
        records = [r.model_copy(update={"run_id": run_id, "framework": "lm_eval"}) for r in template]
        store.add_run(manifest_for(run_id, "lm_eval", records), records)
"""


CREATOR = """
    import sys, time
    from pathlib import Path
    from leaderboards.store import ResultsStore
    from leaderboards.testing import manifest_for, sample_records
    folder, tag, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    records = [r.model_copy(update={"run_id": tag, "framework": "lm_eval"}) for r in sample_records()[:2]]
    for i in range(n):
        while not (folder / f"go-{i}").exists():
            time.sleep(0.0005)
        ResultsStore(folder / f"r-{i}.sqlite").add_run(manifest_for(tag, "lm_eval", records), records)
"""


def test_processes_creating_one_store_at_once(tmp_path: Path) -> None:
    """The first users of a new file race to switch it to WAL, and SQLite answers that race with "database
    is locked" without waiting (it failed 4 of 160 openings before connect_wal retried it)."""
    files, tags = 15, [f"p{k}" for k in range(4)]
    procs = [subprocess.Popen([*_python(CREATOR), str(tmp_path), t, str(files)], env=_env()) for t in tags]
    time.sleep(1.0)  # all imported and waiting
    for i in range(files):
        (tmp_path / f"go-{i}").touch()
        time.sleep(0.05)
    assert [p.wait(timeout=120) for p in procs] == [0] * len(tags)
    for i in range(files):
        assert sorted(m["run_id"] for m in ResultsStore(tmp_path / f"r-{i}.sqlite").runs()) == tags


def test_two_processes_writing_at_once(tmp_path: Path) -> None:
    db, go, runs_each = tmp_path / "r.sqlite", tmp_path / "go", 40
    procs = [
        subprocess.Popen([*_python(WRITER), str(db), tag, str(runs_each), str(go)], env=_env(), cwd=tmp_path)
        for tag in ("writer-a", "writer-b")
    ]
    time.sleep(1.5)  # both imported and waiting on the same start signal
    go.touch()
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    store = ResultsStore(db)
    runs = store.runs()
    assert len(runs) == 2 * runs_each
    assert sorted(m["run_id"] for m in runs) == sorted(
        f"{t}-{i:03d}" for t in ("writer-a", "writer-b") for i in range(40)
    )
    order = [m["run_id"][:8] for m in runs]
    assert any(a != b for a, b in zip(order, order[1:], strict=False)), "the writers did not overlap"
    assert len(store.records()) == 2 * runs_each * 20
    assert store.check() == []


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


KILLED = """
    import sys
    from leaderboards.store import ResultsStore
    from leaderboards.testing import manifest_for, sample_runs, sample_records
    store = ResultsStore(sys.argv[1])
    for manifest, records in sample_runs()[:3]:
        store.add_run(manifest, records)
    print("committed", flush=True)
    big = "x" * 1500
    template = sample_records()[0]
    records = [template.model_copy(update={"run_id": "doomed", "extra": {"log": big, "i": i}}) for i in range(30000)]
    store.add_run(manifest_for("doomed", template.framework, records), records)
    print("finished", flush=True)
"""


def test_run_killed_mid_write_leaves_earlier_runs_and_a_board(tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite"
    wal = tmp_path / "r.sqlite-wal"
    proc = subprocess.Popen([*_python(KILLED), str(db)], env=_env(), cwd=tmp_path, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "committed"
    deadline = time.monotonic() + 60
    # The doomed run's transaction spills pages into the WAL as it writes (the WAL of the committed
    # runs was checkpointed and removed when their connections closed): kill it then, mid-transaction.
    while _size(wal) < 4_000_000:
        assert proc.poll() is None, "the writer ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    assert "finished" not in proc.stdout.read()

    store = ResultsStore(db)
    assert store.check() == []
    assert [m["run_id"] for m in store.runs()] == [m["run_id"] for m, _ in sample_runs()[:3]]
    assert not store.history(run_id="doomed")
    board = open_board(db)
    assert board.cell("smollm2-135m", "opencompass/mcq_science_en/accuracy").text == "50.00"
    # and the store takes writes again
    manifest, records = sample_runs()[3]
    store.add_run(manifest, records)
    assert len(store.runs()) == 4
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda p: p.write_text("name,score\nx,1\n" * 50, encoding="utf-8"), "not an SQLite results database"),
        (lambda p: _foreign_sqlite(p), "an SQLite database of something else (tables inventory)"),
    ],
    ids=["text-file", "foreign-sqlite"],
)
def test_a_file_that_is_not_a_store_is_one_line_and_left_byte_for_byte(
    tmp_path: Path, make: Callable[[Path], object], expected: str
) -> None:
    path = tmp_path / "results.sqlite"
    make(path)
    before = path.read_bytes()
    for attempt in (lambda: ResultsStore(path).open(), lambda: ResultsStore(path).records()):
        with pytest.raises(BenchbridgeError) as err:
            attempt()
        assert str(err.value).startswith(f"{path}: {expected}") and "\n" not in str(err.value)
    # Opening it read-write would switch a stranger's SQLite file to WAL: it must stay untouched.
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.sqlite"]


def _foreign_sqlite(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE inventory (item TEXT)")
        conn.execute("INSERT INTO inventory VALUES ('lamp')")
    conn.close()


def test_a_store_of_ours_passes_the_check_and_a_new_one_gets_its_schema_on_open(tmp_path: Path) -> None:
    assert len(ResultsStore(sample_store(tmp_path / "r.sqlite").path).records()) == len(sample_records())
    fresh = ResultsStore(tmp_path / "sub" / "new.sqlite").open()
    with sqlite3.connect(fresh.path) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    conn.close()
    assert {"runs", "records"} <= tables

"""Published files that are safe to open and to share (issue 11): no spreadsheet formula from a
name, no machine path, and no temporary folder left by a publish that was killed."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from bridges.records import Record
from leaderboards.board import open_board
from leaderboards.publish import STALE_SECONDS, neutralise, publish
from leaderboards.store import ResultsStore
from leaderboards.testing import manifest_for, sample_runs, sample_store
from tests.conftest import ROOT

FORMULAS = ['=HYPERLINK("http://evil.example","x")', "+1+cmd|' /C calc'!A0", "-2+3", "@SUM(1,2)", "\tname", "\rname"]


def _formula_store(path: Path) -> ResultsStore:
    """Names as an import or any other writer may have put them in a store: each starts a formula."""
    _, records = sample_runs()[0]  # OpenCompass, run a
    base = records[0]
    run_id = "20261123-080000-formula"
    hostile = [
        base.model_copy(update={"run_id": run_id, "model": name, "time": "2026-11-23T08:00:00+00:00"})
        for name in FORMULAS
    ]
    hostile.append(
        base.model_copy(
            update={
                "run_id": run_id,
                "model": "negative",
                "benchmark": "=bench()",
                "value": -1.5,
                "time": hostile[0].time,
            }
        )
    )
    hostile.append(
        base.model_copy(
            update={
                "run_id": run_id,
                "model": "@failing",
                "status": "failed",
                "value": None,
                "error": "=cmd|' /C calc'!A0 went wrong",
                "time": hostile[0].time,
            }
        )
    )
    store = ResultsStore(path)
    store.add_run(manifest_for(run_id, "opencompass", hostile), hostile)
    return store


def _csv(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8", newline="") as f:  # newline="": a CR inside a cell stays a CR
        return list(csv.reader(f))


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def test_neutralise() -> None:
    assert [neutralise(f) for f in FORMULAS] == ["'" + f for f in FORMULAS]
    assert [neutralise(t) for t in ("-1.50", "+2", "-0.5e3", "12.00", "smollm2", "—")] == [
        "-1.50",
        "+2",
        "-0.5e3",
        "12.00",
        "smollm2",
        "—",
    ]
    assert neutralise("-inf") == "'-inf" and neutralise("-1.50 (1 invalid)") == "'-1.50 (1 invalid)"


def test_no_csv_or_markdown_cell_starts_a_formula(tmp_path: Path) -> None:
    _formula_store(tmp_path / "results.sqlite")
    out = publish(open_board(tmp_path / "results.sqlite"), tmp_path / "board").out
    for name in ("leaderboard.csv", "provenance.csv"):
        rows = _csv(out / name)
        cells = [cell for row in rows for cell in row]
        risky = [c for c in cells if c.startswith(("=", "+", "-", "@", "\t", "\r")) and not _is_number(c)]
        assert risky == [], name
        for formula in FORMULAS:
            assert "'" + formula in cells, (name, formula)
    board = _csv(out / "leaderboard.csv")
    header = board[0]
    assert "'=bench()" not in header  # the benchmark is inside the column id, which starts with the framework
    negative = next(row for row in board if row[1] == "negative")
    assert "-1.50" in negative  # a number stays a number
    for name in ("leaderboard.md", "README_OPENCOMPASS.md"):
        lines = [line for line in (out / name).read_text(encoding="utf-8").splitlines() if line.startswith("| ")]
        cells = [cell.strip() for line in lines for cell in line.strip("|").split(" | ")]
        risky = [c for c in cells if c.startswith(("=", "+", "-", "@", "\t", "\r")) and not _is_number(c)]
        assert lines and risky == [], name
    # xlsx: text cells are strings, never formulas (as before)
    from openpyxl import load_workbook

    sheet = load_workbook(out / "leaderboard.xlsx")["leaderboard"]
    models = {row[1].value: row[1] for row in sheet.iter_rows(min_row=2)}
    assert models[FORMULAS[0]].data_type == "s"


# ---- temporary folders -----------------------------------------------------------------------

KILLED_PUBLISH = """
import sys, time
from pathlib import Path
from leaderboards import publish as module
from leaderboards.board import open_board

def hang(board, path, clean):
    Path(sys.argv[3]).write_text("writing")  # every text file is written by now; the xlsx never is
    time.sleep(600)

module.leaderboard_xlsx = hang
module.publish(open_board(sys.argv[1]), sys.argv[2])
"""


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_a_killed_publish_leaves_nothing_after_the_next(tmp_path: Path) -> None:
    db = tmp_path / "results.sqlite"
    sample_store(db)
    site = tmp_path / "site"
    site.mkdir()
    flag = tmp_path / "writing"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", KILLED_PUBLISH, str(db), str(site / "board"), str(flag)], env=env)
    try:
        deadline = time.monotonic() + 120
        while not flag.exists():
            assert proc.poll() is None, "the publish ended before it was killed"
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    left = _hidden(site)
    assert len(left) == 1 and left[0].startswith(".board.tmp-"), left  # what the kill left
    assert (site / left[0] / "leaderboard.csv").is_file()

    # Two more: from an older benchbridge (no process id in the name), one old and one recent.
    old, recent = site / ".board.k2j4x9_a", site / ".board.old-3f9a1c0d"
    for folder in (old, recent):
        folder.mkdir()
        (folder / "leaderboard.csv").write_text("rank\n")
    hour_ago = time.time() - STALE_SECONDS - 60
    os.utime(old, (hour_ago, hour_ago))
    # And a folder that only looks like one: it holds something publish never writes. Never removed.
    mine = site / ".board.notes123"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    os.utime(mine, (hour_ago, hour_ago))

    publish(open_board(db), site / "board")
    # recent: may be another publish still running (an older version names no process): kept
    assert _hidden(site) == [".board.notes123", ".board.old-3f9a1c0d"]
    assert (site / "board" / "index.html").is_file()


# ---- machine paths ---------------------------------------------------------------------------


def test_published_files_name_no_machine_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home" / "alice"
    monkeypatch.setenv("HOME", str(home))
    store_dir = tmp_path / "work" / "runs"
    run_id = "20261126-090000-paths1"
    run_dir = store_dir / run_id
    model_dir = home / ".cache" / "benchbridge" / "models" / "smollm2-135m-instruct"
    record = Record(
        run_id=run_id,
        model="smollm2",
        framework="lm_eval",
        framework_version="0.4.13",
        benchmark="qa_capitals",
        metric="exact_match",
        value=0.5,
        primary=True,
        n_samples=8,
        details_path=str(run_dir / "lm_eval" / "samples_qa_capitals.jsonl"),
    )
    failed = record.model_copy(
        update={
            "model": "broken",
            "status": "failed",
            "value": None,
            "details_path": None,
            "error": f"lm_eval failed: see {run_dir / 'lm_eval' / 'lm_eval.log'}; model {model_dir}",
        }
    )
    manifest = manifest_for(run_id, "lm_eval", [record, failed])
    manifest["config_path"] = str(tmp_path / "work" / "configs" / "demo.yaml")
    manifest["models"] = [
        {"name": "smollm2", "kind": "hf", "path": str(model_dir)},
        {"name": "broken", "kind": "hf", "path": str(model_dir)},
    ]
    ResultsStore(store_dir / "results.sqlite").add_run(manifest, [record, failed])
    out = publish(open_board(store_dir / "results.sqlite"), tmp_path / "share" / "board").out

    texts: dict[str, str] = {}
    for path in out.rglob("*"):
        if path.suffix == ".xlsx":
            with zipfile.ZipFile(path) as book:
                for name in book.namelist():
                    texts[f"{path.name}:{name}"] = book.read(name).decode("utf-8", "replace")
        elif path.is_file():
            texts[str(path.relative_to(out))] = path.read_text(encoding="utf-8")
    assert len(texts) > 10
    leaks = {name for name, text in texts.items() if str(tmp_path) in text or str(home) in text}
    assert leaks == set()
    everything = "\n".join(texts.values())
    assert f"{run_id}/lm_eval/samples_qa_capitals.jsonl" in texts["provenance.csv"]  # relative to the store
    assert "~/.cache/benchbridge/models/smollm2-135m-instruct" in everything  # the home folder as ~
    assert f"see {run_id}/lm_eval/lm_eval.log" in texts["leaderboard.md"]

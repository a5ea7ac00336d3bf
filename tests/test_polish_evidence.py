"""The samples a board cell opens into are those behind the number it shows, from native reports the real
frameworks wrote (tests/fixtures/native/, no framework run):

- OpenAI evals scores one dataset with several methods (here match and the model-graded fact), each its own
  column; a sample's rows carry every method's score, and the grader's unparsed grade (`__invalid__`) of one
  method is no invalid answer in another (match scored the same output: wrong).
- OpenCompass's C-Eval column is the average of its subjects: its record has no samples of its own, so the
  cell opens into its subjects' samples (labelled by subject, n = their sum).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bridges.cli import main
from leaderboards.board import open_board
from leaderboards.publish import cell_files
from leaderboards.store import ResultsStore
from leaderboards.testing import manifest_for
from tests._native import native_run


def stored(framework: str, tmp_path: Path) -> Path:
    """A results store holding the checked-in native report of `framework`, collected as a run would."""
    native = native_run(framework, tmp_path)
    records = native.bridge.collect(native.out_dir)
    samples = native.bridge.collect_samples(native.out_dir)
    db = tmp_path / "results.sqlite"
    ResultsStore(db).add_run(manifest_for(native.bridge.ctx.run_id, framework, records), records, samples)
    return db


def samples_json(capsys: pytest.CaptureFixture[str], *argv: str) -> list[dict[str, Any]]:
    capsys.readouterr()
    assert main(["samples", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def page_cell(db: Path, column_id: str, model: str) -> list[list[Any]]:
    """The sample rows the published page opens for one cell (`cells/c<j>.js`)."""
    board = open_board(db)
    files = cell_files(board)
    (j,) = [j for j, c in enumerate(board.columns) if c.id == column_id]
    text = files[f"cells/c{j}.js"]
    data = json.loads(text[text.index("(") + 1 : text.rindex(")")])
    return data["rows"][model]["s"]


def test_openai_evals_cell_opens_the_samples_of_its_own_method(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = stored("openai_evals", tmp_path)
    cell = ["--db", str(db), "--model", "keyed", "--framework", "openai_evals", "--benchmark", "qa_capitals"]
    # two columns on the board (match_accuracy, fact_score): which one is opened is never guessed
    capsys.readouterr()
    assert main(["samples", *cell]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "name one of fact_score, match_accuracy" in err
    match = [*cell, "--metric", "match_accuracy"]
    every = samples_json(capsys, *match)
    assert sum(s["scores"]["match_accuracy"] for s in every) / len(every) == 0.875  # the column's 87.50
    # cap-3: match scored it 0 (wrong); the fact grader's answer matched no choice (invalid in fact only)
    assert [(s["sample_id"], s["status"]) for s in samples_json(capsys, *match, "--wrong")] == [("cap-3", "wrong")]
    assert samples_json(capsys, *match, "--invalid") == []
    fact = [*cell, "--metric", "fact_score"]
    assert [(s["sample_id"], s["status"]) for s in samples_json(capsys, *fact, "--invalid")] == [("cap-3", "invalid")]
    # the page: the same statuses per column
    match_rows = {row[0]: row[1] for row in page_cell(db, "openai_evals/qa_capitals/match_accuracy", "keyed")}
    assert match_rows["cap-3"] == "wrong" and list(match_rows.values()).count("right") == 7
    (fact_id,) = [c.id for c in open_board(db).columns if c.id.startswith("openai_evals/qa_capitals/fact_score")]
    assert {row[0]: row[1] for row in page_cell(db, fact_id, "keyed")}["cap-3"] == "invalid"


def test_ceval_group_cell_opens_its_subjects_samples(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # the table's sample column unfolded
    db = stored("opencompass", tmp_path)
    cell = ["--db", str(db), "--model", "keyed", "--framework", "opencompass", "--benchmark", "ceval"]
    every = samples_json(capsys, *cell)
    assert sorted((s["subset"], s["sample_id"], s["scores"]["accuracy"]) for s in every) == [
        ("computer_network", "0", 0.0), ("computer_network", "1", 1.0), ("computer_network", "2", 1.0),
        ("computer_network", "3", 1.0), ("high_school_chemistry", "0", 1.0), ("high_school_chemistry", "1", 1.0),
        ("high_school_chemistry", "2", 1.0), ("high_school_chemistry", "3", 1.0),
    ]  # fmt: skip
    capsys.readouterr()
    assert main(["samples", *cell, "--wrong"]) == 0
    out = capsys.readouterr().out
    assert "computer_network/0" in out and "1 of 8 samples" in out
    # the board: the column's 87.50 (OpenCompass's average of 75 and 100) stands on 8 samples
    board = open_board(db)
    shown = board.cell("keyed", "opencompass/ceval/accuracy")
    assert shown.value_100 == 87.5 and shown.n == 8 and shown.interval is not None
    assert sum(shown.scores.values()) / len(shown.scores) == 0.875
    assert set(shown.groups.values()) == {"computer_network", "high_school_chemistry"}
    # the page: each sample labelled with its subject
    rows = page_cell(db, "opencompass/ceval/accuracy", "keyed")
    assert len(rows) == 8 and {r[0] for r in rows} >= {"computer_network/0", "high_school_chemistry/3"}
    assert {r[0]: r[8] for r in rows}["computer_network/0"] == "computer_network"

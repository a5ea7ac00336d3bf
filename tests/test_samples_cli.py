"""`benchbridge samples`: a cell's samples filtered, as a table or JSON, and the framework diff."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bridges.cli import main
from leaderboards.evidence import CAUSE_EXTRACTION, CAUSE_METRIC, CAUSE_OUTPUT, CAUSE_PROMPT, CAUSE_UNCOMPARABLE, cause
from leaderboards.testing import sample_store


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("samples") / "r.sqlite"
    sample_store(path)
    return str(path)


def _json(capsys: pytest.CaptureFixture[str], *argv: str) -> list[dict[str, object]]:
    assert main(["samples", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_wrong_samples_of_a_cell(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    cell = ["--db", db, "--model", "smollm2-135m", "--framework", "lm_eval", "--benchmark", "qa_capitals"]
    every = _json(capsys, *cell)
    assert [s["sample_id"] for s in every] == [f"cap-{i}" for i in range(1, 9)]
    assert sum(s["scores"]["exact_match"] for s in every) / len(every) == 0.75  # the cell's 75.00
    wrong = _json(capsys, *cell, "--wrong")
    assert [(s["sample_id"], s["status"], s["output"]) for s in wrong] == [
        ("cap-1", "wrong", " Paris."),
        ("cap-2", "wrong", " Tokyo."),
    ]
    assert _json(capsys, *cell, "--invalid") == []
    assert main(["samples", *cell, "--wrong"]) == 0
    out = capsys.readouterr().out
    assert "Paris." in out and "2 of 8 samples" in out


def test_subsets_and_clusters_of_a_folded_cell(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    cell = ["--db", db, "--model", "smollm2-135m", "--framework", "opencompass", "--benchmark", "ceval_mini"]
    every = _json(capsys, *cell)
    assert {s["group"] for s in every} == {"computer_network", "high_school_chemistry"} and len(every) == 8


def test_diff_frameworks_explains_qa_capitals(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    found = _json(capsys, "--db", db, "--model", "smollm2-135m", "--benchmark", "qa_capitals", "--diff-frameworks")
    # lm-eval (native hf) logged the rendered chat template, evals the messages: not comparable literally,
    # so the cause is not claimed to be the prompt (issue 17).
    assert [(d["sample_id"], d["cause"]) for d in found] == [
        ("cap-1", CAUSE_UNCOMPARABLE),
        ("cap-2", CAUSE_UNCOMPARABLE),
        ("cap-7", CAUSE_UNCOMPARABLE),
        ("cap-8", CAUSE_UNCOMPARABLE),
    ]
    first = found[0]["frameworks"]
    assert first["lm_eval"]["score"] == 0.0 and first["openai_evals"]["score"] == 1.0
    assert first["lm_eval"]["output"] == " Paris." and first["openai_evals"]["input"].startswith("system: ")
    assert main(["samples", "--db", db, "--model", "smollm2-135m", "--benchmark", "qa_capitals", "--diff-frameworks"]) == 0
    assert "4 samples scored differently by lm_eval, openai_evals" in capsys.readouterr().out


def test_causes() -> None:
    assert cause([("p", "Paris.", "Paris."), ("q", "Paris", "Paris.")]) == CAUSE_METRIC
    assert cause([("p", "Paris.", "Paris."), ("q", "Paris.", "Paris")]) == CAUSE_EXTRACTION
    assert cause([("p", "Paris.", "Paris."), ("q", "Lima", "Lima")]) == CAUSE_PROMPT
    assert cause([("p", "Paris.", "Paris."), ("p", "Lima", "Lima")]) == CAUSE_OUTPUT


def test_bad_input_is_one_line(db: str, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["samples", "--db", db, "--model", "nope", "--framework", "lm_eval", "--benchmark", "qa_capitals"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("benchbridge: error: --model: no successful record for 'nope'")
    assert main(["samples", "--db", db, "--model", "smollm2-135m", "--benchmark", "qa_capitals"]) == 2
    assert "--framework: required" in capsys.readouterr().err
    assert main(["samples", "--db", str(tmp_path / "none.sqlite"), "--model", "m", "--benchmark", "b"]) == 2
    assert "no results database here" in capsys.readouterr().err

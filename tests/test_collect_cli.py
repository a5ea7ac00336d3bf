"""`benchbridge collect FRAMEWORK PATH`: native reports made outside benchbridge go onto the board with
the numbers the reports hold, their per-sample rows, and provenance `collected`.

The fast tests collect the checked-in reports the real frameworks wrote (tests/fixtures/native/, no
config needed: names are the reports' own); the framework test runs lm-eval's own CLI by hand on a
task folder and collects what it wrote.
"""

from __future__ import annotations

import csv
import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from bridges.cli import main
from leaderboards.board import board_from_cli, open_board
from leaderboards.store import ResultsStore

ROOT = Path(__file__).resolve().parent.parent
NATIVE = ROOT / "tests" / "fixtures" / "native"
OC_WORK = NATIVE / "opencompass" / "outputs" / "20261130_000000"


def collect(*args: str) -> int:
    return main(["collect", *args])


def ok_records(db: Path, framework: str) -> dict[tuple[str, str, str, str], float | None]:
    return {
        (r.model, r.benchmark, r.subset, r.metric): r.value
        for r in ResultsStore(db).records()
        if r.framework == framework and r.status == "ok"
    }


def test_opencompass_outputs_folder_is_the_summary_csv_with_failures_and_samples(tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite"
    assert collect("opencompass", str(NATIVE / "opencompass" / "outputs"), "--db", str(db)) == 0
    got = ok_records(db, "opencompass")
    with next((OC_WORK / "summary").glob("summary_*.csv")).open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    metric_names = {"score": "exact_match", "naive_average": "accuracy"}
    for model in ("keyed", "broken"):
        for row in rows:  # every numeric cell of the report is a record of the same value (0-100)
            abbr, metric, cell = row["dataset"], row["metric"], row[model]
            benchmark, subset = abbr.split("-", 1) if abbr.startswith("ceval-") else (abbr, "")
            if cell != "-":
                assert got[(model, benchmark, subset, metric_names.get(metric, metric))] == float(cell)
    assert got[("keyed", "qa_capitals", "", "exact_match")] == 87.5
    assert got[("keyed", "qa_zh", "", "exact_match")] == 83.33
    assert got[("keyed", "ceval", "computer_network", "accuracy")] == 75.0  # abbr ceval-<subject>: a subset
    assert got[("keyed", "ceval", "high_school_chemistry", "accuracy")] == 100.0
    assert got[("keyed", "ceval", "", "accuracy")] == 87.5  # naive_average is the same cell, stored once
    records = ResultsStore(db).records()
    failed = [r for r in records if r.status == "failed"]
    # a '-' cell is a failure with the task log's cause, never a 0
    assert {r.model for r in failed if r.benchmark == "qa_capitals"} == {"broken"}
    qa = next(r for r in failed if r.benchmark == "qa_capitals")
    assert qa.error and qa.error.startswith("infer task failed:") and "RetryableModelError" in qa.error
    scored = {(row["dataset"], m) for row in rows for m in ("keyed", "broken") if row[m] != "-"}
    unscored = {(row["dataset"], m) for row in rows for m in ("keyed", "broken")} - scored
    assert len(failed) == len(unscored) >= 6  # one per dataset a model has no number for
    for r in records:
        assert r.config_hash == "collected" and r.extra["provenance"] == "collected"
        assert r.extra["collected_from"] == str(NATIVE / "opencompass" / "outputs")
        assert r.time == "2026-11-30T00:00:00+00:00"  # the run folder's time, not the collection's
    samples = ResultsStore(db).samples()
    qa_samples = [s for s in samples if s.benchmark == "qa_capitals"]
    assert len(qa_samples) == 8
    assert sum(s.scores["exact_match"] or 0 for s in qa_samples) / 8 * 100 == 87.5


def test_lm_eval_results_json_values_stderrs_and_samples(tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite"
    folder = NATIVE / "lm_eval" / "results" / "keyed"
    assert collect("lm_eval", str(folder), "--db", str(db)) == 0
    report = json.loads(next(folder.glob("results_*.json")).read_text("utf-8"))
    records = [r for r in ResultsStore(db).records() if r.status == "ok"]
    assert len(records) == len(report["results"]) == 6
    for r in records:
        entry = report["results"][r.extra["task"]]
        assert (r.value, r.stderr) == (entry[r.extra["result_key"]], entry[r.extra["result_key"].replace(",", "_stderr,")])
        assert r.framework_version == "0.4.13" and r.model == "keyed"
    sub = next(r for r in records if r.extra["task"] == "bb_ceval_mini_computer_network_gen")
    assert (sub.benchmark, sub.subset, sub.value) == ("bb_ceval_mini_gen", "computer_network", 0.75)
    samples = ResultsStore(db).samples()
    qa = [s for s in samples if s.benchmark == "bb_qa_capitals"]
    assert len(qa) == 8 and sum(s.scores["exact_match,strip"] or 0 for s in qa) / 8 == 0.75


def test_openai_evals_record_logs_final_reports_and_grades(tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite"
    folder = NATIVE / "openai_evals" / "records" / "keyed"
    assert collect("openai_evals", str(folder), "--db", str(db), "--model", "keyed") == 0
    got = ok_records(db, "openai_evals")
    assert got[("keyed", "qa_capitals", "", "match_accuracy")] == 0.875
    assert got[("keyed", "qa_capitals", "", "fact_score")] == 0.875
    assert got[("keyed", "qa_capitals", "", "fact_count_C")] == 7
    assert got[("keyed", "qa_capitals", "", "fact_count_invalid")] == 1
    assert got[("keyed", "qa_zh", "", "includes_accuracy")] == pytest.approx(4 / 6)
    fact = next(r for r in ResultsStore(db).records() if r.metric == "fact_score")
    assert fact.judge == "bb-grader" and fact.primary
    samples = [s for s in ResultsStore(db).samples() if s.benchmark == "qa_capitals"]
    assert len(samples) == 8 and sum(s.scores["match_accuracy"] or 0 for s in samples) == 7
    assert sum(1 for s in samples if s.invalid) == 1  # the grader's __invalid__ grade


def test_alpaca_eval_leaderboard_csv_and_annotations(tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite"
    folder = NATIVE / "alpaca_eval" / "open_instructions"
    assert collect("alpaca_eval", str(folder / "leaderboard.csv"), "--db", str(db)) == 0
    got = ok_records(db, "alpaca_eval")
    assert got[("longer", "open_instructions", "", "win_rate")] == 100.0
    assert got[("shorter", "open_instructions", "", "win_rate")] == 0.0
    assert got[("longer", "open_instructions", "", "n_total")] == 5
    samples = [s for s in ResultsStore(db).samples() if s.model == "longer"]
    scored = [s.scores["win_rate"] for s in samples if s.scores["win_rate"] is not None]
    assert len(scored) == 5 and sum(scored) / len(scored) * 100 == 100.0


def test_collecting_the_same_report_twice_is_a_no_op(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "r.sqlite"
    copy = tmp_path / "elsewhere" / "keyed"
    shutil.copytree(NATIVE / "lm_eval" / "results" / "keyed", copy)
    assert collect("lm_eval", str(NATIVE / "lm_eval" / "results" / "keyed"), "--db", str(db)) == 0
    assert collect("lm_eval", str(copy), "--db", str(db)) == 0  # the same files copied elsewhere: the same report
    assert "already collected (nothing stored)" in capsys.readouterr().out
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 1
        assert conn.execute("SELECT COUNT(*) FROM records").fetchone()[0] == 6


def test_collected_rows_are_on_the_config_board(tmp_path: Path) -> None:
    config = tmp_path / "byo.yaml"
    config.write_text(
        "name: byo\nwork_dir: work\nmodels:\n  - {name: keyed, kind: python, target: bridges.testing:AnswerKeyModel}\n"
        f"datasets:\n  - path: {ROOT / 'custom_datasets' / 'qa_capitals'}\nframeworks:\n  lm_eval: {{}}\n",
        encoding="utf-8",
    )
    db = tmp_path / "work" / "results.sqlite"
    # --model renames a one-model report only: bad input, nothing stored
    assert collect("opencompass", str(OC_WORK), "--config", str(config), "--model", "keyed") == 2
    assert not db.exists()
    assert collect("lm_eval", str(NATIVE / "lm_eval" / "results" / "keyed"), "--config", str(config)) == 0
    board, _ = board_from_cli(str(config), None)
    cell = next(c for c in board.cells() if c.column.benchmark == "bb_qa_capitals" and c.model == "keyed")
    assert cell.value_100 == 75.0 and board.provenance(cell)["run_id"].startswith("collected-")


@pytest.mark.framework
def test_lm_eval_cli_run_by_hand_then_collected(tmp_path: Path) -> None:
    """lm-eval's own CLI (no benchbridge) on a task folder with its dummy model, which answers 'lol' to
    everything: 2 of 4 targets are 'lol', so exact_match is 0.5, and the board shows 50.00."""
    data = tmp_path / "tasks" / "data.jsonl"
    data.parent.mkdir()
    rows = [("Say lol.", "lol"), ("Say hi.", "hi"), ("Laugh.", "lol"), ("Capital of France?", "Paris")]
    data.write_text("".join(json.dumps({"q": q, "a": a}) + "\n" for q, a in rows), encoding="utf-8")
    (data.parent / "my_echo.yaml").write_text(
        "task: my_echo\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    test: {data}\ntest_split: test\noutput_type: generate_until\n"
        'doc_to_text: "{{q}}"\ndoc_to_target: "{{a}}"\ngeneration_kwargs:\n  until: ["\\n"]\n'
        "metric_list:\n  - metric: exact_match\n    aggregation: mean\n    higher_is_better: true\n",
        encoding="utf-8",
    )
    out = tmp_path / "lm_out"
    lm_eval = Path(sys.executable).parent / "lm_eval"
    subprocess.run(
        [str(lm_eval), "--model", "dummy", "--tasks", "my_echo", "--include_path", str(data.parent),
         "--output_path", str(out), "--log_samples"],
        check=True, cwd=tmp_path, capture_output=True, timeout=600,
    )  # fmt: skip
    results = json.loads(next(out.rglob("results_*.json")).read_text("utf-8"))["results"]["my_echo"]
    assert results["exact_match,none"] == 0.5
    db = tmp_path / "r.sqlite"
    assert collect("lm_eval", str(out), "--db", str(db), "--model", "dummy-lol") == 0
    (record,) = ResultsStore(db).records()
    assert (record.model, record.benchmark, record.metric, record.value) == ("dummy-lol", "my_echo", "exact_match", 0.5)
    assert record.stderr == results["exact_match_stderr,none"]
    samples = ResultsStore(db).samples()
    assert sorted((s.prompt, s.scores["exact_match"]) for s in samples) == sorted(
        (q, 1.0 if a == "lol" else 0.0) for q, a in rows
    )
    cell = next(c for c in open_board(db).cells() if c.model == "dummy-lol")
    assert cell.value_100 == 50.0

"""OpenAI evals' collect() on the record files oaieval 3.0.1.post1 wrote (tests/fixtures/native/openai_evals/).

The run behind them (scripts/regenerate_native_reports.py): `keyed` answers from the key except
cap-3, zh-3 and zh-5; `grader` (RuleGrader) grades qa_capitals.fact and abstains on cap-3 (evals
counts it `__invalid__`); `broken` raises on questions with an ASCII "?", so its two qa_capitals
evals fail and its qa_zh eval (full-width "？") runs and scores 0. No framework runs here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests._native import Native, native_run


@pytest.fixture
def native(tmp_path: Path) -> Native:
    return native_run("openai_evals", tmp_path)


def final_report(path: Path) -> dict:
    """The record file's final_report line (line 2 after the spec; not the last line)."""
    return next(
        json.loads(line)["final_report"] for line in path.read_text("utf-8").splitlines() if '"final_report"' in line
    )


def test_records_are_exactly_the_final_reports_and_failures(native: Native) -> None:
    records = native.bridge.collect(native.out_dir)
    got = [
        (r.model, r.benchmark, r.metric, r.status, r.value, r.scale, r.n_samples, r.primary, r.judge) for r in records
    ]
    std_capitals, std_zh = (r.value for r in records if r.model == "keyed" and r.metric.endswith("bootstrap_std"))
    assert got == [
        ("keyed", "qa_capitals", "match_accuracy", "ok", 7 / 8, 1, 8, True, None),
        ("keyed", "qa_capitals", "match_bootstrap_std", "ok", std_capitals, 1, 8, False, None),
        ("keyed", "qa_capitals", "fact_count_C", "ok", 7, 8, 8, False, "grader"),
        ("keyed", "qa_capitals", "fact_count_invalid", "ok", 1, 8, 8, False, "grader"),
        ("keyed", "qa_capitals", "fact_score", "ok", 7 / 8, 1, 8, True, "grader"),  # an invalid grade scores 0
        ("keyed", "qa_zh", "includes_accuracy", "ok", 4 / 6, 1, 6, True, None),
        ("keyed", "qa_zh", "includes_bootstrap_std", "ok", std_zh, 1, 6, False, None),
        ("broken", "qa_capitals", "match_accuracy", "failed", None, 1, None, True, None),
        ("broken", "qa_capitals", "fact_score", "failed", None, 1, None, True, "grader"),
        ("broken", "qa_zh", "includes_accuracy", "ok", 0.0, 1, 6, True, None),
        ("broken", "qa_zh", "includes_bootstrap_std", "ok", 0.0, 1, 6, False, None),
    ]
    assert 0 < std_capitals < 0.5 and 0 < std_zh < 0.5


def test_values_equal_each_record_files_final_report(native: Native) -> None:
    records = [r for r in native.bridge.collect(native.out_dir) if r.status == "ok"]
    files = {r.details_path for r in records}
    assert len(files) == 4
    for path in files:
        report = final_report(Path(path or ""))
        mine = {r.extra["report_key"]: r.value for r in records if r.details_path == path}
        assert mine == {k: v for k, v in report.items() if not k.startswith("usage_")}
        (primary,) = [r for r in records if r.details_path == path and r.primary]
        assert primary.extra["usage"] == {k: v for k, v in report.items() if k.startswith("usage_")}
    graded = next(r for r in records if r.metric == "fact_score")
    assert (graded.extra["n_invalid"], graded.extra["n_graded"]) == (1, 8)  # the invalid count is carried


def test_a_failed_eval_is_a_failed_record_with_the_cause_and_log(native: Native) -> None:
    failed = [r for r in native.bridge.collect(native.out_dir) if r.status == "failed"]
    assert [(r.benchmark, r.extra["eval"]) for r in failed] == [
        ("qa_capitals", "qa_capitals.match"),
        ("qa_capitals", "qa_capitals.fact"),
    ]
    for r in failed:
        meta = json.loads((native.out_dir / "records" / "broken" / f"{r.extra['eval']}.meta.json").read_text("utf-8"))
        assert r.error == meta["error"]
        assert r.error.startswith("oaieval exited with code 1: ")
        assert "RuntimeError: CrashOnQuestions: this model cannot answer questions" in r.error
        assert r.error.endswith(f"(log: {native.out_dir}/logs/broken/{r.extra['eval']}.log)")


def test_a_record_file_without_a_final_report_is_a_failure(native: Native) -> None:
    path = native.out_dir / "records" / "keyed" / "qa_zh.includes.jsonl"
    lines = path.read_text("utf-8").splitlines()
    path.write_text("\n".join(line for line in lines if '"final_report"' not in line) + "\n", "utf-8")
    (r,) = [r for r in native.bridge.collect(native.out_dir) if (r.model, r.benchmark) == ("keyed", "qa_zh")]
    assert (r.status, r.metric, r.value) == ("failed", "includes_accuracy", None)
    assert r.error == f"{path}: no record with a final_report (the eval did not run or did not finish)"

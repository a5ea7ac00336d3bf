"""OpenCompass's collect() on the reports OpenCompass 0.5.4 wrote (tests/fixtures/native/opencompass/).

The run behind them (scripts/regenerate_native_reports.py): `keyed` answers from the key except
sci-1, sci-2, cap-3, zh-3 and computer_network-0; `broken` raises on every question, so its one
inference task (all five datasets) fails with a traceback in logs/infer/broken/mcq_science_en.out.
No framework runs here.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from bridges.records import Record
from tests._native import Native, native_run


@pytest.fixture
def native(tmp_path: Path) -> Native:
    return native_run("opencompass", tmp_path)


def summary_cells(native: Native, model: str) -> dict[tuple[str, str], str]:
    (path,) = native.out_dir.glob("outputs/*/summary/summary_*.csv")
    with path.open(encoding="utf-8") as fh:
        return {(row["dataset"], row["metric"]): row[model] for row in csv.DictReader(fh)}


def table(records: list[Record]) -> list[tuple]:
    return [(r.model, r.benchmark, r.subset, r.metric, r.status, r.value, r.n_samples, r.primary) for r in records]


def test_records_are_exactly_the_reports_scores_and_failures(native: Native) -> None:
    records = native.bridge.collect(native.out_dir)
    assert table(records) == [
        ("keyed", "mcq_science_en", "", "accuracy", "ok", 75.0, 8, True),  # 6 of 8
        ("keyed", "qa_capitals", "", "exact_match", "ok", 87.5, 8, True),  # 7 of 8
        ("keyed", "qa_zh", "", "exact_match", "ok", 83.33, 6, True),  # 5 of 6, as the summary rounds it
        ("keyed", "ceval", "computer_network", "accuracy", "ok", 75.0, 4, True),
        ("keyed", "ceval", "high_school_chemistry", "accuracy", "ok", 100.0, 4, True),
        ("keyed", "ceval", "", "accuracy", "ok", 87.5, 8, True),  # OpenCompass's naive average of the two
        ("broken", "mcq_science_en", "", "accuracy", "failed", None, None, True),
        ("broken", "qa_capitals", "", "exact_match", "failed", None, None, True),
        ("broken", "qa_zh", "", "exact_match", "failed", None, None, True),
        ("broken", "ceval", "computer_network", "accuracy", "failed", None, None, True),
        ("broken", "ceval", "high_school_chemistry", "accuracy", "failed", None, None, True),
    ]
    assert {(r.framework, r.scale, r.run_id) for r in records} == {("opencompass", 100, "20261130-000000-native")}


def test_values_equal_the_summary_csv_and_the_results_json(native: Native) -> None:
    keyed = [r for r in native.bridge.collect(native.out_dir) if r.model == "keyed"]
    cells = summary_cells(native, "keyed")
    got = {(r.extra.get("opencompass_abbr", r.benchmark), r.extra["opencompass_metric"]): r.value for r in keyed}
    # the summary's ("ceval", "accuracy") row repeats the group's naive average the group record carries
    assert got == {key: float(cell) for key, cell in cells.items() if key != ("ceval", "accuracy")}
    for r in keyed:
        if r.subset or r.benchmark != "ceval":
            result = json.loads(Path(r.details_path or "").read_text(encoding="utf-8"))
            assert r.extra["results_value"] == result[r.extra["opencompass_metric"]]
            details = result["details"]  # a list, or (ceval) a dict of numbered samples plus a "type" key
            assert r.n_samples == len(details) - (isinstance(details, dict) and "type" in details)
            assert Path(r.details_path or "").is_relative_to(native.out_dir)


def test_a_failed_task_is_a_failed_record_with_its_traceback(native: Native) -> None:
    failed = [r for r in native.bridge.collect(native.out_dir) if r.status == "failed"]
    assert {r.model for r in failed} == {"broken"}
    assert not any(r.benchmark == "ceval" and not r.subset for r in failed)  # no average over failed subsets
    log = native.out_dir / "outputs/20261130_000000/logs/infer/broken/mcq_science_en.out"
    assert summary_cells(native, "broken")[("qa_zh", "score")] == "-"  # OpenCompass's only sign of the failure
    for r in failed:
        cause, _, excerpt = (r.error or "").partition("\n")
        assert cause.startswith("infer task failed: ") and cause.endswith(f"(log: {log})")
        assert "RuntimeError: CrashOnQuestions: this model cannot answer questions" in cause
        assert excerpt.startswith("Traceback (most recent call last)")
        assert "CrashOnQuestions" in excerpt.splitlines()[-1]


def test_without_the_task_log_the_failure_says_so(native: Native) -> None:
    (native.out_dir / "outputs/20261130_000000/logs/infer/broken/mcq_science_en.out").unlink()
    failed = [r for r in native.bridge.collect(native.out_dir) if r.status == "failed"]
    assert len(failed) == 5
    assert all(
        r.error == f"no score and no task traceback under {native.out_dir}/outputs/20261130_000000/logs" for r in failed
    )

"""The cross-framework agreement report, on hand-made records."""

from __future__ import annotations

import math

import pytest

from bridges.records import Record
from leaderboards.agreement import MAX_DIFF, agreement_markdown, agreement_table, framework_columns


def rec(framework: str, value: float | None, *, scale: float = 1, **kw: object) -> Record:
    fields = {
        "run_id": "r1",
        "model": "keyed",
        "framework": framework,
        "framework_version": "1",
        "benchmark": "qa_capitals",
        "metric": "accuracy",
        "value": value,
        "scale": scale,
        "primary": True,
        "n_samples": 8,
        "time": "2026-01-01T00:00:00+00:00",
        **kw,
    }
    return Record(**fields)  # type: ignore[arg-type]


def test_identical_scores_on_different_scales_agree_exactly() -> None:
    records = [
        rec("lm_eval", 0.75, metric="exact_match,strip"),
        rec("opencompass", 75.0, scale=100),
        rec("openai_evals", 0.75, metric="match_accuracy"),
        rec("openai_evals", 0.1, metric="match_bootstrap_std", primary=False),  # not a primary metric: ignored
    ]
    table = agreement_table(records)
    assert list(table.index) == [("qa_capitals", "", "keyed")]
    assert framework_columns(table) == ["lm_eval", "openai_evals", "opencompass"]
    row = table.loc[("qa_capitals", "", "keyed")]
    assert [row[c] for c in framework_columns(table)] == [75.0, 75.0, 75.0]
    assert row[MAX_DIFF] == 0.0
    assert row["n_samples"] == "8"
    assert row["metrics"] == "lm_eval=exact_match,strip; openai_evals=match_accuracy; opencompass=accuracy"
    md = agreement_markdown(table)
    assert "| qa_capitals | keyed | 75.00 | 75.00 | 75.00 | 0.00 | 8 |" in md
    assert "exact_match,strip" in md


def test_differences_missing_frameworks_subsets_and_single_framework_rows() -> None:
    records = [
        rec("lm_eval", 0.5, benchmark="mcq", metric="acc", n_samples=8),
        rec("opencompass", 62.5, scale=100, benchmark="mcq", n_samples=8),
        rec("openai_evals", 0.25, benchmark="mcq", n_samples=6),
        # A subject scored by two frameworks is its own row.
        rec("lm_eval", 0.25, benchmark="ceval", subset="physics", metric="acc"),
        rec("opencompass", 50.0, scale=100, benchmark="ceval", subset="physics"),
        # Only one framework: no row.
        rec("lm_eval", 1.0, benchmark="only_lm_eval"),
        # Another model on mcq, scored by two of the three frameworks.
        rec("lm_eval", 0.5, benchmark="mcq", model="other"),
        rec("opencompass", 50.0, scale=100, benchmark="mcq", model="other"),
    ]
    table = agreement_table(records)
    assert list(table.index) == [("ceval", "physics", "keyed"), ("mcq", "", "keyed"), ("mcq", "", "other")]
    assert table.loc[("mcq", "", "keyed"), MAX_DIFF] == pytest.approx(62.5 - 25.0)
    assert table.loc[("mcq", "", "keyed"), "n_samples"] == "6/8"  # not the same samples: visible
    assert table.loc[("ceval", "physics", "keyed"), MAX_DIFF] == pytest.approx(25.0)
    assert math.isnan(table.loc[("mcq", "", "other"), "openai_evals"])
    assert table.loc[("mcq", "", "other"), MAX_DIFF] == 0.0
    md = agreement_markdown(table)
    assert "| ceval:physics | keyed | 25.00 | — | 50.00 | 25.00 |" in md
    assert "| mcq | other | 50.00 | — | 50.00 | 0.00 |" in md
    assert agreement_table(records, min_frameworks=3).index.tolist() == [("mcq", "", "keyed")]


def test_latest_success_wins_and_failures_are_not_numbers() -> None:
    old = rec("lm_eval", 0.5, time="2026-01-01T00:00:00+00:00")
    new = rec("lm_eval", 0.75, time="2026-01-02T00:00:00+00:00")
    failed_later = rec("lm_eval", None, status="failed", error="boom", time="2026-01-03T00:00:00+00:00")
    oc_failed = rec("opencompass", None, scale=100, status="failed", error="boom")
    evals = rec("openai_evals", 0.75)
    table = agreement_table([old, new, failed_later, oc_failed, evals])
    assert framework_columns(table) == ["lm_eval", "openai_evals"]
    assert table.loc[("qa_capitals", "", "keyed"), "lm_eval"] == 75.0
    assert table.loc[("qa_capitals", "", "keyed"), MAX_DIFF] == 0.0


def test_a_framework_with_several_primary_metrics_gets_a_column_each() -> None:
    records = [
        rec("openai_evals", 0.75, metric="match_accuracy"),
        rec("openai_evals", 0.875, metric="includes_accuracy"),
        rec("openai_evals", 0.5, metric="fact_score", judge="judge-model"),
        rec("lm_eval", 0.75, metric="exact_match,strip"),
    ]
    table = agreement_table(records)
    assert framework_columns(table) == [
        "lm_eval",
        "openai_evals:fact_score@judge-model",
        "openai_evals:includes_accuracy",
        "openai_evals:match_accuracy",
    ]
    assert table.loc[("qa_capitals", "", "keyed"), MAX_DIFF] == pytest.approx(37.5)


def test_nothing_to_compare() -> None:
    table = agreement_table([rec("lm_eval", 0.5)])
    assert table.empty
    assert "No dataset was scored by two or more frameworks" in agreement_markdown(table)

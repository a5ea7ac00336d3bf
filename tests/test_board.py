"""Merge: records from four frameworks -> models x columns, latest success per cell, average, rank."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

import leaderboards
from bridges import BenchbridgeError
from bridges.cli import main
from leaderboards.board import board_for_config, build_board
from leaderboards.testing import JUDGE, sample_config, sample_records, sample_store

OC_MCQ = "opencompass/mcq_science_en/accuracy"
OC_CEVAL = "opencompass/ceval_mini/accuracy"
ALPACA = f"alpaca_eval/open_instructions/win_rate@{JUDGE}"
SMOL, TUNED, TINY = "smollm2-135m", "smollm2-135m@tuned", "tiny-random"


@pytest.fixture(scope="module")
def board() -> leaderboards.Board:
    return build_board(sample_records())


def test_columns_are_framework_benchmark_metric_with_judge(board: leaderboards.Board) -> None:
    assert [c.id for c in board.columns] == [
        ALPACA,
        "lm_eval/mcq_science_en/acc",
        "lm_eval/qa_capitals/exact_match",
        "lm_eval/qa_zh/exact_match",
        "openai_evals/qa_capitals/accuracy",
        "openai_evals/qa_zh/accuracy",
        OC_CEVAL,
        OC_MCQ,
    ]
    assert board.column(ALPACA).judge == JUDGE and board.column(ALPACA).higher_is_better
    assert board.frameworks == ["alpaca_eval", "lm_eval", "openai_evals", "opencompass"]


def test_values_are_scaled_to_100_and_latest_success_wins(board: leaderboards.Board) -> None:
    assert board.cell(SMOL, "lm_eval/qa_capitals/exact_match").value_100 == 75.0  # 0.75 as lm_eval wrote it
    assert board.cell(SMOL, OC_MCQ).text == "62.50"  # the rerun replaced 50.0
    assert board.cell(SMOL, OC_MCQ).attempts == 2
    fixed = board.cell(TINY, "lm_eval/qa_zh/exact_match")  # failed first, then a rerun succeeded
    assert (fixed.status, fixed.text, fixed.newer_failure) == ("ok", "0.00", None)
    kept = board.cell(SMOL, ALPACA)  # succeeded, then a rerun failed: the success shows, with a note
    assert (kept.status, kept.text) == ("ok", "50.00")
    assert kept.newer_failure is not None and "no parsable preference" in (kept.newer_failure.error or "")


def test_subjects_fold_into_the_benchmark_and_a_failed_subject_fails_it(board: leaderboards.Board) -> None:
    smol = board.cell(SMOL, OC_CEVAL)
    assert smol.value_100 == pytest.approx((50.0 * 4 + 25.0 * 4) / 8)
    assert [p.subset for p in smol.parts] == ["computer_network", "high_school_chemistry"]
    assert smol.n_samples == 8
    tuned = board.cell(TUNED, OC_CEVAL)
    assert tuned.status == "failed" and tuned.text == "failed"
    assert tuned.reason is not None and "1 of 2 subsets failed (high_school_chemistry)" in tuned.reason
    assert "CUDA error" in tuned.reason


def test_subsets_as_their_own_columns() -> None:
    board = build_board(sample_records(), subsets=True)
    cn, hsc = (
        "opencompass/ceval_mini:computer_network/accuracy",
        "opencompass/ceval_mini:high_school_chemistry/accuracy",
    )
    assert board.cell(TUNED, cn).text == "75.00"
    assert board.cell(TUNED, hsc).status == "failed"
    assert board.cell(TINY, hsc).text == "0.00"


def test_subjects_are_weighted_by_their_sample_counts() -> None:
    base = next(r for r in sample_records() if r.subset == "computer_network" and r.model == SMOL)
    small = base.model_copy(update={"value": 100.0, "n_samples": 1})
    large = base.model_copy(update={"subset": "high_school_chemistry", "value": 0.0, "n_samples": 3})
    assert build_board([small, large]).cell(SMOL, OC_CEVAL).value_100 == 25.0


def test_a_framework_that_failed_as_a_whole_fails_each_of_its_columns(board: leaderboards.Board) -> None:
    for column in ("openai_evals/qa_capitals/accuracy", "openai_evals/qa_zh/accuracy"):
        cell = board.cell(TINY, column)
        assert (cell.status, cell.reason) == ("failed", "oaieval exited 1 for tiny-random")
        assert "APIConnectionError" in (cell.error or "")
    lone = [r for r in sample_records() if r.framework == "openai_evals" and r.status == "failed"]
    only = build_board(lone)  # nothing else known about the framework: it still gets a visible column
    assert [c.id for c in only.columns] == ["openai_evals/*/accuracy"]
    assert only.columns[0].benchmark_label == "(all benchmarks)"
    assert only.cell(TINY, "openai_evals/*/accuracy").status == "failed"


def test_a_failed_metric_fails_its_own_column_only() -> None:
    base = next(r for r in sample_records() if r.framework == "openai_evals" and r.model == SMOL)
    match = base.model_copy(update={"metric": "match_accuracy"})
    includes = base.model_copy(update={"metric": "includes_accuracy", "value": 0.5})
    failed = match.model_copy(update={"status": "failed", "value": None, "error": "oaieval: no final_report"})
    board = build_board([match, includes, failed.model_copy(update={"time": "2026-11-24T00:00:00+00:00"})])
    match_id, includes_id = (f"openai_evals/{base.benchmark}/{m}_accuracy" for m in ("match", "includes"))
    assert board.cell(SMOL, match_id).newer_failure is not None
    assert board.cell(SMOL, includes_id).newer_failure is None
    only_failed = build_board([includes, failed])
    assert only_failed.cell(SMOL, includes_id).status == "ok"
    assert only_failed.cell(SMOL, match_id).status == "failed"  # its own column, not folded into includes


def test_average_rank_and_coverage(board: leaderboards.Board) -> None:
    smol = board.row(SMOL)
    expected = (50 + 50 + 75 + 100 / 6 + 75 + 100 / 6 + 37.5 + 62.5) / 8
    assert smol.average == pytest.approx(expected) and smol.coverage == "8/8" and smol.rank == 1
    tuned, tiny = board.row(TUNED), board.row(TINY)
    assert tuned.coverage == "7/8" and tuned.rank is None and tuned.rank_text == "—"  # better average, one failure
    assert tiny.coverage == "6/8" and tiny.rank is None
    assert [r.model for r in board.rows] == [SMOL, TUNED, TINY]


def test_average_over_chosen_columns_ranks_on_those(board: leaderboards.Board) -> None:
    chosen = build_board(sample_records(), average_over=["lm_eval/*"])
    assert chosen.average_over == [
        "lm_eval/mcq_science_en/acc",
        "lm_eval/qa_capitals/exact_match",
        "lm_eval/qa_zh/exact_match",
    ]
    assert [(r.model, r.rank) for r in chosen.rows] == [(TUNED, 1), (SMOL, 2), (TINY, 3)]
    assert chosen.row(TUNED).average == pytest.approx((62.5 + 87.5 + 100 / 3) / 3)
    with pytest.raises(BenchbridgeError, match=r"publish.average_over: 'helm/\*' matches no column"):
        build_board(sample_records(), average_over=["helm/*"], average_key="publish.average_over")
    # a known framework with no result yet (a board built part way through a run) is no error
    partial = build_board([r for r in sample_records() if r.framework == "lm_eval"], average_over=["opencompass/*"])
    assert partial.average_over == [] and partial.rows[0].average is None


def test_ties_share_a_rank_and_lower_is_better_enters_as_100_minus() -> None:
    base = sample_records()[0]
    records = [
        base.model_copy(update={"model": "a", "value": 40.0}),
        base.model_copy(update={"model": "b", "value": 40.0}),
        base.model_copy(update={"model": "c", "value": 10.0}),
    ]
    assert [(r.model, r.rank) for r in build_board(records).rows] == [("a", 1), ("b", 1), ("c", 3)]
    errors = [r.model_copy(update={"metric": "error_rate", "higher_is_better": False}) for r in records]
    board = build_board(errors)
    assert board.columns[0].arrow == "↓"
    assert [(r.model, r.rank, r.average) for r in board.rows] == [("c", 1, 90.0), ("a", 2, 60.0), ("b", 2, 60.0)]


def test_missing_cells_and_models_without_results() -> None:
    board = build_board(sample_records(), models=["qwen-unrun"])
    cell = board.cell("qwen-unrun", OC_MCQ)
    assert (cell.status, cell.text, cell.reason) == ("missing", "missing", "no result: not run for this model")
    assert board.rows[-1].model == "qwen-unrun" and board.rows[-1].average is None
    assert board.cell(TINY, "openai_evals/qa_capitals/accuracy").status == "failed"
    assert board.cell(TUNED, "openai_evals/qa_capitals/accuracy").status == "ok"


def test_all_metrics_adds_secondary_metric_columns() -> None:
    board = build_board(sample_records(), all_metrics=True)
    assert board.cell(TUNED, "lm_eval/mcq_science_en/acc_norm").text == "50.00"
    assert "lm_eval/mcq_science_en/acc_norm" not in [c.id for c in build_board(sample_records()).columns]


def test_dataframe_api(tmp_path: Path, board: leaderboards.Board) -> None:
    sample_store(tmp_path / "r.sqlite")
    wide = leaderboards.load(tmp_path / "r.sqlite")
    pd.testing.assert_frame_equal(wide, leaderboards.load(sample_records()))
    assert list(wide.columns[:3]) == ["rank", "average", "coverage"]
    assert wide.loc[SMOL, OC_MCQ] == 62.5
    assert math.isnan(wide.loc[TUNED, OC_CEVAL])  # failed: NaN, and the long form says why
    assert str(wide["rank"].dtype) == "Int64" and wide.loc[SMOL, "rank"] == 1
    long = leaderboards.load(tmp_path / "r.sqlite", long=True)
    assert len(long) == len(board.rows) * len(board.columns)
    failed = long[(long.model == TUNED) & (long.column == OC_CEVAL)].iloc[0]
    assert failed.status == "failed" and "high_school_chemistry" in failed.reason
    smol = long[(long.model == SMOL) & (long.column == OC_MCQ)].iloc[0]
    assert (smol.run_id, smol.framework_version, smol.n_samples) == ("20261121-100000-d4e5f6", "0.5.4", 8)
    assert smol.git_commit and smol.started == "2026-11-21T10:02:00+00:00"  # from the run manifest


def test_board_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sample_store(tmp_path / "r.sqlite")
    assert main(["board", "--db", str(tmp_path / "r.sqlite")]) == 0
    out = capsys.readouterr().out
    assert "62.50" in out and "failed" in out
    assert "failed: tiny-random × openai_evals/qa_zh/accuracy: oaieval exited 1 for tiny-random" in out
    assert main(["board"]) == 2
    assert "give a run config or --db PATH" in capsys.readouterr().err
    assert main(["board", "--db", str(tmp_path / "none.sqlite")]) == 2
    assert main(["board", "--db", str(tmp_path / "r.sqlite"), "--average-over", "nope"]) == 2
    assert "--average-over: 'nope' matches no column" in capsys.readouterr().err


def test_board_of_a_config_reads_its_runs_and_lists_its_models(tmp_path: Path) -> None:
    from bridges import load_config

    sample_store(tmp_path / "results.sqlite")
    config = sample_config(tmp_path, [SMOL, "not-run-yet"], {"average_over": ["lm_eval/*", OC_MCQ]})
    board = board_for_config(load_config(config))
    assert board.title == "sample"
    assert [r.model for r in board.rows][:1] == [TUNED]
    assert board.cell("not-run-yet", OC_MCQ).status == "missing"
    assert len(board.average_over) == 4
    other = tmp_path / "other.yaml"
    other.write_text(config.read_text().replace("name: sample", "name: other"))
    assert board_for_config(load_config(other)).columns == []  # another config's runs are not mixed in
    bad = tmp_path / "bad.yaml"
    bad.write_text(config.read_text().replace("lm_eval/*", "lm-eval/*"))
    with pytest.raises(BenchbridgeError, match=r"bad.yaml: publish.average_over: 'lm-eval/\*' matches no column"):
        board_for_config(load_config(bad))

"""Two things the demo board showed wrong: lm-eval's stderr of 0 for 0 of 8 right made a [0, 0] interval,
and one averaged column without any interval (OpenCompass's C-Eval group average) made every rank plain."""

from __future__ import annotations

from pathlib import Path

import pytest
from statsmodels.stats.proportion import proportion_confint

from bridges import Sample
from leaderboards.board import open_board
from leaderboards.store import ResultsStore
from leaderboards.testing import manifest_for, sample_record

T = "2026-11-30T12:00:00+00:00"


def _store(tmp_path: Path) -> ResultsStore:
    store = ResultsStore(tmp_path / "results.sqlite")
    for model, right in (("tuned", [1, 1, 1, 0, 0, 0, 0, 0]), ("default", [1, 1, 0, 0, 0, 0, 0, 0])):
        run = f"run-{model}"
        # lm-eval's qa column: 0 of 8 for both, with lm-eval's own stderr 0
        zero = sample_record(run, T, "lm_eval", model, "qa", "exact_match", 0.0, stderr=0.0)
        # evals' mcq column: samples, no stderr
        mcq = sample_record(run, T, "openai_evals", model, "mcq", "match_accuracy", sum(right) / 8)
        # OpenCompass's group average: a value, no stderr, no samples
        group = sample_record(run, T, "opencompass", model, "ceval", "accuracy", 25.0)
        samples = [
            Sample(
                run_id=run,
                model=model,
                framework=framework,
                benchmark=benchmark,
                sample_id=f"{prefix}{i}",
                output="x",
                scores={metric: float(score)},
            )
            for framework, benchmark, metric, prefix, scores in (
                ("lm_eval", "qa", "exact_match", "q", [0] * 8),
                ("openai_evals", "mcq", "match_accuracy", "m", right),
            )
            for i, score in enumerate(scores)
        ]
        for framework, records in (("lm_eval", [zero]), ("openai_evals", [mcq]), ("opencompass", [group])):
            mine = [s for s in samples if s.framework == framework]
            store.add_run(manifest_for(run, framework, records), records, mine)
    return store


def test_a_zero_stderr_on_binary_samples_gives_their_wilson_interval(tmp_path: Path) -> None:
    board = open_board(_store(tmp_path))
    cell = board.cell("tuned", next(c.id for c in board.columns if c.framework == "lm_eval"))
    assert cell.interval is not None and cell.interval.method == "wilson"
    assert (cell.interval.low, cell.interval.high) == pytest.approx(proportion_confint(0, 8, method="wilson"))
    assert cell.interval.high > 0.3  # not the [0, 0] that stderr 0 gave


def test_a_column_without_interval_does_not_hide_the_rank_range(tmp_path: Path) -> None:
    board = open_board(_store(tmp_path))
    assert [r.model for r in board.rows] == ["tuned", "default"]
    ranges = [(r.rank_range.best, r.rank_range.worst) for r in board.rows if r.rank_range is not None]
    assert ranges == [(1, 2), (1, 2)]  # 3 of 8 vs 2 of 8: not separable
    assert "vs default" in (board.rows[0].versus_next or "")


def test_a_group_of_unequal_subjects_gets_the_interval_of_its_unweighted_average(tmp_path: Path) -> None:
    # OpenCompass's C-Eval group is the plain mean of its subjects' accuracies. Subject a: 10 of 10 right;
    # subject b: 0 of 90. The cell shows 50.00; the pooled samples' mean is 10 %, an interval about another number.
    store = ResultsStore(tmp_path / "results.sqlite")
    run = "run-unequal"
    group = sample_record(run, T, "opencompass", "m", "ceval", "accuracy", 50.0)
    subjects = [
        sample_record(run, T, "opencompass", "m", "ceval", "accuracy", value, subset=subset)
        for subset, value in (("a", 100.0), ("b", 0.0))
    ]
    samples = [
        Sample(
            run_id=run,
            model="m",
            framework="opencompass",
            benchmark="ceval",
            subset=subset,
            sample_id=f"{subset}{i}",
            output="x",
            scores={"accuracy": float(right)},
        )
        for subset, n, right in (("a", 10, 1), ("b", 90, 0))
        for i in range(n)
    ]
    store.add_run(manifest_for(run, "opencompass", [group, *subjects]), [group, *subjects], samples)
    board = open_board(store)
    cell = board.cell("m", next(c.id for c in board.columns if not c.subset))
    assert cell.value_100 == 50.0 and cell.n == 100
    assert cell.interval is not None and cell.interval.method == "stratified"
    assert cell.interval.mean == pytest.approx(0.5)  # centred on what the cell shows, not on the pooled 0.1
    # both subjects have no spread: the unweighted average of 1.0 and 0.0 is known exactly from them
    assert (cell.interval.low, cell.interval.high) == pytest.approx((0.5, 0.5))

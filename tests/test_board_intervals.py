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
            Sample(run_id=run, model=model, framework="lm_eval", benchmark="qa", sample_id=f"q{i}",
                   output="x", scores={"exact_match": 0.0})
            for i in range(8)
        ] + [
            Sample(run_id=run, model=model, framework="openai_evals", benchmark="mcq", sample_id=f"m{i}",
                   output="x", scores={"match_accuracy": float(r)})
            for i, r in enumerate(right)
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

"""AlpacaEval's collect() on the board and annotations AlpacaEval 0.6.6 wrote (tests/fixtures/native/alpaca_eval/).

The run behind them (scripts/regenerate_native_reports.py): reference `ref` answers "An answer."
twice, `longer` three times, `shorter` once, `mute` "Nothing to say."; the judge prefers the longer
output and gives no verdict on the haiku instruction (one unparsed pair per model) nor on any of
mute's pairs, so make_leaderboard has no row for mute. No framework runs here.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from bridges.records import ERROR_CHARS
from tests._native import Native, native_run

COLUMNS = [
    "win_rate",
    "standard_error",
    "n_wins",
    "n_wins_base",
    "n_draws",
    "n_total",
    "avg_length",
    "discrete_win_rate",
]


@pytest.fixture
def native(tmp_path: Path) -> Native:
    return native_run("alpaca_eval", tmp_path)


def board(native: Native) -> dict[str, dict[str, str]]:
    with native.path("open_instructions/leaderboard.csv").open(encoding="utf-8", newline="") as fh:
        return {row[""]: row for row in csv.DictReader(fh)}


def test_records_are_exactly_the_boards_cells_and_the_failure(native: Native) -> None:
    records = native.bridge.collect(native.out_dir)
    got = [(r.model, r.metric, r.status, r.value, r.n_samples, r.primary) for r in records]
    expected = []
    for model, values in {
        "longer": [100.0, 0.0, 5, 0, 0, 5, 32, 100.0],
        "shorter": [0.0, 0.0, 0, 5, 0, 5, 10, 0.0],
    }.items():
        expected += [(model, c, "ok", v, 5, c == "win_rate") for c, v in zip(COLUMNS, values, strict=True)]
        expected.append((model, "n_unparsed", "ok", 1, 5, False))  # the haiku: left out of the win rate
    expected.append(("mute", "win_rate", "failed", None, None, True))
    assert got == expected
    assert {(r.benchmark, r.judge) for r in records} == {("open_instructions", "chatgpt_fn@longer-judge")}


def test_values_equal_the_board_csv_and_unparsed_counts_the_annotations(native: Native) -> None:
    records = [r for r in native.bridge.collect(native.out_dir) if r.status == "ok"]
    cells = board(native)
    assert set(cells) == {"longer", "shorter"}
    for model, row in cells.items():
        mine = {r.metric: r for r in records if r.model == model}
        assert {c: mine[c].value for c in COLUMNS} == {c: float(row[c]) for c in COLUMNS}
        assert mine["win_rate"].stderr == float(row["standard_error"])
        annotations = native.path(f"open_instructions/results/{model}/annotations.json")
        unparsed = sum(a["preference"] is None for a in json.loads(annotations.read_text("utf-8")))
        assert mine["n_unparsed"].value == unparsed == mine["win_rate"].extra["n_unparsed"] == 1
        assert (
            mine["win_rate"].extra["note"]
            == "1 of 6 judgements unparsed: left out of the win rate, asked again next run"
        )
        assert mine["win_rate"].details_path == str(annotations)


def test_a_model_missing_from_the_board_is_a_failed_record_with_the_reason_and_log(native: Native) -> None:
    (mute,) = [r for r in native.bridge.collect(native.out_dir) if r.status == "failed"]
    reason = json.loads(native.path("open_instructions/failures.json").read_text("utf-8"))["mute"]
    log = native.path("open_instructions/make_leaderboard.log")
    head = f"alpaca_eval make_leaderboard: {reason} ({native.path('open_instructions/leaderboard.csv')}); {log}:\n"
    error = mute.error or ""
    assert error.startswith(head)  # the reason, whole
    assert error.rstrip().endswith("TypeError: Expected numeric dtype, got object instead.")
    assert error.rstrip()[-300:] in log.read_text("utf-8")  # the end of the log, where the error is
    assert len(error) <= ERROR_CHARS


def test_without_failures_json_the_missing_row_is_still_a_failure(native: Native) -> None:
    native.path("open_instructions/failures.json").unlink()
    (mute,) = [r for r in native.bridge.collect(native.out_dir) if r.status == "failed"]
    assert (mute.error or "").startswith("alpaca_eval make_leaderboard: no row on the board CSV (")

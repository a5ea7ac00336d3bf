"""Each bridge's `collect_samples` on the checked-in native reports (no framework runs): the
answer-key models' rows are exactly their right/wrong ids, every cell's value is the mean of its
samples' scores, a failed model has none, and the texts are the frameworks' own."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridges.records import Record, Sample
from tests._native import native_run

CAPS = [f"cap-{i}" for i in range(1, 9)]
SCIS = [f"sci-{i}" for i in range(1, 9)]
ZHS = [f"zh-{i}" for i in range(1, 7)]
INS = [f"ins-{i}" for i in range(1, 7)]


def collected(framework: str, tmp_path: Path) -> tuple[list[Record], list[Sample]]:
    native = native_run(framework, tmp_path)
    return native.bridge.collect(native.out_dir), native.bridge.collect_samples(native.out_dir)


def scores(samples: list[Sample], record: Record) -> dict[str, float | None]:
    """The record's cell: its model, benchmark and subset, scored by its metric (one row per id)."""
    mine = [s for s in samples if (s.model, s.benchmark, s.subset) == (record.model, record.benchmark, record.subset)]
    assert len({s.sample_id for s in mine}) == len(mine)
    return {s.sample_id: s.scores.get(record.metric) for s in mine if record.metric in s.scores}


def assert_cells_are_sample_means(records: list[Record], samples: list[Sample]) -> int:
    """Every ok record with per-sample scores equals their mean (on its scale); returns how many."""
    checked = 0
    for r in records:
        got = [v for v in scores(samples, r).values() if v is not None]
        if r.status == "ok" and got:
            assert sum(got) / len(got) * r.scale == pytest.approx(r.value, abs=0.005), (r.benchmark, r.metric)
            checked += 1
    return checked


def primary(records: list[Record], model: str, benchmark: str, subset: str = "") -> Record:
    (rec,) = [r for r in records if (r.model, r.benchmark, r.subset, r.primary) == (model, benchmark, subset, True)]
    return rec


def wrong(cell: dict[str, float | None]) -> set[str]:
    return {i for i, v in cell.items() if v != 1.0}


def test_opencompass_samples(tmp_path: Path) -> None:
    records, samples = collected("opencompass", tmp_path)
    assert {s.model for s in samples} == {"keyed"}  # broken's task failed: no samples
    expected = {
        ("mcq_science_en", ""): (SCIS, {"sci-1", "sci-2"}),
        ("qa_capitals", ""): (CAPS, {"cap-3"}),
        ("qa_zh", ""): (ZHS, {"zh-3"}),
        ("ceval", "computer_network"): (["0", "1", "2", "3"], {"0"}),  # a built-in: OpenCompass's index
        ("ceval", "high_school_chemistry"): (["0", "1", "2", "3"], set()),
    }
    for key, (ids, bad) in expected.items():
        cell = scores(samples, primary(records, "keyed", *key))
        assert (sorted(cell), wrong(cell)) == (sorted(ids), bad), key
    assert assert_cells_are_sample_means(records, samples) == 5
    (cap3,) = [s for s in samples if s.sample_id == "cap-3"]
    assert (cap3.output, cap3.references, cap3.messages and cap3.messages[-1]["role"]) == (
        "I don't know",
        ["Rome"],
        "user",
    )


def test_openai_evals_samples(tmp_path: Path) -> None:
    records, samples = collected("openai_evals", tmp_path)
    # The grader is no candidate; broken's qa_capitals evals failed (no samples), its qa_zh one ran.
    assert {(s.model, s.benchmark) for s in samples} == {
        ("keyed", "qa_capitals"),
        ("keyed", "qa_zh"),
        ("broken", "qa_zh"),
    }
    for benchmark, metric, ids, bad in [
        ("qa_capitals", "match_accuracy", CAPS, {"cap-3"}),
        ("qa_capitals", "fact_score", CAPS, {"cap-3"}),
        ("qa_zh", "includes_accuracy", ZHS, {"zh-3", "zh-5"}),
    ]:
        (rec,) = [r for r in records if (r.model, r.benchmark, r.metric) == ("keyed", benchmark, metric)]
        cell = scores(samples, rec)
        assert (sorted(cell), wrong(cell)) == (sorted(ids), bad), metric
    assert assert_cells_are_sample_means(records, samples) >= 3
    (cap3,) = [s for s in samples if s.sample_id == "cap-3"]
    assert cap3.invalid and cap3.judge is not None and cap3.judge.verdict == "__invalid__"


def test_lm_eval_samples(tmp_path: Path) -> None:
    records, samples = collected("lm_eval", tmp_path)
    assert {s.model for s in samples} == {"keyed"}
    expected = {
        ("qa_capitals", ""): (CAPS, {"cap-3", "cap-5"}),
        ("mcq_science_en", ""): (SCIS, {"sci-2"}),
        ("qa_zh", ""): (ZHS, set()),
        ("ceval_mini", "computer_network"): ([f"computer_network-{i}" for i in range(4)], {"computer_network-1"}),
    }
    for key, (ids, bad) in expected.items():
        cell = scores(samples, primary(records, "keyed", *key))
        assert (sorted(cell), wrong(cell)) == (sorted(ids), bad), key
    assert assert_cells_are_sample_means(records, samples) >= 5


def test_alpaca_eval_samples(tmp_path: Path) -> None:
    records, samples = collected("alpaca_eval", tmp_path)
    assert {s.model for s in samples} == {"longer", "shorter"}  # mute: every judgement unparsed, a failed cell
    for model, win in (("longer", 1.0), ("shorter", 0.0)):
        cell = scores(samples, primary(records, model, "open_instructions"))
        # The haiku's judgement did not parse: invalid and unscored, left out as AlpacaEval leaves it out.
        assert cell == {i: (None if i == "ins-1" else win) for i in INS}
        assert {s.sample_id for s in samples if s.model == model and s.invalid} == {"ins-1"}
    assert assert_cells_are_sample_means(records, samples) == 2

"""Checks shared by the framework tests: a run's stored per-sample rows against its records."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridges.records import Record, Sample
from leaderboards.store import ResultsStore


def cell_samples(db: Path, record: Record) -> list[Sample]:
    """The stored samples behind one record: its run, model, framework, benchmark and subset."""
    return ResultsStore(db).samples(
        model=record.model,
        framework=record.framework,
        benchmark=record.benchmark,
        subset=record.subset,
        run_id=record.run_id,
    )


def assert_key_pattern(db: Path, record: Record, ids: list[str], wrong: set[str]) -> list[Sample]:
    """The record's samples are exactly `ids`, scored 0 on `wrong` and 1 elsewhere, and the record's
    value is the mean of those scores (on the record's scale: OpenCompass writes 0-100)."""
    samples = cell_samples(db, record)
    scores = {s.sample_id: s.scores.get(record.metric) for s in samples}
    assert sorted(scores) == sorted(ids), (record.benchmark, record.subset)
    assert len(samples) == len(ids)  # one row per sample
    assert {i: v for i, v in scores.items() if v != 1.0} == dict.fromkeys(wrong, 0.0), (record.benchmark, record.subset)
    assert record.value is not None
    mean = sum(v for v in scores.values() if v is not None) / len(scores)
    assert mean * record.scale == pytest.approx(record.value, abs=0.005)  # OpenCompass's summary rounds to 2 places
    return samples

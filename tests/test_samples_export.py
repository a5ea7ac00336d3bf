"""Every Eval Ever instance-level JSONL from stored samples: valid against the shared schema, keyed to
the aggregate documents beside it; the shared-shape validation refuses what jsonschema refuses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jsonschema import Draft7Validator

from leaderboards.board import open_board
from leaderboards.every_eval_ever import INSTANCE_SCHEMA_FILE, SCHEMA_FILE, validate
from leaderboards.publish import publish
from leaderboards.testing import sample_records, sample_samples, sample_store
from tests.conftest import ROOT

SHARED = ROOT.parent / "shared" / "every_eval_ever" / "instance_level_eval.schema.json"


def test_instance_level_jsonl_validates_and_points_at_its_aggregate(tmp_path: Path) -> None:
    sample_store(tmp_path / "r.sqlite")
    out = publish(open_board(tmp_path / "r.sqlite"), tmp_path / "board").out / "every_eval_ever"
    bundled = json.loads(INSTANCE_SCHEMA_FILE.read_text(encoding="utf-8"))
    if SHARED.exists():  # the bundled copy is the shared schema, unchanged
        assert bundled == json.loads(SHARED.read_text(encoding="utf-8"))
    validator = Draft7Validator(bundled)
    lines = 0
    for path in sorted(out.glob("*.samples.jsonl")):
        aggregate = json.loads(path.with_name(path.name.replace(".samples.jsonl", ".json")).read_text("utf-8"))
        result_ids = {r["evaluation_result_id"] for r in aggregate["evaluation_results"]}
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            assert list(validator.iter_errors(row)) == []
            assert row["evaluation_id"] == aggregate["evaluation_id"]
            assert row["evaluation_result_id"] in result_ids
            lines += 1
    assert lines == len(sample_samples(sample_records()))
    smol = [
        json.loads(line)
        for path in out.glob("*lm_eval__smollm2-135m-*.samples.jsonl")
        for line in path.read_text(encoding="utf-8").splitlines()
    ]
    capitals = [r for r in smol if r["evaluation_name"] == "qa_capitals"]
    assert [(r["sample_id"], r["evaluation"]["score"]) for r in capitals][:3] == [
        ("cap-1", 0.0),
        ("cap-2", 0.0),
        ("cap-3", 1.0),
    ]
    assert capitals[0]["output"]["raw"] == [" Paris."] and capitals[0]["answer_attribution"][0]["extracted_value"] == "Paris."
    assert capitals[0]["input"]["raw"].endswith("Question: What is the capital of France?\nAnswer:")


def test_shared_shape_validation_still_refuses_a_bad_value() -> None:
    good = {
        "schema_version": "0.3.0",
        "evaluation_id": "e",
        "model_id": "m",
        "evaluation_name": "n",
        "sample_id": "s",
        "interaction_type": "single_turn",
        "input": {"raw": "q", "reference": ["a"]},
        "output": {"raw": ["a"]},
        "answer_attribution": [],
        "evaluation": {"score": 1.0, "is_correct": True},
    }
    validate(good, "good", INSTANCE_SCHEMA_FILE)
    validate({**good, "sample_id": "another"}, "same shape", INSTANCE_SCHEMA_FILE)
    with pytest.raises(ValueError, match="interaction_type"):
        validate({**good, "interaction_type": "chatty"}, "bad enum", INSTANCE_SCHEMA_FILE)
    with pytest.raises(ValueError, match="score"):
        validate({**good, "evaluation": {"score": "1", "is_correct": True}}, "bad type", INSTANCE_SCHEMA_FILE)
    with pytest.raises(ValueError, match="output"):
        validate({**good, "output": None}, "single turn needs output", INSTANCE_SCHEMA_FILE)
    assert SCHEMA_FILE != INSTANCE_SCHEMA_FILE

"""`benchbridge run` with a model served by an engine (here the stand-in of `tests/_standin_engine.py`, as
vLLM's server takes the same flags and answers the same API): the server is started for the run, a real
framework asks it through the model layer, and it is gone when the run ends."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from bridges import load_config, run
from tests.conftest import DATASETS

STANDIN = Path(__file__).with_name("_standin_engine.py")


@pytest.mark.framework
def test_a_served_model_answers_every_framework_through_the_layer(tmp_path: Path) -> None:
    (tmp_path / "weights").mkdir()
    qa = DATASETS / "qa_capitals"
    serve = {
        "engine": "vllm",
        "command": [sys.executable, str(STANDIN)],
        "args": {"answer_key": str(qa), "wrong_ids": "cap-3,cap-5", "warmup_s": 1.0},
    }
    path = tmp_path / "run.yaml"
    path.write_text(
        f"name: served\nmodels:\n  - {{name: big, kind: hf, path: ./weights, serve: {json.dumps(serve)}}}\n"
        f"datasets:\n  - path: {qa}\nframeworks:\n  openai_evals: {{datasets: {{qa_capitals: [match]}}}}\n",
        encoding="utf-8",
    )
    outcome = run(load_config(path))
    assert outcome.ok, [f.error for f in outcome.frameworks]
    (accuracy,) = [r for f in outcome.frameworks for r in f.records if r.metric == "match_accuracy"]
    assert (accuracy.model, accuracy.value) == ("big", pytest.approx(6 / 8))  # the engine's answers, 2 wrong
    log = (outcome.run_dir / "serve-big.log").read_text()
    assert "--served-model-name" in log and "***" in log  # its flags, with the run's key masked
    loads = outcome.run_dir / "model_loads.jsonl"
    assert not loads.exists() or "hf:" not in loads.read_text()  # the weights were never loaded in-process

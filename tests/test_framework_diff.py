"""Why frameworks disagree, sample by sample, on a real run of three frameworks (issue 13).

One `python` model answers from the key, in a sentence unless the prompt ends in "Answer:". On
qa_capitals every framework sends the same messages and gets the same sentence, which lm-eval's
exact match and OpenCompass's EMEvaluator score 0 and evals' Includes 1: the metric. On
mcq_science_en lm-eval's prompt ends in "Answer:" and gets the bare letter; OpenCompass and evals
ask otherwise and get the sentence: the prompt.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from bridges.cli import main
from leaderboards.evidence import CAUSE_METRIC, CAUSE_PROMPT
from tests.conftest import DATASETS

DATASET_NAMES = ["qa_capitals", "mcq_science_en"]


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("diff")
    paths = [str(DATASETS / d) for d in DATASET_NAMES]
    model = {
        "name": "wordy",
        "kind": "python",
        "target": "tests._diff_models:WordyModel",
        "args": {"datasets": paths},
        "system_prompt": "Be brief.",  # added by the model layer in every framework, so in every sample's input
    }
    cfg = {
        "name": "diff",
        # native: each framework's own prompt (the mcq difference below); parity: tests/test_parity.py
        "prompt_mode": "native",
        "work_dir": str(folder / "runs"),
        "models": [model],
        "datasets": [{"path": p} for p in paths],
        "frameworks": {
            "opencompass": {},
            "lm_eval": {},
            "openai_evals": {"datasets": {"qa_capitals": ["match", "includes"], "mcq_science_en": ["match"]}},
        },
    }
    path = folder / "diff.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    assert main(["run", str(path)]) == 0
    return path


def diff(config: Path, benchmark: str, capsys: pytest.CaptureFixture[str]) -> list[dict]:
    capsys.readouterr()
    args = ["samples", str(config), "--model", "wordy", "--benchmark", benchmark, "--diff-frameworks", "--json"]
    assert main(args) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.framework
def test_same_output_scored_differently_is_the_metric(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    found = diff(config, "qa_capitals", capsys)
    assert sorted(d["sample_id"] for d in found) == [f"cap-{i}" for i in range(1, 9)]
    assert {d["cause"] for d in found} == {CAUSE_METRIC}
    (cap1,) = [d for d in found if d["sample_id"] == "cap-1"]
    fw = cap1["frameworks"]
    assert {f: (v["metric"], v["score"]) for f, v in fw.items()} == {
        "lm_eval": ("exact_match,strip", 0.0),
        "opencompass": ("exact_match", 0.0),
        "openai_evals": ("includes_accuracy", 1.0),
    }
    assert {v["output"] for v in fw.values()} == {"The answer is Paris."}
    assert {v["input"] for v in fw.values()} == {
        "system: Be brief.\n\nAnswer with the name of the city only.\nuser: What is the capital of France?"
    }


@pytest.mark.framework
def test_different_answers_to_different_prompts_are_the_prompt(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    found = diff(config, "mcq_science_en", capsys)
    assert sorted(d["sample_id"] for d in found) == [f"sci-{i}" for i in range(1, 9)]
    assert {d["cause"] for d in found} == {CAUSE_PROMPT}
    (sci1,) = [d for d in found if d["sample_id"] == "sci-1"]
    fw = sci1["frameworks"]
    assert {f: (v["output"], v["extracted"], v["score"]) for f, v in fw.items()} == {
        "lm_eval": ("B", "B", 1.0),  # its prompt ends in "Answer:"
        "opencompass": ("The answer is B.", "B", 1.0),  # its postprocessor extracts the option
        "openai_evals": ("The answer is B.", "The answer is B.", 0.0),  # Match: the text must start with B
    }
    assert fw["lm_eval"]["input"].rstrip().endswith("Answer:")
    assert not fw["openai_evals"]["input"].rstrip().endswith("Answer:")


@pytest.mark.framework
def test_real_samples_export_as_valid_every_eval_ever_instance_lines(config: Path) -> None:
    import jsonschema

    from leaderboards.every_eval_ever import INSTANCE_SCHEMA_FILE

    schema = json.loads(INSTANCE_SCHEMA_FILE.read_text(encoding="utf-8"))
    validator = jsonschema.validators.validator_for(schema)(schema)
    files = sorted((config.parent / "runs" / "leaderboard" / "every_eval_ever").glob("*.samples.jsonl"))
    assert [f.name.split("__")[1] for f in files] == ["lm_eval", "openai_evals", "opencompass"]
    lines = [json.loads(line) for f in files for line in f.read_text(encoding="utf-8").splitlines()]
    for line in lines:  # every line, each checked whole (publish checks one per shape)
        assert not list(validator.iter_errors(line)), line["sample_id"]
    # 16 samples per framework; evals scores qa_capitals twice (match, includes): one line per metric.
    assert len(lines) == 16 + 16 + 24
    assert {(x["evaluation_result_id"], x["evaluation"]["score"]) for x in lines if x["sample_id"] == "cap-1"} == {
        ("qa_capitals/exact_match,strip", 0.0),
        ("qa_capitals/exact_match", 0.0),
        ("qa_capitals/match_accuracy", 0.0),
        ("qa_capitals/includes_accuracy", 1.0),
    }

"""A team's own OpenCompass python config through `benchbridge run` (`frameworks.opencompass.configs`):
its datasets kept as written, its models replaced by benchbridge's deterministic one, exact scores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bridges.cli import main
from leaderboards.store import ResultsStore

QUESTIONS = [("France", "Paris"), ("Japan", "Tokyo"), ("Italy", "Rome"), ("Egypt", "Cairo")]


def team_config(root: Path) -> Path:
    data = root / "team" / "capitals.jsonl"
    data.parent.mkdir()
    data.write_text(
        "".join(json.dumps({"question": f"What is the capital of {c}?", "answer": city}) + "\n" for c, city in QUESTIONS),
        encoding="utf-8",
    )
    config = root / "team" / "eval_team.py"
    config.write_text(
        "# the team's config, as they run it with `opencompass eval_team.py`\n"
        f"datasets = [dict(abbr='team_capitals', path={str(data)!r}, data_type='qa', infer_method='gen')]\n"
        "models = [dict(abbr='their-gpu-model', type='opencompass.models.HuggingFacewithChatTemplate',"
        " path='/models/not-here', max_out_len=16, batch_size=1, run_cfg=dict(num_gpus=1))]\n",
        encoding="utf-8",
    )
    return config


@pytest.mark.framework
def test_team_config_runs_with_our_model_and_exact_scores(tmp_path: Path) -> None:
    team_config(tmp_path)
    config = tmp_path / "byo.yaml"
    config.write_text(
        "name: byo\nwork_dir: work\nmodels:\n  - {name: det, kind: python, target: tests._byo_models:Deterministic}\n"
        "frameworks:\n  opencompass:\n    configs: [team/eval_team.py]\n",
        encoding="utf-8",
    )
    assert main(["run", str(config), "--no-publish"]) == 0
    store = ResultsStore(tmp_path / "work" / "results.sqlite")
    records = store.records()
    assert {r.model for r in records} == {"det"}  # the config's own model was replaced
    (primary,) = [r for r in records if r.primary]
    # Paris and Tokyo right; Milan and Atlantis wrong: 50.00 on OpenCompass's 0-100 scale
    assert (primary.benchmark, primary.metric, primary.value, primary.scale) == ("team_capitals", "accuracy", 50.0, 100)
    assert primary.status == "ok" and primary.n_samples == 4
    samples = store.samples()
    assert sorted((s.output, s.scores["accuracy"]) for s in samples) == [
        ("Atlantis", 0.0), ("Milan", 0.0), ("Paris", 1.0), ("Tokyo", 1.0)
    ]  # fmt: skip
    # the outputs folder OpenCompass wrote, collected as a report made elsewhere: the same numbers
    (outputs,) = (tmp_path / "work").glob("*/opencompass/outputs")
    assert main(["collect", "opencompass", str(outputs), "--config", str(config), "--model", "det-collected"]) == 0
    (again,) = [r for r in store.records() if r.model == "det-collected" and r.primary]
    assert (again.benchmark, again.metric, again.value, again.n_samples) == ("team_capitals", "accuracy", 50.0, 4)
    assert len([s for s in store.samples() if s.model == "det-collected"]) == 4


def test_a_config_that_is_not_a_python_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "eval_team.yaml").write_text("datasets: []\n", encoding="utf-8")
    config = tmp_path / "byo.yaml"
    config.write_text(
        "name: byo\nmodels:\n  - {name: det, kind: python, target: tests._byo_models:Deterministic}\n"
        "frameworks:\n  opencompass:\n    configs: [eval_team.yaml]\n",
        encoding="utf-8",
    )
    assert main(["prepare", str(config), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "frameworks.opencompass.configs[0]: " in err and "(.py)" in err
    assert not (tmp_path / "out").exists()

"""A team's own lm-eval task folder through `benchbridge run` (`frameworks.lm_eval.include_paths` +
`tasks`): the task YAML as written, a deterministic model (tests/_byo_models.py), exact scores."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from bridges.cli import main
from leaderboards.store import ResultsStore

QUESTIONS = [("France", "Paris"), ("Japan", "Tokyo"), ("Italy", "Rome"), ("Egypt", "Cairo")]


def task_folder(root: Path) -> Path:
    folder = root / "team_tasks"
    folder.mkdir()
    data = folder / "capitals.jsonl"
    data.write_text("".join(json.dumps({"country": c, "city": city}) + "\n" for c, city in QUESTIONS), "utf-8")
    (folder / "capitals.yaml").write_text(
        "task: team_capitals\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    test: {data}\ntest_split: test\noutput_type: generate_until\n"
        'doc_to_text: "What is the capital of {{country}}?"\ndoc_to_target: "{{city}}"\n'
        'generation_kwargs:\n  until: ["\\n"]\n'
        "metric_list:\n  - metric: exact_match\n    aggregation: mean\n    higher_is_better: true\n"
        "metadata:\n  version: 1.0\n",
        encoding="utf-8",
    )
    return folder


@pytest.mark.framework
def test_team_task_folder_runs_as_written_with_exact_scores(tmp_path: Path) -> None:
    task_folder(tmp_path)
    config = tmp_path / "team.yaml"
    config.write_text(
        "name: team\nwork_dir: work\nmodels:\n  - {name: det, kind: python, target: tests._byo_models:Deterministic}\n"
        "frameworks:\n  lm_eval:\n    include_paths: [team_tasks]\n    tasks: [team_capitals]\n",
        encoding="utf-8",
    )
    assert main(["run", str(config), "--no-publish"]) == 0
    store = ResultsStore(tmp_path / "work" / "results.sqlite")
    (record,) = [r for r in store.records() if r.primary]
    # Paris and Tokyo right; the model says Milan and Atlantis for Italy and Egypt
    assert (record.model, record.benchmark, record.metric, record.value) == ("det", "team_capitals", "exact_match", 0.5)
    assert record.n_samples == 4
    samples = store.samples()
    assert sorted((s.output, s.scores["exact_match"]) for s in samples) == [
        ("Atlantis", 0.0), ("Milan", 0.0), ("Paris", 1.0), ("Tokyo", 1.0)
    ]  # fmt: skip


def test_unknown_task_name_is_one_line_with_did_you_mean(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    task_folder(tmp_path)
    config = tmp_path / "team.yaml"
    config.write_text(
        "name: team\nwork_dir: work\nmodels:\n  - {name: det, kind: python, target: tests._byo_models:Deterministic}\n"
        "frameworks:\n  lm_eval:\n    include_paths: [team_tasks]\n    tasks: [team_capital]\n",
        encoding="utf-8",
    )
    assert main(["prepare", str(config), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "frameworks.lm_eval.tasks[0]: 'team_capital' is no task or group in include_paths" in err
    assert "did you mean 'team_capitals'?" in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "work").exists()


def lm_eval_commands(readme: str) -> list[list[str]]:
    """Every `lm_eval ...` command line of a README's sh blocks, continuation lines joined, as argv."""
    joined = readme.replace("\\\n", " ")
    return [shlex.split(line) for line in joined.splitlines() if line.startswith("lm_eval ")]


def test_prepared_lm_eval_commands_name_the_team_folder_of_every_team_task(tmp_path: Path) -> None:
    """The by-hand commands `prepare` writes find the team's tasks: lm-eval's own parser reads each one
    (its one --include_path: a second would replace the first) and its task index holds every task named."""
    from lm_eval._cli import HarnessCLI
    from lm_eval.tasks import TaskManager

    from tests.conftest import DATASETS

    team = task_folder(tmp_path)
    config = tmp_path / "team.yaml"
    config.write_text(
        f"name: team\nwork_dir: work\nprompt_mode: native\ndatasets:\n  - {{path: {DATASETS / 'qa_capitals'}}}\n"
        f"models:\n  - {{name: tiny, kind: hf, path: {tmp_path}}}\n"
        "  - {name: det, kind: python, target: tests._byo_models:Deterministic}\n"
        "frameworks:\n  lm_eval:\n    include_paths: [team_tasks]\n    tasks: [team_capitals]\n",
        encoding="utf-8",
    )
    assert main(["prepare", str(config), "--out", str(tmp_path / "out")]) == 0
    tasks_dir = tmp_path / "out" / "lm_eval" / "tasks"
    readme = (tasks_dir / "README.md").read_text(encoding="utf-8")
    assert f"--include_path {team}" in readme
    commands = lm_eval_commands(readme)
    assert len(commands) == 4  # tiny's two (ours, the team's), and the two for any model
    parser = HarnessCLI()._parser
    found: dict[str, str] = {}
    for argv in commands:
        args = parser.parse_args(["run", *argv[1:]])
        index = TaskManager(include_path=args.include_path, include_defaults=False).all_tasks
        tasks = [args.tasks] if isinstance(args.tasks, str) else args.tasks  # lm-eval splits at commas
        for name in (n for item in tasks for n in item.split(",")):
            assert name in index, (name, args.include_path)
            found[name] = args.include_path
    assert found == {"bb_qa_capitals": str(tasks_dir), "team_capitals": str(team)}
    job = json.loads((tmp_path / "out" / "lm_eval" / "jobs" / "tiny.json").read_text(encoding="utf-8"))
    assert set(job["tasks"]) == set(found)  # the by-hand commands run what the run runs

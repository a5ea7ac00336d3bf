"""A team's own OpenAI evals registry run as written (`frameworks.openai_evals.registries` + `evals`):
a match eval, evals' built-in `fact` spec and the team's own Chinese `fact_zh` spec, and eval sets,
with a deterministic model and grader (tests/_byo_models.py). `benchbridge run` must give exactly the
accuracy and grade counts that `oaievalset` gives on the same registry by hand.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from bridges.cli import main
from leaderboards.store import ResultsStore

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = [("France", "Paris"), ("Japan", "Tokyo"), ("Italy", "Rome"), ("Egypt", "Cairo")]

EVALS_YAML = """\
capitals.match:
  id: capitals.match.dev.v0
  metrics: [accuracy]
capitals.match.dev.v0:
  class: evals.elsuite.basic.match:Match
  args:
    samples_jsonl: capitals/samples.jsonl
capitals.fact:
  id: capitals.fact.dev.v0
capitals.fact.dev.v0:
  class: evals.elsuite.modelgraded.classify:ModelBasedClassify
  args:
    samples_jsonl: capitals/samples.jsonl
    eval_type: cot_classify
    modelgraded_spec: fact
capitals.fact_zh:
  id: capitals.fact_zh.dev.v0
capitals.fact_zh.dev.v0:
  class: evals.elsuite.modelgraded.classify:ModelBasedClassify
  args:
    samples_jsonl: capitals/samples.jsonl
    modelgraded_spec: fact_zh
"""

FACT_ZH = """\
fact_zh:
  prompt: |-
    比较提交的答案与专家答案。
    ************
    [问题]：{input}
    ************
    [专家答案]：{ideal}
    ************
    [提交答案]：{completion}
    ************
    (A) 子集 (B) 超集 (C) 相同 (D) 矛盾 (E) 差异无关紧要
    先写推理，然后在单独一行只写一个选项字母，最后一行再重复一遍。
  eval_type: cot_classify
  choice_strings: ABCDE
  choice_scores: {A: 1.0, B: 1.0, C: 1.0, D: 0.0, E: 1.0}
  input_outputs:
    input: completion
"""


def seed_registry(root: Path, fn: str) -> Path:
    """The seed workflow's layout: data/, evals/, modelgraded/ (their zh spec), eval_sets/, completion_fns/."""
    reg = root / "registry"
    (reg / "data" / "capitals").mkdir(parents=True)
    rows = [
        {"input": [{"role": "system", "content": "Answer with the city only."},
                   {"role": "user", "content": f"What is the capital of {country}?"}], "ideal": city}
        for country, city in QUESTIONS
    ]  # fmt: skip
    (reg / "data" / "capitals" / "samples.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
    )
    for folder, name, text in [
        ("evals", "capitals.yaml", EVALS_YAML),
        ("modelgraded", "fact_zh.yaml", FACT_ZH),
        ("eval_sets", "team.yaml", "team:\n  evals: [capitals.match]\nteam-graded:\n  evals: [capitals.fact, capitals.fact_zh]\n"),
        ("completion_fns", "det.yaml", f"{fn}:\n  class: tests._byo_models:DeterministicFn\n"),
    ]:
        (reg / folder).mkdir(exist_ok=True)
        (reg / folder / name).write_text(text, encoding="utf-8")
    return reg


def final_reports_by_hand(reg: Path, fn: str, tmp_path: Path) -> dict[str, dict[str, float]]:
    """`oaievalset` as the team runs it, records in /tmp/evallogs/ named by the completion function."""
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "OPENAI_API_KEY": "dummy", "USE_TF": "0",
           "PYTHONPATH": str(ROOT)}  # fmt: skip
    for models, eval_set in [(fn, "team"), (f"{fn},{fn}", "team-graded")]:
        subprocess.run(
            [str(bin_dir / "oaievalset"), models, eval_set, "--registry_path", str(reg), "--no-resume"],
            check=True, cwd=tmp_path, env=env, capture_output=True, timeout=900,
        )  # fmt: skip
    reports = {}
    for path in Path("/tmp/evallogs").glob(f"*{fn}*.jsonl"):
        lines = [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]
        spec = next(x["spec"] for x in lines if "spec" in x)
        reports[spec["eval_name"]] = next(x["final_report"] for x in lines if "final_report" in x)
        (tmp_path / "evallogs").mkdir(exist_ok=True)
        path.rename(tmp_path / "evallogs" / path.name)  # kept for `benchbridge collect`
    return reports


@pytest.mark.framework
def test_seed_registry_through_run_equals_oaievalset_by_hand(tmp_path: Path) -> None:
    fn = f"det-{uuid.uuid4().hex[:8]}"
    reg = seed_registry(tmp_path, fn)
    by_hand = final_reports_by_hand(reg, fn, tmp_path)
    assert set(by_hand) == {"capitals.match.dev.v0", "capitals.fact.dev.v0", "capitals.fact_zh.dev.v0"}
    config = tmp_path / "team.yaml"
    config.write_text(
        "name: team\nwork_dir: work\nmodels:\n"
        "  - {name: det, kind: python, target: tests._byo_models:Deterministic}\n"
        "  - {name: judge, kind: python, target: tests._byo_models:Deterministic}\n"
        "frameworks:\n  openai_evals:\n    registries: [registry]\n    evals: [team, team-graded]\n    grader: judge\n",
        encoding="utf-8",
    )
    assert main(["run", str(config), "--no-publish"]) == 0
    store = ResultsStore(tmp_path / "work" / "results.sqlite")
    got = {(r.benchmark, r.metric): r for r in store.records() if r.model == "det"}
    # exactly the expected numbers...
    assert got[("capitals", "match_accuracy")].value == 0.5  # Paris, Tokyo right; Milan, Atlantis wrong
    for spec in ("fact", "fact_zh"):
        counts = {m.removeprefix(f"{spec}_count_"): r.value for (_, m), r in got.items() if m.startswith(f"{spec}_count_")}
        assert counts == {"C": 2, "D": 1, "invalid": 1}, spec
        assert got[("capitals", f"{spec}_count_C")].judge == "judge"
    assert got[("capitals", "fact_zh_score")].value == 0.5  # C, C = 1; D and the invalid grade = 0
    # ...and the very numbers oaievalset wrote by hand on the same registry
    for eval_name, report in by_hand.items():
        split = eval_name.split(".")[1]
        for key, value in report.items():
            if key.startswith("usage_") or key == "boostrap_std":  # a random resampling: differs run to run
                continue
            metric = f"{split}_{key.replace('counts/', 'count_').replace('__invalid__', 'invalid')}"
            assert got[("capitals", metric)].value == value, (eval_name, key)
    samples = [s for s in store.samples() if s.model == "det"]
    assert len(samples) == 4  # one row per sample with every eval's scores
    # the records oaievalset wrote by hand, collected onto the same board with the numbers they hold
    assert main(["collect", "openai_evals", str(tmp_path / "evallogs"), "--config", str(config), "--model", "by-hand"]) == 0
    collected = {(r.benchmark, r.metric): r.value for r in store.records() if r.model == "by-hand"}
    assert collected[("capitals", "match_accuracy")] == 0.5
    assert collected[("capitals", "fact_zh_count_C")] == 2 and collected[("capitals", "fact_zh_score")] == 0.5
    assert {k: v for k, v in collected.items() if "bootstrap" not in k[1]} == {
        k: r.value for k, r in got.items() if "bootstrap" not in k[1]
    }
    assert sorted(s.scores["match_accuracy"] for s in samples) == [0.0, 0.0, 1.0, 1.0]
    assert sum(s.invalid for s in samples) == 1


@pytest.mark.framework
def test_an_imported_registry_keeps_its_evals(tmp_path: Path) -> None:
    """`datasets import --from openai-evals REGISTRY` then a run: the registry's match and fact evals with
    its own grader spec run, not benchbridge's default match/includes/fuzzy_match."""
    reg = seed_registry(tmp_path, f"det-{uuid.uuid4().hex[:8]}")
    assert main(["datasets", "import", "--from", "openai-evals", str(reg), "--out", str(tmp_path / "datasets")]) == 0
    config = tmp_path / "imported.yaml"
    config.write_text(
        "name: imported\nwork_dir: work\nmodels:\n"
        "  - {name: det, kind: python, target: tests._byo_models:Deterministic}\n"
        "  - {name: judge, kind: python, target: tests._byo_models:Deterministic}\n"
        "datasets:\n  - path: datasets/capitals\n"
        "frameworks:\n  openai_evals:\n    grader: judge\n",
        encoding="utf-8",
    )
    assert main(["run", str(config), "--no-publish"]) == 0
    got = {(r.benchmark, r.metric): r.value for r in ResultsStore(tmp_path / "work" / "results.sqlite").records()}
    assert got[("capitals", "match_accuracy")] == 0.5
    assert {m: v for (_, m), v in got.items() if m.startswith("fact_zh_count_")} == {
        "fact_zh_count_C": 2, "fact_zh_count_D": 1, "fact_zh_count_invalid": 1
    }  # fmt: skip
    assert not any(m.startswith(("includes_", "fuzzy_match_")) for _, m in got)  # our defaults did not run

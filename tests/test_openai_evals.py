"""OpenAI evals bridge: registries from our datasets, real `oaieval` runs, numbers known in advance.

The framework tests share one run per config (module fixtures) and assert many things on it:

- `keyed_run`: `keyed` (an AnswerKeyModel with known wrong answers) on qa_capitals (match, includes,
  fuzzy_match, fact, closedqa), qa_zh (includes, fact_zh, closedqa_zh) and mcq_science_en (match),
  graded by `grader` (RuleGrader: "same as the reference" -> C / Y, else D / N). Then run again:
  every eval is reused, not rerun.
- `failing_run`: `keyed` and `broken` (its completion function raises) on one eval each: the broken
  one is a failed record, the other is kept; exit code 1. Rerun: the finished one is reused, the
  failed one runs again; `--force` reruns both.
- the tiny random HF model on one small eval.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridges import BenchbridgeError, load_config
from bridges.cli import main
from bridges.datasets import QaSample, import_dataset, import_source, load_dataset
from bridges.frameworks import RunContext
from bridges.frameworks.openai_evals.bridge import OpenAIEvalsBridge, read_record_file
from bridges.records import Record
from tests._sample_checks import assert_key_pattern, cell_samples
from tests.conftest import DATASETS

WRONG = ["cap-3", "zh-3", "zh-5", "sci-2", "sci-5"]  # capitals 7/8, qa_zh 4/6, mcq 6/8
KEYED_DATASETS = ["qa_capitals", "qa_zh", "mcq_science_en"]
METHODS = {
    "qa_capitals": ["match", "includes", "fuzzy_match", "fact", "closedqa"],
    "qa_zh": ["includes", "fact_zh", "closedqa_zh"],
}


def keyed_model(name: str = "keyed", datasets: list[str] | None = None) -> dict[str, Any]:
    paths = [str(DATASETS / d) for d in KEYED_DATASETS] if datasets is None else datasets
    return {
        "name": name,
        "kind": "python",
        "target": "bridges.testing:AnswerKeyModel",
        "args": {"datasets": paths, "wrong_ids": WRONG},
    }


# Gives no verdict on cap-3 (evals counts it `__invalid__`); C/D, Y/N by exact answer otherwise.
GRADER = {
    "name": "grader",
    "kind": "python",
    "target": "bridges.testing:RuleGrader",
    "args": {"abstain_on": ["capital of Italy"]},
}
# Passes the one-prompt check before the run; its completion function raises on every sample.
BROKEN = {"name": "broken", "kind": "python", "target": "tests._evals_models:CrashOnQuestions"}


def write_config(
    folder: Path, models: list[dict], options: dict, datasets: list[str] = KEYED_DATASETS, **extra: Any
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "name": folder.name,
        "work_dir": str(folder / "runs"),
        "models": models,
        "datasets": [{"path": str(DATASETS / d)} for d in datasets],
        "frameworks": {"openai_evals": options},
        **extra,
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def stored(config_path: Path) -> dict[str, list[Record]]:
    """Records in the config's results store, by run id, in run order."""
    db = load_config(config_path).results_db
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT record FROM records ORDER BY id").fetchall()
    runs: dict[str, list[Record]] = {}
    for (raw,) in rows:
        r = Record.model_validate_json(raw)
        runs.setdefault(r.run_id, []).append(r)
    return runs


def by_metric(records: list[Record], model: str = "keyed") -> dict[tuple[str, str], Record]:
    return {(r.benchmark, r.metric): r for r in records if r.model == model}


def bridge_for(config_path: Path, force: bool = False) -> OpenAIEvalsBridge:
    config = load_config(config_path)
    return OpenAIEvalsBridge(RunContext(config=config, run_id="test", config_hash="h", force=force))


# ------------------------------------------------------------------ registry (no framework run)


def test_prepare_writes_a_complete_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BB_TEST_SECRET", "sk-very-secret-value")
    api = {"name": "remote", "kind": "openai", "model": "gpt-4o", "api_key_env": "BB_TEST_SECRET"}
    cfg = write_config(tmp_path / "cfg", [keyed_model(), GRADER, api], {"grader": "grader", "datasets": METHODS})
    out = tmp_path / "native"
    assert main(["prepare", str(cfg), "--out", str(out), "--only", "openai_evals"]) == 0
    reg = out / "openai_evals"

    capitals = [json.loads(x) for x in (reg / "data/qa_capitals/samples.jsonl").read_text("utf-8").splitlines()]
    assert capitals[0]["input"] == [
        {"role": "system", "content": "Answer with the name of the city only."},
        {"role": "user", "content": "What is the capital of France?"},
    ]
    assert capitals[0]["ideal"] == "Paris"
    zh = [json.loads(x) for x in (reg / "data/qa_zh/samples.jsonl").read_text("utf-8").splitlines()]
    assert zh[1]["ideal"] == ["12", "十二"]  # every acceptable answer
    mcq = json.loads((reg / "data/mcq_science_en/samples.jsonl").read_text("utf-8").splitlines()[0])
    assert mcq["ideal"] == "B" and "\nA. Venus\nB. Mercury\nC. Earth\nD. Mars\n" in mcq["input"][0]["content"]

    evals = yaml.safe_load((reg / "evals/qa_capitals.yaml").read_text("utf-8"))
    assert evals["qa_capitals.match"]["class"] == "evals.elsuite.basic.match:Match"
    assert evals["qa_capitals.includes"]["class"] == "evals.elsuite.basic.includes:Includes"
    assert evals["qa_capitals.fuzzy_match"]["class"] == "evals.elsuite.basic.fuzzy_match:FuzzyMatch"
    fact = evals["qa_capitals.fact"]
    assert fact["class"] == "evals.elsuite.modelgraded.classify:ModelBasedClassify"
    assert fact["args"] == {
        "samples_jsonl": "qa_capitals/samples.jsonl",
        "modelgraded_spec": "bb_fact",
        "eval_type": "cot_classify",
    }
    zh_evals = yaml.safe_load((reg / "evals/qa_zh.yaml").read_text("utf-8"))
    # The Chinese spec carries its own Chinese cot_classify answer prompt, so the eval sets no eval_type
    # (which would append evals' English one).
    assert "eval_type" not in zh_evals["qa_zh.fact_zh"]["args"]
    spec_zh = yaml.safe_load((reg / "modelgraded/bb_fact_zh.yaml").read_text("utf-8"))["bb_fact_zh"]
    assert spec_zh["eval_type"] == "cot_classify" and "一步一步" in spec_zh["prompt"]
    assert spec_zh["choice_scores"] == {"A": 0.5, "B": 1.0, "C": 1.0, "D": 0.0, "E": 1.0}
    for spec in ("bb_fact", "bb_closedqa", "bb_closedqa_zh"):
        assert (reg / "modelgraded" / f"{spec}.yaml").is_file()
    # mcq datasets default to match only
    assert list(yaml.safe_load((reg / "evals/mcq_science_en.yaml").read_text("utf-8"))) == ["mcq_science_en.match"]

    sets = yaml.safe_load((reg / "eval_sets/cfg.yaml").read_text("utf-8"))
    assert sets["cfg"]["evals"] == [
        "qa_capitals.match",
        "qa_capitals.includes",
        "qa_capitals.fuzzy_match",
        "qa_zh.includes",
        "mcq_science_en.match",
    ]
    assert sets["cfg-modelgraded"]["evals"] == [
        "qa_capitals.fact",
        "qa_capitals.closedqa",
        "qa_zh.fact_zh",
        "qa_zh.closedqa_zh",
    ]

    for name in ("keyed", "grader", "remote"):
        fn = yaml.safe_load((reg / "completion_fns" / f"{name}.yaml").read_text("utf-8"))
        assert fn[f"bb-{name}"]["class"] == "bridges.frameworks.openai_evals.completion:BenchbridgeCompletionFn"
        assert fn[f"bb-{name}"]["args"]["model"] == load_config(cfg).model(name, "x").public_dict()
    readme = (reg / "README.md").read_text("utf-8")
    assert f"oaievalset --registry_path {reg.resolve()} bb-keyed cfg --no-resume" in readme
    assert f"oaievalset --registry_path {reg.resolve()} bb-keyed,bb-grader cfg-modelgraded --no-resume" in readme
    for f in out.rglob("*"):
        if f.is_file():
            assert "sk-very-secret-value" not in f.read_text("utf-8"), f


def test_oaieval_environment_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-real-openai")
    monkeypatch.setenv("BB_TEST_SECRET", "sk-other")
    local = bridge_for(write_config(tmp_path / "local", [keyed_model()], {}))
    env = local._environment()
    assert env["OPENAI_API_KEY"] != "sk-real-openai"  # no openai model: the real key stays here
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)
    api = {"name": "remote", "kind": "openai", "model": "m", "api_key_env": "BB_TEST_SECRET"}
    remote = bridge_for(write_config(tmp_path / "remote", [keyed_model(), api], {"models": ["remote"]}))
    env = remote._environment()
    assert env["OPENAI_API_KEY"] == "sk-real-openai" and env["BB_TEST_SECRET"] == "sk-other"
    monkeypatch.delenv("BB_TEST_SECRET")
    with pytest.raises(BenchbridgeError, match=r"model remote: api_key_env: \$BB_TEST_SECRET is not set"):
        remote._environment()


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"methods": ["match", "exact"]}, r"frameworks\.openai_evals\.methods\[1\]: unknown scoring method 'exact'"),
        (
            {"datasets": {"qa_zh": ["fact_zh", "bleu"]}, "grader": "keyed"},
            r"frameworks\.openai_evals\.datasets\.qa_zh\[1\]: unknown scoring method 'bleu'",
        ),
        ({"datasets": {"boolq": ["match"]}}, r"frameworks\.openai_evals\.datasets\.boolq: no qa or mcq dataset named"),
        ({"grader": "gpt-judge"}, r"frameworks\.openai_evals\.grader: no model named 'gpt-judge'"),
        ({"methods": ["fact"]}, r"frameworks\.openai_evals\.grader: required for the model-graded method\(s\) fact"),
        ({"eval_set": "test-basic"}, r"frameworks\.openai_evals\.eval_set: 'test-basic' is a built-in evals eval set"),
    ],
)
def test_bad_options_fail_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], options: dict, expected: str
) -> None:
    import re

    cfg = write_config(tmp_path / "bad", [keyed_model()], options)
    out = tmp_path / "native"
    assert main(["prepare", str(cfg), "--out", str(out), "--only", "openai_evals"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(expected, err), err
    assert not out.exists()
    assert main(["run", str(cfg), "--only", "openai_evals"]) == 2
    assert not (tmp_path / "bad" / "runs").exists()


# ------------------------------------------------------------------ importing a team's registry


def write_registry(root: Path) -> Path:
    """A small hand-made registry: BoolQ- and WSC-like evals, a Chinese one, a cloudminds eval set."""
    boolq = [
        {
            "input": [
                {"role": "system", "content": "Read the passage, then answer True or False."},
                {"role": "user", "content": f"Passage: {p}\nQuestion: {q}?"},
            ],
            "ideal": a,
        }
        for p, q, a in [
            ("Tea is made from the leaves of a plant.", "is tea made from leaves", "True"),
            ("Penguins live mostly in the Southern Hemisphere.", "do penguins live at the north pole", "False"),
            ("The Nile flows into the Mediterranean Sea.", "does the nile flow into the mediterranean", "True"),
        ]
    ]
    wsc = [
        {
            "input": [
                {"role": "system", "content": "Say who or what the pronoun refers to."},
                {
                    "role": "system",
                    "name": "example_user",
                    "content": "The cat chased the mouse because it was hungry. it?",
                },
                {"role": "system", "name": "example_assistant", "content": "the cat"},
                {"role": "user", "content": "The trophy did not fit in the case because it was too big. it?"},
            ],
            "ideal": ["the trophy", "trophy"],
        },
        {
            "input": "The city council refused the demonstrators a permit because they feared violence. they?",
            "ideal": "the city council",
        },
    ]
    zh = [
        {"input": [{"role": "user", "content": "中国的首都是哪座城市？"}], "ideal": "北京"},
        {"input": [{"role": "user", "content": "一年有多少个月？"}], "ideal": ["12", "十二"]},
    ]
    files = {"data/boolq/samples.jsonl": boolq, "data/wsc/dev.jsonl": wsc, "data/cn/samples.jsonl": zh}
    for rel, rows in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    evals = {
        "boolq.yaml": {
            "boolq": {"id": "boolq.dev.v0", "metrics": ["accuracy"]},
            "boolq.dev.v0": {
                "class": "evals.elsuite.basic.match:Match",
                "args": {"samples_jsonl": "boolq/samples.jsonl"},
            },
            "boolq-fact": {"id": "boolq-fact.dev.v0"},
            "boolq-fact.dev.v0": {
                "class": "evals.elsuite.modelgraded.classify:ModelBasedClassify",
                "args": {
                    "samples_jsonl": "boolq/samples.jsonl",
                    "eval_type": "cot_classify",
                    "modelgraded_spec": "fact",
                },
            },
        },
        "wsc.yaml": {
            "wsc": {"id": "wsc.dev.v0"},
            "wsc.dev.v0": {
                "class": "evals.elsuite.basic.includes:Includes",
                "args": {"samples_jsonl": "wsc/dev.jsonl"},
            },
        },
        "cn.yaml": {
            "cn.dev.v0": {"class": "evals.elsuite.basic.match:Match", "args": {"samples_jsonl": "cn/samples.jsonl"}}
        },
    }
    (root / "evals").mkdir(parents=True)
    for name, data in evals.items():
        (root / "evals" / name).write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    (root / "eval_sets").mkdir()
    (root / "eval_sets" / "cloudminds.yaml").write_text(
        yaml.safe_dump({"cloudminds": {"evals": ["boolq", "wsc*"]}}), encoding="utf-8"
    )
    return root


def test_import_registry_brings_every_used_dataset(tmp_path: Path) -> None:
    reg = write_registry(tmp_path / "team-registry")
    out = tmp_path / "imported"
    assert main(["datasets", "import", "--from", "openai-evals", str(reg), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["boolq", "cn", "wsc-dev"]

    boolq = load_dataset(out / "boolq")
    assert boolq.kind == "qa" and len(boolq.samples) == 3 and boolq.card.language == "en"
    first = boolq.samples[0]
    assert isinstance(first, QaSample) and first.system == "Read the passage, then answer True or False."
    assert first.answers == ["True"]
    tags = set(boolq.card.tags)
    assert {"openai-evals:eval=boolq.dev.v0", "openai-evals:eval=boolq-fact.dev.v0"} <= tags
    assert "openai-evals:set=cloudminds" in tags  # through the alias `boolq`
    assert "spec fact" in boolq.card.description and "cloudminds" in boolq.card.description

    wsc = load_dataset(out / "wsc-dev")
    assert "openai-evals:set=cloudminds" in wsc.card.tags  # through the pattern `wsc*`
    fewshot = wsc.samples[0]
    assert isinstance(fewshot, QaSample)
    assert [m.role for m in fewshot.messages] == ["system", "user", "assistant", "user"]  # evals' example_* turns
    assert fewshot.answers == ["the trophy", "trophy"]

    cn = load_dataset(out / "cn")
    assert cn.card.language == "zh" and not any(t.startswith("openai-evals:set=") for t in cn.card.tags)

    # Round trip: the imported datasets, prepared again, give evals the same samples.
    cfg = tmp_path / "cfg" / "config.yaml"
    cfg.parent.mkdir()
    cfg.write_text(
        yaml.safe_dump(
            {
                "name": "cloudminds-again",
                "models": [
                    {
                        "name": "m",
                        "kind": "python",
                        "target": "bridges.testing:AnswerKeyModel",
                        "args": {"datasets": []},
                    }
                ],
                "datasets": [{"path": str(out / "boolq")}],
                "frameworks": {"openai_evals": {"methods": ["match"]}},
            }
        ),
        encoding="utf-8",
    )
    prep = tmp_path / "prep"
    assert main(["prepare", str(cfg), "--out", str(prep)]) == 0
    again = [json.loads(x) for x in (prep / "openai_evals/data/boolq/samples.jsonl").read_text("utf-8").splitlines()]
    original = [json.loads(x) for x in (reg / "data/boolq/samples.jsonl").read_text("utf-8").splitlines()]
    assert [(s["input"], s["ideal"]) for s in again] == [(s["input"], s["ideal"]) for s in original]


def test_import_registry_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    reg = write_registry(tmp_path / "reg")
    out = tmp_path / "imported"
    # a sample without `ideal`
    bad = reg / "data/boolq/samples.jsonl"
    bad.write_text(bad.read_text("utf-8") + json.dumps({"input": "Is water wet?"}) + "\n", encoding="utf-8")
    assert main(["datasets", "import", "--from", "openai-evals", str(reg), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"benchbridge: error: {bad}:4: ideal: missing"
    assert not out.exists()
    with pytest.raises(BenchbridgeError, match=r"samples\.jsonl:4: ideal: missing"):
        import_dataset("openai-evals", bad, "one-file")

    # an eval naming a samples file that is not there
    reg2 = write_registry(tmp_path / "reg2")
    (reg2 / "evals" / "gone.yaml").write_text(
        yaml.safe_dump(
            {
                "gone.dev.v0": {
                    "class": "evals.elsuite.basic.match:Match",
                    "args": {"samples_jsonl": "gone/samples.jsonl"},
                }
            }
        ),
        encoding="utf-8",
    )
    assert main(["datasets", "import", "--from", "openai-evals", str(reg2), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"{reg2 / 'evals' / 'gone.yaml'}: gone.dev.v0.args.samples_jsonl: gone/samples.jsonl not found" in err
    assert not out.exists()

    # not a registry at all
    with pytest.raises(BenchbridgeError, match="not an OpenAI evals registry"):
        import_source("openai-evals", tmp_path / "reg2" / "data")


# ------------------------------------------------------------------ real oaieval runs


@pytest.fixture(scope="module")
def keyed_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("oe") / "keyed"
    cfg = write_config(folder, [keyed_model(), GRADER], {"grader": "grader", "datasets": METHODS})
    first = main(["run", str(cfg), "--only", "openai_evals"])
    second = main(["run", str(cfg), "--only", "openai_evals"])
    runs = list(stored(cfg).values())
    return {"config": cfg, "codes": (first, second), "first": runs[0], "second": runs[1]}


@pytest.mark.framework
def test_rule_scored_accuracies_are_exact(keyed_run: dict[str, Any]) -> None:
    assert keyed_run["codes"] == (0, 0)
    got = by_metric(keyed_run["first"])
    for method in ("match", "includes", "fuzzy_match"):
        r = got[("qa_capitals", f"{method}_accuracy")]
        assert (r.value, r.primary, r.status, r.n_samples, r.judge) == (7 / 8, True, "ok", 8, None)
    assert got[("qa_capitals", "fuzzy_match_f1_score")].value == 7 / 8
    assert got[("qa_zh", "includes_accuracy")].value == 4 / 6
    assert got[("mcq_science_en", "match_accuracy")].value == 6 / 8
    std = got[("qa_capitals", "match_bootstrap_std")]
    assert 0 < std.value < 0.5 and not std.primary and not std.higher_is_better
    assert {r.framework for r in keyed_run["first"]} == {"openai_evals"}
    assert all(r.model == "keyed" for r in keyed_run["first"])  # the grader is not a candidate


@pytest.mark.framework
def test_model_graded_counts_and_scores(keyed_run: dict[str, Any]) -> None:
    got = by_metric(keyed_run["first"])
    expected = {
        ("qa_capitals", "fact"): ({"C": 7, "invalid": 1}, 7 / 8),  # an invalid choice scores the lowest, 0
        ("qa_capitals", "closedqa"): ({"Y": 7, "invalid": 1}, 7 / 8),
        ("qa_zh", "fact_zh"): ({"C": 4, "D": 2}, 4 / 6),
        ("qa_zh", "closedqa_zh"): ({"Y": 4, "N": 2}, 4 / 6),
    }
    for (dataset, method), (counts, score) in expected.items():
        graded = {m: r for (b, m), r in got.items() if b == dataset and m.startswith(f"{method}_")}
        assert set(graded) == {f"{method}_score"} | {f"{method}_count_{c}" for c in counts}
        main_record = graded[f"{method}_score"]
        assert (main_record.value, main_record.primary, main_record.judge) == (score, True, "grader")
        for choice, n in counts.items():
            r = graded[f"{method}_count_{choice}"]
            assert (r.value, r.scale, r.primary, r.judge) == (n, sum(counts.values()), False, "grader")
        assert all(graded[f"{method}_count_{c}"].higher_is_better is (c in "CY") for c in counts)


@pytest.mark.framework
def test_samples_are_the_key_pattern_from_the_record_events(keyed_run: dict[str, Any]) -> None:
    db = load_config(keyed_run["config"]).results_db
    got = by_metric(keyed_run["first"])
    caps, zhs = [f"cap-{i}" for i in range(1, 9)], [f"zh-{i}" for i in range(1, 7)]
    cells = {
        ("qa_capitals", "match_accuracy"): (caps, {"cap-3"}),
        ("qa_capitals", "includes_accuracy"): (caps, {"cap-3"}),
        ("qa_capitals", "fuzzy_match_accuracy"): (caps, {"cap-3"}),
        ("qa_capitals", "fact_score"): (caps, {"cap-3"}),  # the grader abstained: invalid, scored 0 by evals
        ("qa_capitals", "closedqa_score"): (caps, {"cap-3"}),
        ("qa_zh", "includes_accuracy"): (zhs, {"zh-3", "zh-5"}),
        ("qa_zh", "fact_zh_score"): (zhs, {"zh-3", "zh-5"}),
        ("mcq_science_en", "match_accuracy"): ([f"sci-{i}" for i in range(1, 9)], {"sci-2", "sci-5"}),
    }
    for key, (ids, wrong) in cells.items():
        assert_key_pattern(db, got[key], ids, wrong)
    samples = {s.sample_id: s for s in cell_samples(db, got[("qa_capitals", "match_accuracy")])}
    cap3, cap1 = samples["cap-3"], samples["cap-1"]
    assert cap3.messages == [
        {"role": "system", "content": "Answer with the name of the city only."},
        {"role": "user", "content": "What is the capital of Italy?"},
    ]
    assert (cap3.output, cap3.references, cap3.invalid) == ("I don't know", ["Rome"], True)
    assert cap3.judge is not None and (cap3.judge.model, cap3.judge.verdict) == ("grader", "__invalid__")
    assert not cap1.invalid and cap1.judge is not None and cap1.judge.verdict == "C"
    assert cap1.judge.reasoning  # the grader's own answer, as it sampled it
    assert cap1.scores["fuzzy_match_f1_score"] == 1.0 and cap3.scores["fuzzy_match_f1_score"] == 0.0
    # The second run reused the first one's finished evals: its cells have the same samples.
    second = by_metric(keyed_run["second"])[("qa_capitals", "match_accuracy")]
    assert [s.sample_id for s in cell_samples(db, second)] == [s.sample_id for s in samples.values()]


@pytest.mark.framework
def test_chinese_dataset_is_graded_with_the_chinese_spec(keyed_run: dict[str, Any]) -> None:
    score = by_metric(keyed_run["first"])[("qa_zh", "fact_zh_score")]
    prompts = []
    for line in Path(score.details_path).read_text("utf-8").splitlines():
        event = json.loads(line)
        if event.get("type") == "sampling" and event["data"].get("model") == "grader":
            prompts.append(event["data"]["prompt"][-1]["content"])
    assert len(prompts) == 6
    assert all("[专家答案]：" in p and "请一步一步地写出你的推理过程" in p and p.endswith("推理：") for p in prompts)
    assert not any("First, write out" in p for p in prompts)  # evals' English answer prompt was not appended
    assert any("[专家答案]：['12', '十二']" in p for p in prompts)


@pytest.mark.framework
def test_records_equal_the_final_reports_evals_wrote(keyed_run: dict[str, Any]) -> None:
    records = keyed_run["first"]
    run_dir = load_config(keyed_run["config"]).work_dir / records[0].run_id / "openai_evals"
    files = sorted((run_dir / "records" / "keyed").glob("*.jsonl"))
    assert len(files) == 9  # 5 + 3 + 1 evals, each a record file inside the run folder
    by_file: dict[str, list[Record]] = {}
    for r in records:
        by_file.setdefault(r.details_path or "", []).append(r)
    for f in files:
        lines = f.read_text("utf-8").splitlines()
        assert "spec" in json.loads(lines[0])
        report = next(json.loads(x)["final_report"] for x in lines if '"final_report"' in x)
        reported = {k: v for k, v in report.items() if not k.startswith("usage_")}
        mine = by_file[str(f)]
        assert {r.extra["report_key"]: r.value for r in mine} == reported
        assert sum(r.primary for r in mine) == 1
        assert read_record_file(f).final_report == report


@pytest.mark.framework
def test_rerun_reuses_finished_evals(keyed_run: dict[str, Any]) -> None:
    first, second = keyed_run["first"], keyed_run["second"]
    assert second[0].run_id != first[0].run_id
    assert [(r.benchmark, r.metric, r.value) for r in second] == [(r.benchmark, r.metric, r.value) for r in first]
    assert all(r.extra["reused_from"] == r_first.details_path for r, r_first in zip(second, first, strict=True))
    assert all(second[0].run_id in (r.details_path or "") for r in second)  # copied into the new run folder


@pytest.fixture(scope="module")
def failing_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("oe") / "failing"
    cfg = write_config(folder, [keyed_model(), BROKEN], {"methods": ["match"]}, datasets=["qa_capitals"])
    codes = [main(["run", str(cfg), "--only", "openai_evals"]) for _ in range(2)]
    codes.append(main(["run", str(cfg), "--only", "openai_evals", "--force"]))
    return {"config": cfg, "codes": codes, "runs": list(stored(cfg).values())}


@pytest.mark.framework
def test_broken_completion_function_fails_its_eval_only(failing_run: dict[str, Any]) -> None:
    assert failing_run["codes"] == [1, 1, 1]
    first = failing_run["runs"][0]
    ok = by_metric(first, "keyed")[("qa_capitals", "match_accuracy")]
    assert (ok.status, ok.value) == ("ok", 7 / 8)
    [failed] = [r for r in first if r.model == "broken"]
    assert (failed.status, failed.value, failed.metric, failed.primary) == ("failed", None, "match_accuracy", True)
    assert failed.error is not None and "\n" not in failed.error
    assert "oaieval exited with code 1: RuntimeError: CrashOnQuestions: this model cannot answer" in failed.error
    with sqlite3.connect(load_config(failing_run["config"]).results_db) as conn:
        statuses = [s for (s,) in conn.execute("SELECT status FROM runs ORDER BY id")]
    assert statuses == ["failed", "failed", "failed"]


@pytest.mark.framework
def test_rerun_retries_failed_evals_and_force_reruns_all(failing_run: dict[str, Any]) -> None:
    _, second, forced = failing_run["runs"]
    assert "reused_from" in by_metric(second, "keyed")[("qa_capitals", "match_accuracy")].extra
    assert [r.status for r in second if r.model == "broken"] == ["failed"]  # tried again, not reused
    assert "reused_from" not in by_metric(forced, "keyed")[("qa_capitals", "match_accuracy")].extra
    assert by_metric(forced, "keyed")[("qa_capitals", "match_accuracy")].value == 7 / 8


@pytest.mark.framework
def test_tiny_hf_model_on_one_small_eval(tmp_path: Path, tiny_model_path: Path) -> None:
    tiny = {"name": "tiny", "kind": "hf", "path": str(tiny_model_path), "generation": {"max_new_tokens": 6}}
    cfg = write_config(tmp_path / "tiny", [tiny], {"methods": ["match"]}, datasets=["qa_capitals"], max_samples=3)
    bridge = bridge_for(cfg)
    out = tmp_path / "run"
    [accuracy, std] = bridge.run(out)
    record = out / "records" / "tiny" / "qa_capitals.match.jsonl"
    assert accuracy.details_path == str(record.resolve()) and record.is_file()
    report = read_record_file(record).final_report
    assert report is not None
    assert (accuracy.metric, accuracy.status, accuracy.n_samples) == ("match_accuracy", "ok", 3)
    assert 0.0 <= accuracy.value <= 1.0 and accuracy.value == report["accuracy"]
    assert std.value == report["boostrap_std"]
    assert accuracy.extra["usage"]["usage_completion_tokens"] > 0  # the layer's token counts reach evals
    command = json.loads((out / "records" / "tiny" / "qa_capitals.match.meta.json").read_text("utf-8"))["command"]
    assert command[command.index("--max_samples") + 1] == "3" and command[command.index("--seed") + 1] == "0"


# ------------------------------------------------------------------ the completion function itself


def test_completion_function_takes_chat_text_and_evals_example_turns() -> None:
    from dataclasses import dataclass

    from bridges.frameworks.openai_evals.completion import BenchbridgeCompletionFn

    fn = BenchbridgeCompletionFn(model=keyed_model(), registry=object())  # evals passes registry=
    chat = [
        {"role": "system", "content": "Answer with the name of the city only."},
        {"role": "user", "content": "What is the capital of Japan?"},
    ]
    assert fn(prompt=chat, temperature=0.0).get_completions() == ["Tokyo"]
    assert fn("What is the capital of Italy?", max_tokens=5).get_completions() == ["I don't know"]  # cap-3: wrong
    fewshot = [
        {"role": "system", "name": "example_user", "content": "What is the capital of Japan?"},
        {"role": "system", "name": "example_assistant", "content": "Tokyo"},
        {"role": "user", "content": "What is the capital of Egypt?"},
    ]
    assert fn(fewshot).get_completions() == ["Cairo"]

    @dataclass
    class Prompt:  # evals.prompt.base.Prompt's interface
        text: str

        def to_formatted_prompt(self) -> str:
            return self.text

    assert fn(Prompt("一周有几天？请只回答数字。")).get_completions() == ["7"]
    with pytest.raises(BenchbridgeError, match=r"completion_fns: args\.model\.kind: missing"):
        BenchbridgeCompletionFn(model={"name": "x"})


@pytest.mark.framework
def test_readme_command_runs_the_registry_by_hand(tmp_path: Path) -> None:
    """The registry README's `oaievalset` line, run as a user would (evals' own /tmp files cleaned up)."""
    import subprocess
    import uuid

    name = f"readme-{uuid.uuid4().hex[:8]}"
    cfg = write_config(tmp_path / name, [keyed_model(name)], {"methods": ["includes"]}, datasets=["qa_zh"])
    out = tmp_path / "native"
    assert main(["prepare", str(cfg), "--out", str(out), "--only", "openai_evals"]) == 0
    readme = (out / "openai_evals" / "README.md").read_text("utf-8")
    script = readme.split("```sh\n", 1)[1].split("```", 1)[0]
    assert f"oaievalset --registry_path {(out / 'openai_evals').resolve()} bb-{name} {name} --no-resume" in script
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    try:
        proc = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        [log] = Path("/tmp/evallogs").glob(f"*_bb-{name}_qa_zh.includes.jsonl")
        assert read_record_file(log).final_report["accuracy"] == 4 / 6
    finally:
        for leftover in [*Path("/tmp/evallogs").glob(f"*_bb-{name}_*"), *Path("/tmp/oaievalset").glob(f"bb-{name}.*")]:
            leftover.unlink()


STALE_V1 = """
class Model:  # version 1: knows nothing
    def __init__(self, datasets):
        pass

    def __call__(self, batch):
        return ["I do not know."] * len(batch)
"""
STALE_V2 = """
from bridges.testing import AnswerKeyModel


class Model(AnswerKeyModel):  # version 2: answers from the key
    pass
"""


@pytest.mark.framework
def test_a_changed_python_model_is_asked_again_an_unchanged_one_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finished evals are reused only while the model's identity (the response cache's: spec and module
    source) is unchanged: after its code changes, the next run's value is the new code's."""
    import uuid

    module = f"bb_stale_model_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(STALE_V1, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))  # importable here and in every child process
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(tmp_path), os.environ.get("PYTHONPATH")) if p))
    model = {
        "name": "stale",
        "kind": "python",
        "target": f"{module}:Model",
        "args": {"datasets": [str(DATASETS / "qa_capitals")]},
    }
    cfg = write_config(tmp_path / "cfg", [model], {"methods": ["match"]}, datasets=["qa_capitals"], max_samples=3)

    def accuracy() -> Record:
        assert main(["run", str(cfg), "--only", "openai_evals", "--no-publish"]) == 0
        return by_metric(list(stored(cfg).values())[-1], "stale")[("qa_capitals", "match_accuracy")]

    first = accuracy()
    assert (first.value, "reused_from" in first.extra) == (0.0, False)
    unchanged = accuracy()
    assert (unchanged.value, unchanged.extra.get("reused_from")) == (0.0, first.details_path)
    (tmp_path / f"{module}.py").write_text(STALE_V2, encoding="utf-8")
    changed = accuracy()
    assert (changed.value, "reused_from" in changed.extra) == (1.0, False)

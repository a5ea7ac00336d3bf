"""lm-evaluation-harness bridge: real lm-eval runs on bundled datasets, numbers known in advance.

One session run (`lm_eval_run`) evaluates three models through `benchbridge run --only lm_eval`:
`keyed` (a `python` AnswerKeyModel with known wrong answers), `keyed-api` (the same model behind
`benchbridge serve`, reached through lm-eval's own `local-chat-completions`) and `tiny` (a random
HF model, scored natively by lm-eval's `hf` model). Every test then reads that one run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridges import BenchbridgeError, LoadedConfig, RunOutcome, load_config, prepare, run
from bridges.frameworks import FRAMEWORKS
from bridges.models import parse_model_spec
from bridges.records import Record
from tests._sample_checks import assert_key_pattern, cell_samples
from tests.conftest import DATASETS

KEYED_DATASETS = ["qa_capitals", "mcq_science_en", "qa_zh"]
WRONG = ["cap-3", "cap-5", "sci-2", "computer_network-1"]  # -> 6/8, 7/8, 6/6, ceval 7/8 (3/4 + 4/4)


def keyed_spec(
    name: str, ceval: Path, wrong: list[str] = WRONG, target: str = "bridges.testing:AnswerKeyModel"
) -> dict:
    datasets = [str(DATASETS / d) for d in KEYED_DATASETS] + [str(ceval)]
    return {"name": name, "kind": "python", "target": target, "args": {"datasets": datasets, "wrong_ids": wrong}}


def write_config(folder: Path, models: list[dict], lm_eval: dict | None = None, **extra: Any) -> Path:
    config = {
        "name": folder.name,
        "work_dir": str(folder / "runs"),
        "seed": 0,
        "models": models,
        "datasets": extra.pop("datasets", None)
        or [{"path": str(DATASETS / d)} for d in [*KEYED_DATASETS, "open_instructions"]],
        "frameworks": {"lm_eval": lm_eval or {}},
        **extra,
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def ceval_canonical(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled C-Eval folder as a canonical mcq dataset: 2 subjects, 4 scored + 5 few-shot rows each."""
    from bridges.datasets import import_dataset

    folder = tmp_path_factory.mktemp("ceval") / "ceval_mini"
    import_dataset("ceval", DATASETS / "ceval_mini", "ceval_mini").save(folder)
    return folder


@dataclass
class LMEvalRun:
    config: LoadedConfig
    outcome: RunOutcome

    @property
    def out(self) -> Path:
        return self.outcome.run_dir / "lm_eval"

    @property
    def records(self) -> list[Record]:
        return self.outcome.frameworks[0].records

    def ok(self, model: str) -> list[Record]:
        return [r for r in self.records if r.model == model and r.status == "ok"]

    def value(self, model: str, benchmark: str, metric: str, subset: str = "") -> float | None:
        (match,) = [r for r in self.ok(model) if (r.benchmark, r.metric, r.subset) == (benchmark, metric, subset)]
        return match.value

    def results_file(self, model: str) -> Path:
        (path,) = sorted((self.out / "results" / model).glob("results_*.json"))
        return path

    def results(self, model: str) -> dict[str, Any]:
        return json.loads(self.results_file(model).read_text(encoding="utf-8"))

    def samples(self, model: str, task: str) -> list[dict[str, Any]]:
        stamp = self.results_file(model).stem.removeprefix("results_")
        path = self.out / "results" / model / f"samples_{task}_{stamp}.jsonl"
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="session")
def lm_eval_run(tmp_path_factory: pytest.TempPathFactory, tiny_model_path: Path, ceval_canonical: Path) -> LMEvalRun:
    from bridges.serve import serving

    folder = tmp_path_factory.mktemp("lm_eval_run")
    served = parse_model_spec(keyed_spec("keyed-served", ceval_canonical))
    # During the run, benchbridge's model layer calls `url` for keyed-api, with the key it reads from api_key_env.
    with serving(served) as url, pytest.MonkeyPatch.context() as env:
        env.setenv("BENCHBRIDGE_TEST_KEYED_API_KEY", "sk-unused")
        models = [
            keyed_spec("keyed", ceval_canonical),
            {
                "name": "keyed-api",
                "kind": "openai",
                "model": "keyed-served",
                "base_url": url,
                "api_key_env": "BENCHBRIDGE_TEST_KEYED_API_KEY",
            },
            {"name": "tiny", "kind": "hf", "path": str(tiny_model_path), "generation": {"max_new_tokens": 8}},
        ]
        datasets = [{"path": str(DATASETS / d)} for d in [*KEYED_DATASETS, "open_instructions"]]
        # native: lm-eval's own hf and API classes and conventions (parity: tests/test_parity.py)
        datasets.append({"path": str(ceval_canonical)})
        config = load_config(write_config(folder, models, datasets=datasets, prompt_mode="native"))
        outcome = run(config, ["lm_eval"])
    return LMEvalRun(config, outcome)


@pytest.mark.framework
@pytest.mark.parametrize("model", ["keyed", "keyed-api"])
def test_answer_key_model_gets_exactly_the_expected_fractions(lm_eval_run: LMEvalRun, model: str) -> None:
    assert lm_eval_run.outcome.ok, [r.error for r in lm_eval_run.records if r.status == "failed"]
    assert lm_eval_run.value(model, "qa_capitals", "exact_match,strip") == 0.75
    assert lm_eval_run.value(model, "mcq_science_en", "exact_match,letter") == 0.875  # the generate variant
    assert lm_eval_run.value(model, "qa_zh", "exact_match,strip") == 1.0  # zh-2, zh-6: one of two answers
    assert lm_eval_run.value(model, "ceval_mini", "exact_match,letter") == 0.875  # the group, weighted by size
    assert lm_eval_run.value(model, "ceval_mini", "exact_match,letter", "computer_network") == 0.75
    assert lm_eval_run.value(model, "ceval_mini", "exact_match,letter", "high_school_chemistry") == 1.0
    primary = {(r.benchmark, r.subset): r.metric for r in lm_eval_run.ok(model) if r.primary}
    assert primary[("qa_capitals", "")] == "exact_match,strip"
    assert primary[("ceval_mini", "")] == "exact_match,letter"
    assert {r.n_samples for r in lm_eval_run.ok(model) if r.benchmark == "ceval_mini" and not r.subset} == {8}
    assert {r.benchmark for r in lm_eval_run.records} == {"qa_capitals", "mcq_science_en", "qa_zh", "ceval_mini"}


@pytest.mark.framework
@pytest.mark.parametrize("model", ["keyed", "keyed-api"])
def test_answer_key_samples_are_the_key_pattern_from_log_samples(lm_eval_run: LMEvalRun, model: str) -> None:
    db = lm_eval_run.outcome.db
    get = {(r.benchmark, r.subset): r for r in lm_eval_run.ok(model) if r.primary}
    cells = {
        ("qa_capitals", ""): ([f"cap-{i}" for i in range(1, 9)], {"cap-3", "cap-5"}),
        ("mcq_science_en", ""): ([f"sci-{i}" for i in range(1, 9)], {"sci-2"}),
        ("qa_zh", ""): ([f"zh-{i}" for i in range(1, 7)], set()),
        ("ceval_mini", "computer_network"): ([f"computer_network-{i}" for i in range(4)], {"computer_network-1"}),
        ("ceval_mini", "high_school_chemistry"): ([f"high_school_chemistry-{i}" for i in range(4)], set()),
    }
    for key, (ids, wrong) in cells.items():
        assert_key_pattern(db, get[key], ids, wrong)
    (cap3,) = [s for s in cell_samples(db, get[("qa_capitals", "")]) if s.sample_id == "cap-3"]
    # As sent: lm-eval's API chat keeps the description's trailing blank line, our python model's strips it.
    system = "Answer with the name of the city only." + ("\n\n" if model == "keyed-api" else "")
    assert cap3.messages == [
        {"role": "system", "content": system},
        {"role": "user", "content": "What is the capital of Italy?"},
    ]
    assert (cap3.output, cap3.extracted, cap3.references) == ("I don't know", "I don't know", ["Rome"])
    chem = cell_samples(db, get[("ceval_mini", "high_school_chemistry")])
    assert {s.group for s in chem} == {"high_school_chemistry"}
    assert all("水的化学式是？" in s.input_text for s in chem)  # a dev row: the few-shot examples as sent


@pytest.mark.framework
def test_tiny_hf_model_samples_are_loglikelihood_choices_averaging_to_the_cell(lm_eval_run: LMEvalRun) -> None:
    db = lm_eval_run.outcome.db
    (acc,) = [r for r in lm_eval_run.ok("tiny") if (r.benchmark, r.subset, r.metric) == ("mcq_science_en", "", "acc")]
    samples = cell_samples(db, acc)
    assert sorted(s.sample_id for s in samples) == [f"sci-{i}" for i in range(1, 9)]
    assert sum(s.scores["acc"] or 0.0 for s in samples) / 8 == pytest.approx(acc.value)
    for s in samples:
        assert s.choices and s.extracted in s.choices and len(json.loads(s.output or "[]")) == len(s.choices)
        assert s.scores["acc"] == float(s.extracted == s.references[0])  # acc: the likeliest choice is the key
        assert set(s.scores) == {"acc", "acc_norm"} and s.prompt is not None  # the hf model got rendered text


@pytest.mark.framework
@pytest.mark.parametrize("model", ["keyed", "keyed-api", "tiny"])
def test_records_equal_lm_evals_results_json(lm_eval_run: LMEvalRun, model: str) -> None:
    results = lm_eval_run.results(model)
    expected = {}
    for task, entry in results["results"].items():
        for key, value in entry.items():
            if "," in key and "_stderr," not in key:
                metric, _, filter_name = key.partition(",")
                stderr = entry[f"{metric}_stderr,{filter_name}"]
                expected[(task, key)] = (value, stderr if isinstance(stderr, float) else None)
    got = {(r.extra["task"], r.extra["result_key"]): (r.value, r.stderr) for r in lm_eval_run.ok(model)}
    assert got == expected
    assert all(
        r.scale == 1 and r.framework == "lm_eval" and r.framework_version == "0.4.13" for r in lm_eval_run.ok(model)
    )
    for r in lm_eval_run.ok(model):
        if r.extra["task"] in results["n-samples"]:  # a task, not a group: its samples log is kept
            assert r.n_samples == results["n-samples"][r.extra["task"]]["effective"]
            assert r.details_path and Path(r.details_path).is_file()


@pytest.mark.framework
def test_tiny_hf_model_runs_multiple_choice_and_generation_natively(lm_eval_run: LMEvalRun) -> None:
    records = {(r.benchmark, r.subset, r.metric): r for r in lm_eval_run.ok("tiny")}
    assert {k for k in records if k[0] == "mcq_science_en"} == {
        ("mcq_science_en", "", "acc"),
        ("mcq_science_en", "", "acc_norm"),
    }
    assert records[("mcq_science_en", "", "acc")].primary and not records[("mcq_science_en", "", "acc_norm")].primary
    for subject in ("computer_network", "high_school_chemistry"):
        assert ("ceval_mini", subject, "acc") in records
    # Each number is the mean of lm-eval's own per-sample scores in its samples log.
    for task, benchmark, metric in [
        ("bb_mcq_science_en", "mcq_science_en", "acc"),
        ("bb_qa_zh", "qa_zh", "exact_match,strip"),
    ]:
        samples = lm_eval_run.samples("tiny", task)
        per_sample = [s[metric.split(",")[0]] for s in samples]
        assert records[(benchmark, "", metric)].value == pytest.approx(sum(per_sample) / len(per_sample))
    job = json.loads((lm_eval_run.out / "jobs" / "tiny.json").read_text(encoding="utf-8"))
    assert job["model"] == "hf" and job["model_args"]["dtype"] == "float32" and job["device"] == "cpu"
    assert job["tasks"] == ["bb_qa_capitals", "bb_mcq_science_en", "bb_qa_zh", "bb_ceval_mini"]
    # The dataset's system message reaches the model through its chat template; few-shot C-Eval is 5-shot.
    prompt = lm_eval_run.samples("tiny", "bb_qa_capitals")[0]["arguments"]["gen_args_0"]["arg_0"]
    assert prompt.startswith("<|im_start|>system\nAnswer with the name of the city only.")
    assert "<|im_start|>user\nWhat is the capital of France?<|im_end|>" in prompt
    assert lm_eval_run.results("tiny")["n-shot"]["bb_ceval_mini_computer_network"] == 5


@pytest.mark.framework
def test_chat_messages_reach_python_and_api_models_as_messages(lm_eval_run: LMEvalRun) -> None:
    for model in ("keyed", "keyed-api"):
        first = lm_eval_run.samples(model, "bb_qa_capitals")[0]
        prompt = first["arguments"]["gen_args_0"]["arg_0"]
        prompt = prompt[0] if isinstance(prompt, list) else prompt  # API models log lm-eval's JsonChatStr tuple
        # The system message is the task description; like lm-eval's own (mmlu's), it ends in a blank line,
        # which lm-eval's API models send as is and the model layer's route strips.
        system = "Answer with the name of the city only." + ("\n\n" if model == "keyed-api" else "")
        assert json.loads(prompt) == [
            {"role": "system", "content": system},
            {"role": "user", "content": "What is the capital of France?"},
        ]
        assert first["filtered_resps"] == ["Paris"] and first["exact_match"] == 1.0
    api_job = json.loads((lm_eval_run.out / "jobs" / "keyed-api.json").read_text(encoding="utf-8"))
    assert api_job["model"] == "local-chat-completions" and api_job["can_score"] is False
    assert api_job["model_args"]["tokenizer_backend"] is None and api_job["model_args"]["tokenized_requests"] is False


@pytest.mark.framework
def test_prepared_include_folder_is_what_ran(lm_eval_run: LMEvalRun) -> None:
    tasks = lm_eval_run.out / "tasks"
    group = yaml.safe_load((tasks / "ceval_mini" / "bb_ceval_mini.yaml").read_text(encoding="utf-8"))
    assert group["task"] == ["bb_ceval_mini_computer_network", "bb_ceval_mini_high_school_chemistry"]
    for path in tasks.rglob("*.yaml"):
        cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
        for data_file in cfg.get("dataset_kwargs", {}).get("data_files", {}).values():
            assert Path(data_file).is_absolute() and Path(data_file).is_file()
    readme = (tasks / "README.md").read_text(encoding="utf-8")
    assert f"--include_path {tasks}" in readme
    assert "--tasks bb_qa_capitals,bb_mcq_science_en,bb_qa_zh,bb_ceval_mini" in readme
    assert f"-m bridges.frameworks.lm_eval.worker {lm_eval_run.out / 'jobs' / 'keyed.json'}" in readme
    assert not list(tasks.rglob("*open_instructions*"))  # open datasets are not lm-eval's kind


@pytest.mark.framework
def test_prepare_alone_writes_final_absolute_paths(tmp_path: Path, ceval_canonical: Path) -> None:
    config = load_config(write_config(tmp_path, [keyed_spec("keyed", ceval_canonical)]))
    written = prepare(config, tmp_path / "prepared", ["lm_eval"])
    assert all(p.is_file() for p in written["lm_eval"])
    task = yaml.safe_load((tmp_path / "prepared/lm_eval/tasks/qa_capitals/bb_qa_capitals.yaml").read_text("utf-8"))
    assert task["dataset_kwargs"]["data_files"]["test"] == str(
        tmp_path / "prepared/lm_eval/tasks/qa_capitals/data/bb_qa_capitals.test.jsonl"
    )


@pytest.mark.framework
def test_in_process_normalisation_limit_and_builtin_tasks_without_data(tmp_path: Path, ceval_canonical: Path) -> None:
    model = keyed_spec("noisy", ceval_canonical, ["cap-3", "sci-2"], "_lm_eval_models:NoisyKeyModel")
    options = {"isolation": "in-process", "builtin_tasks": ["arc_easy", "no_such_task"]}
    config = load_config(write_config(tmp_path, [model], options, max_samples=4))
    outcome = run(config, ["lm_eval"])
    records = {(r.benchmark, r.metric): r for r in outcome.frameworks[0].records}
    # "  OTTAWA.  " and "北京。" match; "十二" is zh-2's second acceptable answer; only the first 4 samples.
    assert records[("qa_capitals", "exact_match,strip")].value == 0.75  # cap-3 wrong
    assert records[("qa_capitals", "exact_match,strip")].n_samples == 4
    assert records[("qa_zh", "exact_match,strip")].value == 1.0
    assert records[("mcq_science_en", "exact_match,letter")].value == 0.75  # "(B) Mercury" -> B; sci-2 wrong
    arc, unknown = records[("arc_easy", "*")], records[("no_such_task", "*")]
    assert arc.status == unknown.status == "failed"
    assert "could not load its data" in arc.error and "HF_DATASETS_CACHE" in arc.error
    assert "unknown lm-eval task, group or tag 'no_such_task'" in unknown.error
    assert not outcome.ok


# ------------------------------------------------------------------ no framework run


def bridge_for(tmp_path: Path, models: list[dict], lm_eval: dict | None = None, **extra: Any) -> Any:
    from bridges.frameworks import RunContext

    config = load_config(write_config(tmp_path, models, lm_eval, **extra))
    return FRAMEWORKS.get("lm_eval")(RunContext(config=config, run_id="t", config_hash="h"))


def test_model_kinds_map_to_lm_eval_models(tmp_path: Path) -> None:
    tok = str(tmp_path)
    models = [
        {"name": "chat", "kind": "openai", "model": "m", "base_url": "http://127.0.0.1:9/v1/"},
        {"name": "comp", "kind": "openai", "model": "m", "base_url": "http://127.0.0.1:9/v1", "tokenizer_path": tok},
        {"name": "comp-notok", "kind": "openai", "model": "m", "base_url": "http://127.0.0.1:9/v1"},
        {"name": "py", "kind": "python", "target": "bridges.testing:AnswerKeyModel", "args": {"datasets": []}},
    ]
    # native: lm-eval's own API classes (parity sends every model through the model layer: tests/test_parity.py)
    bridge = bridge_for(tmp_path, models, {"completions_models": ["comp", "comp-notok"]}, prompt_mode="native")
    chat, comp, notok, py = (bridge.natives[m["name"]] for m in models)
    assert (chat.model, chat.model_args["base_url"], chat.can_score) == (
        "local-chat-completions",
        "http://127.0.0.1:9/v1/chat/completions",
        False,
    )
    assert (comp.model, comp.model_args["tokenizer_backend"], comp.can_score) == (
        "local-completions",
        "huggingface",
        True,
    )
    assert (notok.model_args["tokenizer_backend"], notok.can_score) == (None, False)
    assert (py.model, py.can_score, py.apply_chat_template) == ("benchbridge-python", False, True)
    assert bridge.tasks_for("comp") == ["bb_qa_capitals", "bb_mcq_science_en", "bb_qa_zh"]
    assert bridge.tasks_for("py") == ["bb_qa_capitals", "bb_mcq_science_en_gen", "bb_qa_zh"]


@pytest.mark.parametrize(
    ("models", "options", "datasets", "message"),
    [
        ([{"name": "m", "kind": "hf", "path": "/nowhere/model"}], {}, None, "/nowhere/model: model folder not found"),
        ([{"name": "m", "kind": "hf", "path": "/"}], {"completions_models": ["x"]}, None, "no model named 'x'"),
        ([{"name": "m", "kind": "hf", "path": "/"}], {"completions_models": ["m"]}, None, "m is not an openai model"),
        ([{"name": "m", "kind": "hf", "path": "/"}], {"mcq_format": "bogus"}, None, "frameworks.lm_eval.mcq_format"),
        (
            [{"name": "m", "kind": "hf", "path": "/"}],
            {},
            [{"path": str(DATASETS / "open_instructions"), "frameworks": ["lm_eval"]}],
            "datasets\\[0\\].frameworks\\[0\\]: lm_eval cannot take dataset open_instructions of kind 'open'",
        ),
    ],
)
def test_bad_input_fails_before_anything_is_written(
    tmp_path: Path, models: list[dict], options: dict, datasets: list | None, message: str
) -> None:
    extra = {"datasets": datasets} if datasets else {}
    with pytest.raises(BenchbridgeError, match=message.replace("(", r"\(")):
        bridge_for(tmp_path, models, options, **extra)
    assert not (tmp_path / "runs").exists()


def test_cloze_format_scores_the_option_texts(tmp_path: Path) -> None:
    bridge = bridge_for(tmp_path, [{"name": "m", "kind": "hf", "path": "/"}], {"mcq_format": "cloze"})
    bridge.prepare(tmp_path / "out")
    task = yaml.safe_load((tmp_path / "out/tasks/mcq_science_en/bb_mcq_science_en.yaml").read_text("utf-8"))
    assert task["doc_to_choice"] == "choices" and task["doc_to_text"].startswith("Question: ")


# ------------------------------------------------------------------ cross-framework agreement


@pytest.mark.framework
def test_lm_eval_opencompass_and_openai_evals_agree_on_qa_capitals(tmp_path: Path) -> None:
    """One config, three frameworks, one deterministic model: 6 of 8 right everywhere, zero difference."""
    from leaderboards.agreement import MAX_DIFF, agreement_markdown, agreement_table, framework_columns
    from leaderboards.store import ResultsStore

    qa = str(DATASETS / "qa_capitals")
    model = {"name": "keyed", "kind": "python", "target": "bridges.testing:AnswerKeyModel"}
    model["args"] = {"datasets": [qa], "wrong_ids": ["cap-3", "cap-5"]}
    path = write_config(tmp_path, [model], datasets=[{"path": qa}])
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    raw["frameworks"] = {"opencompass": {}, "openai_evals": {"methods": ["match"]}, "lm_eval": {}}
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    config = load_config(path)
    outcome = run(config)
    assert outcome.ok, [f.error for f in outcome.frameworks]
    table = agreement_table(ResultsStore(config.results_db).records())
    assert framework_columns(table) == ["lm_eval", "openai_evals", "opencompass"]
    row = table.loc[("qa_capitals", "", "keyed")]
    assert [row[c] for c in framework_columns(table)] == [75.0, 75.0, 75.0]
    assert row[MAX_DIFF] == 0.0 and row["n_samples"] == "8"
    assert "| qa_capitals | keyed | 75.00 | 75.00 | 75.00 | 0.00 | 8 |" in agreement_markdown(table)


def test_subjects_without_ascii_names_get_unique_task_names(tmp_path: Path) -> None:
    from bridges.datasets import load_dataset

    folder = tmp_path / "zh_mcq"
    folder.mkdir()
    (folder / "card.yaml").write_text("name: zh_mcq\nkind: mcq\nlanguage: zh\n", encoding="utf-8")
    rows = [
        {"id": f"q{i}", "question": f"问题{i}", "choices": ["甲", "乙"], "answer": "A", "subject": subject}
        for i, subject in enumerate(["计算机网络", "化学", "化学", "C-1"])
    ]
    (folder / "samples.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    load_dataset(folder)
    models = [{"name": "m", "kind": "hf", "path": "/"}]
    bridge = bridge_for(tmp_path, models, datasets=[{"path": str(folder)}])
    (plan, gen) = bridge.plans["zh_mcq"]
    assert plan.members == (
        ("bb_zh_mcq_c_1", "C-1"),
        ("bb_zh_mcq_subject1", "化学"),
        ("bb_zh_mcq_subject2", "计算机网络"),
    )
    assert gen.members[0] == ("bb_zh_mcq_c_1_gen", "C-1")
    bridge.prepare(tmp_path / "out")
    task = yaml.safe_load((tmp_path / "out/tasks/zh_mcq/bb_zh_mcq_subject1.yaml").read_text("utf-8"))
    assert task["task_alias"] == "化学"
    docs = (tmp_path / "out/tasks/zh_mcq/data/bb_zh_mcq_subject1.test.jsonl").read_text("utf-8").splitlines()
    assert [json.loads(d)["id"] for d in docs] == ["q1", "q2"]

"""Prompt parity (issue 17): in `prompt_mode: parity` every framework sends the model one canonical
conversation per sample (bridges/frameworks/parity.py), the model's system prompt merged once by the
model layer; `native` keeps each framework's own conventions.

The framework tests run OpenCompass, lm-eval and OpenAI evals once on copies of the bundled mcq and qa
datasets given few-shot rows, with a model under a system prompt: a `python` model answering with a
hash of the exact conversation it received, and the tiny `hf` model with every rendered prompt and its
token ids logged by the hf backend (BENCHBRIDGE_PROMPT_LOG).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from bridges._config import load_config
from bridges._errors import BenchbridgeError
from bridges.cli import main
from bridges.datasets import McqSample, QaSample, load_dataset
from bridges.frameworks.parity import conversation, mcq_text
from bridges.models import as_messages, with_system_prompt
from leaderboards.store import ResultsStore
from tests._parity_models import conversation_hash
from tests.conftest import DATASETS

SYSTEM_PROMPT = "You are terse."
FRAMEWORKS = ["lm_eval", "openai_evals", "opencompass"]
MCQ_SHOTS = [
    {"id": "fs-1", "question": "What colour is the sky on a clear day?", "choices": ["Green", "Blue"], "answer": "B"},
    {"id": "fs-2", "question": "How many days are in a week?", "choices": ["Seven", "Five", "Ten"], "answer": "A"},
]
QA_SHOTS = [
    {"id": "qfs-1", "messages": [{"role": "user", "content": "What is the capital of Spain?"}], "answers": ["Madrid"]},
    {"id": "qfs-2", "messages": [{"role": "user", "content": "What is the capital of Peru?"}], "answers": ["Lima"]},
]


def datasets_with_shots(folder: Path) -> list[Path]:
    """The bundled mcq_science_en and qa_capitals, each with a fewshot.jsonl of two rows."""
    out = []
    for name, shots in (("mcq_science_en", MCQ_SHOTS), ("qa_capitals", QA_SHOTS)):
        target = folder / name
        shutil.copytree(DATASETS / name, target)
        (target / "fewshot.jsonl").write_text("".join(json.dumps(s) + "\n" for s in shots), encoding="utf-8")
        out.append(target)
    return out


def write_config(folder: Path, models: list[dict], datasets: list[Path], **extra: object) -> Path:
    cfg = {
        "name": "parity",
        "work_dir": str(folder / "runs"),
        "models": models,
        "datasets": [{"path": str(p)} for p in datasets],
        "frameworks": {
            "opencompass": {},
            "lm_eval": {},
            "openai_evals": {"datasets": {"qa_capitals": ["match", "includes"], "mcq_science_en": ["match"]}},
        },
        **extra,
    }
    path = folder / "parity.yaml"
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    return path


def received(ds_path: Path, system_prompt: str | None) -> dict[str, list[dict[str, str]]]:
    """What the model must receive for each sample: the canonical conversation, the system prompt merged."""
    ds = load_dataset(ds_path)
    out = {}
    for s in ds.samples:
        assert isinstance(s, McqSample | QaSample)
        messages = as_messages(conversation(ds, s))
        if system_prompt:
            messages = with_system_prompt(messages, system_prompt)
        out[s.id] = [{"role": r, "content": c} for r, c in messages]
    return out


# ---------------------------------------------------------------- the canonical conversation (fast)


def test_conversation_is_system_then_shots_then_question(tmp_path: Path) -> None:
    mcq, qa = (load_dataset(p) for p in datasets_with_shots(tmp_path))
    sci1 = mcq.samples[0]
    assert isinstance(sci1, McqSample)
    assert conversation(mcq, sci1) == [
        {"role": "user", "content": "What colour is the sky on a clear day?\nA. Green\nB. Blue\nAnswer:"},
        {"role": "assistant", "content": "B"},
        {"role": "user", "content": "How many days are in a week?\nA. Seven\nB. Five\nC. Ten\nAnswer:"},
        {"role": "assistant", "content": "A"},
        {
            "role": "user",
            "content": "Which planet is closest to the Sun?\nA. Venus\nB. Mercury\nC. Earth\nD. Mars\nAnswer:",
        },
    ]
    cap1 = qa.samples[0]
    assert isinstance(cap1, QaSample)
    assert conversation(qa, cap1) == [
        {"role": "system", "content": "Answer with the name of the city only."},
        {"role": "user", "content": "What is the capital of Spain?"},
        {"role": "assistant", "content": "Madrid"},
        {"role": "user", "content": "What is the capital of Peru?"},
        {"role": "assistant", "content": "Lima"},
        {"role": "user", "content": "What is the capital of France?"},
    ]


def test_merge_rule_is_one_system_turn_model_prompt_first() -> None:
    merged = with_system_prompt(
        as_messages([{"role": "system", "content": "Dataset."}, {"role": "user", "content": "Q"}]), "Model."
    )
    assert merged == (("system", "Model.\n\nDataset."), ("user", "Q"))  # no stray blank line at the end
    assert with_system_prompt(as_messages([{"role": "user", "content": "Q"}]), "Model.") == (
        ("system", "Model."),
        ("user", "Q"),
    )


def test_mcq_text_matches_lm_evals_generation_template() -> None:
    """lm-eval renders the canonical mcq text itself (its _bb_mcq_gen template): the two must not drift."""
    from jinja2 import Template

    from bridges.frameworks.lm_eval.bridge import TEMPLATES_DIR

    template = yaml.safe_load((TEMPLATES_DIR / "_bb_mcq_gen_template_yaml").read_text(encoding="utf-8"))["doc_to_text"]
    s = McqSample(id="x", question=" Which? ", choices=["one", "two", "three"], answer="C")
    assert Template(template).render(question=s.question, choices=s.choices, letters=list(s.letters)) == mcq_text(s)


def test_prompt_mode_defaults_to_parity_and_is_overridable_per_framework(tmp_path: Path) -> None:
    models = [{"name": "m", "kind": "python", "target": "tests._parity_models:hash_model"}]
    path = write_config(tmp_path, models, [DATASETS / "qa_capitals"])
    cfg = load_config(path)
    assert [cfg.prompt_mode(fw) for fw in FRAMEWORKS] == ["parity"] * 3
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    raw["prompt_mode"] = "native"
    raw["frameworks"]["lm_eval"]["prompt_mode"] = "parity"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    cfg = load_config(path)
    assert [cfg.prompt_mode(fw) for fw in FRAMEWORKS] == ["parity", "native", "native"]


def test_bad_prompt_mode_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    models = [{"name": "m", "kind": "python", "target": "tests._parity_models:hash_model"}]
    path = write_config(tmp_path, models, [DATASETS / "qa_capitals"])
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    raw["frameworks"]["lm_eval"]["prompt_mode"] = "same"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    with pytest.raises(BenchbridgeError, match=r"frameworks.lm_eval.prompt_mode: 'same' is not a prompt mode"):
        load_config(path).prompt_mode("lm_eval")
    assert main(["prepare", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "prompt_mode" in err[0] and "parity or native" in err[0]
    assert not (tmp_path / "out" / "lm_eval").exists()


def test_parity_prepare_sends_every_model_through_the_layer(tmp_path: Path, tiny_model_path: Path) -> None:
    """hf and openai models reach the model layer (one merge, one chat template) in every framework."""
    models = [
        {"name": "tiny", "kind": "hf", "path": str(tiny_model_path), "system_prompt": SYSTEM_PROMPT},
        {"name": "api", "kind": "openai", "model": "gpt-x", "base_url": "http://127.0.0.1:9/v1", "api_key_env": "K"},
    ]
    path = write_config(tmp_path, models, datasets_with_shots(tmp_path / "data"))
    out = tmp_path / "out"
    assert main(["prepare", str(path), "--out", str(out)]) == 0
    oc = (out / "opencompass" / "eval_parity.py").read_text(encoding="utf-8")
    assert oc.count("BenchbridgeModel") >= 2 and "HuggingFacewithChatTemplate" not in oc and "OpenAISDK" not in oc
    assert "{q1}" in oc and "{a1}" in oc  # two few-shot turns in the template
    for name in ("tiny", "api"):
        job = json.loads((out / "lm_eval" / "jobs" / f"{name}.json").read_text(encoding="utf-8"))
        assert job["model"] == "benchbridge-python" and job["system_instruction"] is None
        assert job["tasks"] == ["bb_mcq_science_en_gen", "bb_qa_capitals"]
    task = yaml.safe_load((out / "lm_eval" / "tasks" / "qa_capitals" / "bb_qa_capitals.yaml").read_text("utf-8"))
    assert task["num_fewshot"] == 2
    ds = load_dataset(tmp_path / "data" / "qa_capitals")
    rows = (out / "openai_evals" / "data" / "qa_capitals" / "samples.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(r)["input"] for r in rows] == [conversation(ds, s) for s in ds.samples]  # type: ignore[arg-type]


def test_native_prepare_keeps_the_frameworks_own_classes(tmp_path: Path, tiny_model_path: Path) -> None:
    models = [{"name": "tiny", "kind": "hf", "path": str(tiny_model_path), "system_prompt": SYSTEM_PROMPT}]
    path = write_config(tmp_path, models, datasets_with_shots(tmp_path / "data"), prompt_mode="native")
    out = tmp_path / "out"
    assert main(["prepare", str(path), "--out", str(out)]) == 0
    assert "HuggingFacewithChatTemplate" in (out / "opencompass" / "eval_parity.py").read_text(encoding="utf-8")
    job = json.loads((out / "lm_eval" / "jobs" / "tiny.json").read_text(encoding="utf-8"))
    assert job["model"] == "hf" and job["system_instruction"] == SYSTEM_PROMPT


def test_served_openai_models_get_the_system_prompt_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Native mode, `openai` model served through the layer during a run: the layer merges the system
    prompt, so lm-eval's system_instruction and OpenCompass's meta template must not carry it too."""
    from bridges.frameworks import RunContext
    from bridges.frameworks.lm_eval.bridge import LMEvalBridge
    from bridges.frameworks.opencompass.bridge import openai_model, served_view
    from bridges.models import OpenAISpec

    models = [
        {
            "name": "api",
            "kind": "openai",
            "model": "gpt-x",
            "base_url": "http://127.0.0.1:9/v1",
            "api_key_env": "PARITY_TEST_KEY",
            "system_prompt": SYSTEM_PROMPT,
            "tokenizer_path": str(tmp_path),
        }
    ]
    monkeypatch.setenv("PARITY_TEST_KEY", "not-a-real-key")  # read when the endpoint is served, never sent
    path = write_config(tmp_path, models, [DATASETS / "qa_capitals"], prompt_mode="native")
    cfg = load_config(path)
    bridge = LMEvalBridge(RunContext(cfg, "r1", cfg.config_hash()))
    assert bridge.natives["api"].system_instruction == SYSTEM_PROMPT  # by hand: lm-eval adds it (no layer)
    with bridge.during_run():
        assert bridge.natives["api"].system_instruction is None  # served: the layer adds it
    spec = cfg.models[0]
    assert isinstance(spec, OpenAISpec)
    assert openai_model(spec, bridge_options_opencompass())["meta_template"]["begin"]["prompt"] == SYSTEM_PROMPT
    assert (
        "begin"
        not in openai_model(served_view(spec, "http://127.0.0.1:1/v1"), bridge_options_opencompass())["meta_template"]
    )


def bridge_options_opencompass():  # noqa: ANN201 - the options model of the OpenCompass bridge
    from bridges.frameworks.opencompass.bridge import OpenCompassOptions

    return OpenCompassOptions()


# ---------------------------------------------------------------- real runs


@pytest.fixture(scope="module")
def python_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    folder = tmp_path_factory.mktemp("parity_py")
    datasets = datasets_with_shots(folder / "data")
    models = [
        {
            "name": "hasher",
            "kind": "python",
            "target": "tests._parity_models:hash_model",
            "system_prompt": SYSTEM_PROMPT,
        },
        {
            "name": "mixed",
            "kind": "python",
            "target": "tests._parity_models:MixedModel",
            "args": {
                "datasets": [str(p) for p in datasets],
                "wrong_ids": ["sci-2", "cap-2"],
                "sentence_for": ["Italy"],
            },
        },
    ]
    path = write_config(folder, models, datasets, max_parallel=1)
    assert main(["run", str(path), "--no-publish"]) == 0
    return path, datasets


@pytest.mark.framework
def test_python_model_gets_the_same_conversation_in_every_framework(python_run: tuple[Path, list[Path]]) -> None:
    path, datasets = python_run
    store = ResultsStore(path.parent / "runs" / "results.sqlite")
    for ds_path in datasets:
        expected = {i: conversation_hash(m) for i, m in received(ds_path, SYSTEM_PROMPT).items()}
        for fw in FRAMEWORKS:
            rows = store.samples(model="hasher", framework=fw, benchmark=ds_path.name)
            got = {s.sample_id: (s.output or "").strip() for s in rows}
            assert got == expected, (fw, ds_path.name)
            # The stored evidence is the conversation the model received (system prompt merged).
            first = next(s for s in rows if s.sample_id == next(iter(expected)))
            assert first.messages == received(ds_path, SYSTEM_PROMPT)[first.sample_id], fw
    records = [r for r in store.records() if r.model == "hasher" and r.status == "ok"]
    assert records and {r.extra.get("prompt_mode") for r in records} == {"parity"}


@pytest.mark.framework
def test_hf_model_gets_the_same_rendered_prompt_and_token_ids_in_every_framework(
    tmp_path: Path, tiny_model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hf backend logs each prompt as rendered by the chat template and as token ids; each framework
    (its own run, no response cache, so every request reaches the model) logs the same ones."""
    from transformers import AutoTokenizer

    datasets = datasets_with_shots(tmp_path / "data")
    model = {"name": "tiny", "kind": "hf", "path": str(tiny_model_path), "system_prompt": SYSTEM_PROMPT}
    model["generation"] = {"max_new_tokens": 4}
    path = write_config(tmp_path, [model], datasets)
    logged: dict[str, list[tuple[str, tuple[int, ...]]]] = {}
    for fw in FRAMEWORKS:
        log = tmp_path / f"prompts-{fw}.jsonl"
        monkeypatch.setenv("BENCHBRIDGE_PROMPT_LOG", str(log))
        assert main(["run", str(path), "--only", fw, "--no-cache", "--no-publish"]) == 0
        entries = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
        logged[fw] = sorted(
            (e["prompt"], tuple(e["input_ids"])) for e in entries if "Reply with OK." not in e["prompt"]
        )
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    expected = []
    for ds_path in datasets:
        for messages in received(ds_path, SYSTEM_PROMPT).values():
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            expected.append((text, tuple(tokenizer(text, add_special_tokens=False)["input_ids"])))
    assert len(expected) == 16
    assert logged["opencompass"] == sorted(expected)
    assert logged["lm_eval"] == sorted(expected)
    # evals asks qa_capitals once per scoring method (match, includes): the same prompts, twice.
    assert sorted(set(logged["openai_evals"])) == sorted(expected) and len(logged["openai_evals"]) == 8 + 2 * 8


@pytest.mark.framework
def test_deterministic_model_same_rule_cells_agree_and_the_rest_are_named(python_run: tuple[Path, list[Path]]) -> None:
    """The same answers everywhere (parity), so exact match in lm-eval and OpenCompass is one number; evals'
    includes (a different rule) counts the sentence answer too, and the report names that rule."""
    from leaderboards.agreement import PROMPTS, RULES, SAME_RULE_DIFF, agreement_rows
    from leaderboards.evidence import CAUSE_PROMPT, disagreements, framework_cells

    path, _ = python_run
    store = ResultsStore(path.parent / "runs" / "results.sqlite")
    _, rows = agreement_rows(store.records())
    by = {(r["benchmark"], r["model"]): r for r in rows}
    qa = by[("qa_capitals", "mixed")]  # cap-2 wrong, cap-3 "The answer is Rome."
    assert (qa["lm_eval"], qa["opencompass"], qa["openai_evals:match_accuracy"]) == (75.0, 75.0, 75.0)
    assert qa["openai_evals:includes_accuracy"] == 87.5
    assert qa[PROMPTS] == "parity" and qa[SAME_RULE_DIFF] == 0.0
    assert qa[RULES] == (
        "exact match: lm_eval, opencompass (0.00 apart); "
        "answer contains the key: openai_evals:includes_accuracy; answer starts with the key: openai_evals:match_accuracy"
    )
    mcq = by[("mcq_science_en", "mixed")]  # sci-2 wrong: 7 of 8 in every framework
    assert (mcq["lm_eval"], mcq["opencompass"], mcq["openai_evals:match_accuracy"]) == (87.5, 87.5, 87.5)
    assert mcq[SAME_RULE_DIFF] is None  # three frameworks, three rules for an mcq answer, named:
    assert mcq[RULES] == (
        "answer starts with the key: openai_evals:match_accuracy; the letter the answer starts with: lm_eval; "
        "the option found in the answer: opencompass"
    )
    # Sample by sample: where scores differ, every framework had the same input, so the cause is never the prompt.
    found = disagreements(framework_cells(store, "mixed", "qa_capitals"))
    assert [d.sample_id for d in found] == ["cap-3"]
    (cap3,) = found
    assert cap3.cause != CAUSE_PROMPT
    assert len({s.input_text for s, _, _ in cap3.by_framework.values()}) == 1


# ---------------------------------------------------------------- evidence and board (fast)


def test_rendered_prompt_against_messages_is_not_called_a_different_prompt() -> None:
    from leaderboards.evidence import CAUSE_PROMPT, CAUSE_UNCOMPARABLE, cause

    rendered = ("<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n", "Paris is it", "Paris is it")
    messages = ("user: Q", "The answer is Paris.", "The answer is Paris.")
    assert cause([rendered, messages], ["prompt", "messages"]) == CAUSE_UNCOMPARABLE
    assert cause([rendered, messages]) == CAUSE_PROMPT  # without kinds: compared literally, as before
    assert cause([("user: P", "a", "a"), ("user: Q", "b", "b")], ["messages", "messages"]) == CAUSE_PROMPT


def test_board_states_the_prompt_mode_of_its_values() -> None:
    from bridges.records import Record
    from leaderboards.board import build_board
    from leaderboards.publish import leaderboard_md
    from leaderboards.scoring_rules import prompt_modes_line

    def rec(fw: str, mode: str | None) -> Record:
        extra = {"prompt_mode": mode} if mode else {}
        return Record(
            run_id="r", model="m", framework=fw, framework_version="1", benchmark="qa", metric="em", value=0.5,
            primary=True, extra=extra,
        )  # fmt: skip

    records = [rec("lm_eval", "parity"), rec("opencompass", "parity"), rec("openai_evals", "native")]
    line = prompt_modes_line(records)
    assert line is not None and line.startswith("Prompt mode: native for 1 value, parity for 2 values.")
    assert prompt_modes_line([rec("lm_eval", None)]) is None  # records from before prompt modes
    board = build_board(records)
    assert "Prompt mode: native for 1 value, parity for 2 values." in leaderboard_md(board, "now")
    shown = {c.column.framework: board.provenance(c)["prompt_mode"] for row in board.rows for c in row.cells.values()}
    assert shown == {"lm_eval": "parity", "opencompass": "parity", "openai_evals": "native"}

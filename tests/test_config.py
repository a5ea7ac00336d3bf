"""Run configs and model specs: interpolation, validation errors naming file and key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bridges import BenchbridgeError, load_config
from bridges.models import HFSpec, PythonSpec, get_model
from tests.conftest import DATASETS, ROOT


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(text, encoding="utf-8")
    return path


BASE = f"""
name: t
work_dir: runs
models:
  - name: keyed
    kind: python
    target: bridges.testing:AnswerKeyModel
    args: {{datasets: ["{DATASETS / "qa_capitals"}"], wrong_ids: [cap-2]}}
datasets:
  - path: {DATASETS / "qa_capitals"}
"""


def test_config_loads_models_datasets_and_resolves_paths(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, BASE + "  - path: ${DATA_ROOT:-" + str(DATASETS) + "}/mcq_science_en\n"))
    assert [d.name for d in cfg.datasets] == ["qa_capitals", "mcq_science_en"]
    assert isinstance(cfg.models[0], PythonSpec)
    assert cfg.work_dir == tmp_path / "runs"
    assert cfg.results_db == tmp_path / "runs" / "results.sqlite"
    assert len(cfg.config_hash()) == 16


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("  - name: m2\n    kind: ggml\n", "models[1].kind: unknown model kind 'ggml'; known: hf, openai, python"),
        ("  - name: m2\n    kind: hf\n", "models[1].path: Field required"),
        (
            "  - name: m2\n    kind: hf\n    path: /x\n    temprature: 1\n",
            "models[1].temprature: Extra inputs are not permitted",
        ),
        (
            "  - name: m2\n    kind: openai\n    model: ${NOT_SET_ANYWHERE}\n",
            "models[1].model: environment variable ${NOT_SET_ANYWHERE} is not set",
        ),
    ],
)
def test_bad_models_name_file_and_key(tmp_path: Path, extra: str, expected: str) -> None:
    text = BASE.replace("\ndatasets:", "\n" + extra + "datasets:")
    with pytest.raises(BenchbridgeError) as err:
        load_config(write(tmp_path, text))
    assert str(err.value).startswith(str(tmp_path / "run.yaml"))
    assert expected in str(err.value)


def test_unknown_framework_and_missing_dataset(tmp_path: Path) -> None:
    with pytest.raises(BenchbridgeError, match=r"frameworks.helm: unknown framework 'helm'"):
        load_config(write(tmp_path, BASE + "frameworks:\n  helm: {}\n"))
    with pytest.raises(BenchbridgeError, match=r"datasets\[1\].path: .*nowhere: dataset folder not found"):
        load_config(write(tmp_path, BASE + "  - path: nowhere\n"))


def test_answer_key_model_through_the_layer() -> None:
    spec = PythonSpec(
        name="k",
        target="bridges.testing:AnswerKeyModel",
        args={"datasets": [str(DATASETS / "qa_capitals")], "wrong_ids": ["cap-2"]},
        system_prompt="You are terse.",
    )
    model = get_model(spec)
    answers = model.chat(["What is the capital of France?", "Q: What is the capital of Japan?", "unrelated"])
    assert answers == ["Paris", "I don't know", ""]
    assert get_model(spec) is model


def test_spec_identity_ignores_display_name_but_not_prompt() -> None:
    a = HFSpec(name="a", path="/m")
    assert a.identity() == HFSpec(name="b", path="/m").identity()
    assert a.identity() != HFSpec(name="a", path="/m", system_prompt="Be brief.").identity()


def test_help_imports_no_framework() -> None:
    code = (
        "import sys; from bridges.cli import build_parser; build_parser().format_help(); "
        "bad = [m for m in ('opencompass', 'evals', 'alpaca_eval', 'lm_eval', 'torch', 'transformers') if m in sys.modules]; "
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


def test_model_system_prompt_comes_first_and_keeps_the_datasets_own() -> None:
    from bridges.models import ChatRequest, as_messages

    spec = PythonSpec(name="echo", target="tests.test_config:echo_system", system_prompt="Be terse.")
    model = get_model(spec)
    own = ChatRequest(as_messages([{"role": "system", "content": "City only."}, {"role": "user", "content": "Q"}]))
    none = ChatRequest(as_messages("Q"))
    assert [r.text for r in model.generate([own, none])] == ["Be terse.\n\nCity only.", "Be terse."]


def echo_system(batch: list[list[dict[str, str]]]) -> list[str]:
    """A python model answering with the conversation's system message: shows what the layer sent."""
    return [next((m["content"] for m in conv if m["role"] == "system"), "") for conv in batch]


def test_missing_weights_fail_prepare_and_run_but_not_loading_the_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`board CONFIG` and `publish CONFIG` read only the store: they work on a machine without the weights.
    `prepare` and `run` check the folders before anything starts, naming the config line and key."""
    from bridges.cli import main

    text = BASE.replace("models:\n", "models:\n  - {name: gone, kind: hf, path: ./no-such-weights}\n", 1)
    text += "frameworks:\n  lm_eval: {}\n"
    cfg = load_config(write(tmp_path, text))
    assert [m.name for m in cfg.models] == ["gone", "keyed"]
    for argv in (["prepare", str(tmp_path / "run.yaml"), "--out", str(tmp_path / "out")], ["run", str(tmp_path / "run.yaml")]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        # resolved against the config's folder, as datasets are
        assert f"run.yaml:5: models[0].path: {tmp_path.resolve() / 'no-such-weights'}: model folder not found" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.yaml"]


def test_board_on_a_builtin_model_config_converts_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Loading a config never converts a model: `board CONFIG` works where the converted folder is absent
    and creates nothing (the conversion takes ~45 s and belongs to a run)."""
    from bridges.cli import main
    from leaderboards import ResultsStore
    from leaderboards.testing import manifest_for, sample_record

    converted = tmp_path / "models"  # where builtin:smollm2-135m-instruct would be converted
    monkeypatch.setenv("BENCHBRIDGE_MODELS", str(converted))
    text = BASE.replace("models:\n", "models:\n  - {name: smol, kind: hf, path: builtin:smollm2-135m-instruct}\n", 1)
    path = write(tmp_path, text)
    cfg = load_config(path)
    assert cfg.models[0].path == "builtin:smollm2-135m-instruct"  # type: ignore[attr-defined]
    record = sample_record("r1", "2026-11-30T00:00:00+00:00", "lm_eval", "smol", "qa_capitals", "exact_match", 0.5)
    ResultsStore(cfg.results_db).add_run(manifest_for("r1", "lm_eval", [record]), [record])
    assert main(["board", str(path)]) == 0
    assert "smol" in capsys.readouterr().out
    assert not converted.exists()


def test_model_paths_resolve_against_the_config_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`path`, `tokenizer_path` and `peft_path` resolve like datasets do, whatever the working directory;
    hub ids, absolute paths and `~` stay as written."""
    sub = tmp_path / "configs" / "exp"
    for folder in ("weights/base", "tok", "adapters/a1"):
        (sub / folder).mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    text = BASE.replace(
        "models:\n",
        "models:\n"
        "  - {name: local, kind: hf, path: ./weights/base, tokenizer_path: tok, peft_path: adapters/a1}\n"
        "  - {name: hub, kind: hf, path: org/name, tokenizer_path: ~/tok}\n"
        "  - {name: api, kind: openai, model: gpt-x, tokenizer_path: ../exp/tok}\n",
        1,
    )
    (sub / "run.yaml").write_text(text, encoding="utf-8")
    cfg = load_config(sub / "run.yaml")
    local, hub, api = (cfg.model(n, "t") for n in ("local", "hub", "api"))
    assert isinstance(local, HFSpec) and isinstance(hub, HFSpec)
    assert (local.path, local.tokenizer_path, local.peft_path) == (
        str(sub / "weights" / "base"),
        str(sub / "tok"),
        str(sub / "adapters" / "a1"),
    )
    assert (hub.path, hub.tokenizer_path) == ("org/name", "~/tok")
    assert api.tokenizer_path == str(sub / "tok")  # type: ignore[attr-defined]

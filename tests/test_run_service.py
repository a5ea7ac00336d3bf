"""Models during a run: a spec the run serves is asked over loopback from every framework process and
loaded once, in benchbridge's process; a spec it does not serve (or no run at all) loads where it is asked."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from bridges.frameworks.openai_evals.completion import BenchbridgeCompletionFn
from bridges.frameworks.serving import ENV_URL, RemoteModel, model_for, run_service
from bridges.models import ChatRequest, Model, parse_model_spec
from bridges.models._loads import ENV_LOADS, loads_by_ref
from tests.conftest import DATASETS

QUESTIONS = {"What is the capital of France?": "Paris", "What is the capital of Japan?": "Tokyo"}


def keyed_spec() -> object:
    # A fresh `wrong_ids` entry: a new answer identity, so nothing is in the session's response cache.
    args = {"datasets": [str(DATASETS / "qa_capitals")], "wrong_ids": [f"none-{uuid.uuid4().hex}"]}
    return parse_model_spec(
        {"name": "keyed", "kind": "python", "target": "bridges.testing:AnswerKeyModel", "args": args}
    )


def test_a_served_spec_is_loaded_once_for_every_client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loads = tmp_path / "model_loads.jsonl"
    monkeypatch.setenv(ENV_LOADS, str(loads))
    spec = keyed_spec()
    requests = [ChatRequest((("user", q),)) for q in QUESTIONS]
    with run_service([spec]) as endpoint:
        assert endpoint is not None and endpoint.serves(spec)
        clients = [model_for(spec) for _ in range(3)]  # as three framework processes would each make one
        assert all(isinstance(c, RemoteModel) for c in clients)
        answers = [[r.text for r in c.generate(requests)] for c in clients]
        # The same name with another identity is not what the run serves: loaded where it is asked.
        assert isinstance(model_for(spec.model_copy(update={"system_prompt": "Be brief."})), Model)
        # evals' completion function, as `oaieval` builds it from a prepared registry.
        fn = BenchbridgeCompletionFn(model=spec.public_dict())
        assert isinstance(fn.model, RemoteModel)
        assert fn([{"role": "user", "content": "What is the capital of Japan?"}]).get_completions() == ["Tokyo"]
    assert answers == [list(QUESTIONS.values())] * 3
    assert loads_by_ref(loads) == {"python:bridges.testing:AnswerKeyModel": 1}
    # After the run (a prepared registry run by hand) the model is the layer in this process.
    assert ENV_URL not in os.environ
    assert isinstance(model_for(spec), Model)


def test_nothing_is_loaded_while_every_answer_is_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = keyed_spec()
    requests = [ChatRequest((("user", q),)) for q in QUESTIONS]
    with run_service([spec]):
        first = [r.text for r in model_for(spec).generate(requests)]
    loads = tmp_path / "model_loads.jsonl"
    monkeypatch.setenv(ENV_LOADS, str(loads))
    from bridges.models._layer import _MODELS

    _MODELS.clear()  # a new benchbridge process: nothing loaded yet
    with run_service([spec]):
        again = [r.text for r in model_for(spec).generate(requests)]
    assert again == first == list(QUESTIONS.values())
    assert not loads.exists()


def test_a_served_models_error_reaches_the_framework_as_the_models_own(tmp_path: Path) -> None:
    spec = parse_model_spec({"name": "broken", "kind": "python", "target": "tests._evals_models:CrashOnQuestions"})
    with run_service([spec]):
        remote = model_for(spec)
        assert isinstance(remote, RemoteModel)
        assert [r.text for r in remote.generate([ChatRequest((("user", "Say OK."),))])] == ["OK"]
        # In the framework's log as if the model ran there: `RuntimeError: <its message>`.
        with pytest.raises(RuntimeError, match=r"^CrashOnQuestions: this model cannot answer questions$"):
            remote.generate([ChatRequest((("user", "Why?"),))])

"""`benchbridge serve` over real HTTP on loopback: models, chat (plain, forced tool call, logprobs), completions."""

from __future__ import annotations

import math
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import yaml

from bridges.loopback import Faults, LoopbackUpstream
from bridges.models import ChatRequest, Model, parse_model_spec
from bridges.serve import allowed_choices, pick_choice, serving
from tests.conftest import ROOT

ECHO = {"name": "echo", "kind": "python", "target": "tests._alpaca_models:EchoModel"}
JUDGE = {"name": "longer-judge", "kind": "python", "target": "tests._alpaca_models:LongerJudge"}

CHATGPT_FN_TOOL = {
    "type": "function",
    "function": {
        "name": "print_best_model",
        "description": "Print the best model given the preferred output.",
        "strict": True,
        "parameters": {
            "type": "object",
            "properties": {
                "best_output": {
                    "type": "string",
                    "description": "Name of the best output, should be 'Output (a)' or 'Output (b)'",
                }
            },
            "additionalProperties": False,
            "required": ["best_output"],
        },
    },
}
FORCE_CHATGPT_FN = {"type": "function", "function": {"name": "print_best_model"}}
RANKING_TOOL = {
    "type": "function",
    "function": {
        "name": "make_partial_leaderboard",
        "parameters": {
            "type": "object",
            "properties": {
                "ordered_models": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"model": {"type": "string"}, "rank": {"type": "number"}},
                    },
                }
            },
        },
    },
}


@pytest.fixture(scope="module")
def client(tiny_model_path: Path) -> Iterator[httpx.Client]:
    tiny = {"name": "tiny", "kind": "hf", "path": str(tiny_model_path), "generation": {"max_new_tokens": 3}}
    specs = [parse_model_spec(s) for s in (ECHO, JUDGE, tiny)]
    with serving(specs) as base_url, httpx.Client(base_url=base_url, timeout=60) as http:
        assert base_url.startswith("http://127.0.0.1:")
        yield http


def chat(client: httpx.Client, model: str, content: str, **body: object) -> httpx.Response:
    return client.post(
        "/chat/completions", json={"model": model, "messages": [{"role": "user", "content": content}], **body}
    )


def tool_arguments(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    return call["function"]["arguments"]


def test_models_lists_every_served_model(client: httpx.Client) -> None:
    data = client.get("/models").json()
    assert data["object"] == "list"
    assert [m["id"] for m in data["data"]] == ["echo", "longer-judge", "tiny"]


def test_chat_plain_answer_and_usage(client: httpx.Client) -> None:
    body = chat(client, "echo", "first line\nsay this back").json()
    assert body["object"] == "chat.completion"
    assert body["model"] == "echo"
    (choice,) = body["choices"]
    assert choice["message"] == {"role": "assistant", "content": "say this back", "refusal": None}
    assert choice["finish_reason"] == "stop"
    assert choice["logprobs"] is None
    # A python model counts no tokens: usage falls back to words (5 in the prompt, 3 in the answer).
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}


def test_forced_tool_call_reads_the_choice_from_the_judges_answer(client: httpx.Client) -> None:
    prompt = (
        "## Output (a):\nshort\n\n## Output (b):\nmuch longer answer\n\n## Which is best, Output (a) or Output (b)?"
    )
    body = {"tools": [CHATGPT_FN_TOOL], "tool_choice": FORCE_CHATGPT_FN}
    assert tool_arguments(chat(client, "longer-judge", prompt, **body)) == '{"best_output": "Output (b)"}'


@pytest.mark.parametrize(
    ("answer", "arguments"),
    [
        ("I pick output (A), clearly.", '{"best_output": "Output (a)"}'),  # case-insensitive, unambiguous
        ("Output (b) beats Output (a)", '{"best_output": "Output (b)"}'),  # the first one named
        ("Neither of them.", '{"best_output": "Neither of them."}'),  # no choice: verbatim, the parser reports it
    ],
)
def test_forced_tool_call_is_constrained_to_the_described_choices(
    client: httpx.Client, answer: str, arguments: str
) -> None:
    body = {"tools": [CHATGPT_FN_TOOL], "tool_choice": FORCE_CHATGPT_FN}
    assert tool_arguments(chat(client, "echo", answer, **body)) == arguments


def test_forced_tool_call_with_an_enum_and_a_ranking(client: httpx.Client) -> None:
    enum_tool = {
        "type": "function",
        "function": {
            "name": "verdict",
            "parameters": {"type": "object", "properties": {"winner": {"type": "string", "enum": ["left", "right"]}}},
        },
    }
    force = {"type": "function", "function": {"name": "verdict"}}
    answer = tool_arguments(chat(client, "echo", "the right one", tools=[enum_tool], tool_choice=force))
    assert answer == '{"winner": "right"}'
    # AlpacaEval's *_fn ranking judges: identifiers come from the prompt; case tells m from M.
    prompt = '{"model": "m", "output": """a"""}, {"model": "M", "output": """b"""}\nM'
    force = {"type": "function", "function": {"name": "make_partial_leaderboard"}}
    answer = tool_arguments(chat(client, "echo", prompt, tools=[RANKING_TOOL], tool_choice=force))
    assert answer == '{"ordered_models": [{"model": "M", "rank": 1}, {"model": "m", "rank": 2}]}'


def test_tool_choice_errors_are_openai_errors(client: httpx.Client) -> None:
    force = {"type": "function", "function": {"name": "missing"}}
    r = chat(client, "echo", "x", tools=[CHATGPT_FN_TOOL], tool_choice=force)
    assert r.status_code == 400
    assert r.json()["error"]["message"] == "tool_choice names function 'missing', which is not in tools"
    assert r.json()["error"]["param"] == "tool_choice"


def test_logprobs_of_a_python_model_are_its_answer_with_logprob_0(client: httpx.Client) -> None:
    body = chat(client, "echo", "m", logprobs=True, top_logprobs=5).json()
    content = body["choices"][0]["logprobs"]["content"]
    assert content == [
        {"token": "m", "logprob": 0.0, "bytes": [109], "top_logprobs": [{"token": "m", "logprob": 0.0, "bytes": [109]}]}
    ]


def test_logprobs_of_an_hf_model_come_from_its_logits(client: httpx.Client, tiny_model_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    question = "Which is better, m or M?"
    body = chat(client, "tiny", question, max_tokens=2, logprobs=True, top_logprobs=5).json()
    (choice,) = body["choices"]
    content = choice["logprobs"]["content"]
    assert 1 <= len(content) <= 2
    for token in content:
        values = [t["logprob"] for t in token["top_logprobs"]]
        assert len(values) == 5
        assert all(isinstance(v, float) and math.isfinite(v) and v < 0 for v in values)
        assert values == sorted(values, reverse=True)
        # Greedy decoding: the chosen token is the most likely one.
        assert token["logprob"] == pytest.approx(values[0], abs=1e-5)
        assert token["token"] == token["top_logprobs"][0]["token"]
    # The first token's top 5 are the model's own next-token distribution.
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path).eval()
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
    )
    with torch.no_grad():
        logits = model(**tokenizer(text, return_tensors="pt", add_special_tokens=False)).logits[0, -1]
    top = torch.topk(torch.log_softmax(logits.float(), dim=-1), 5)
    expected = [(tokenizer.decode([int(i)]), float(v)) for v, i in zip(top.values, top.indices, strict=True)]
    served = [(t["token"], t["logprob"]) for t in content[0]["top_logprobs"]]
    assert [t for t, _ in served] == [t for t, _ in expected]
    assert [v for _, v in served] == pytest.approx([v for _, v in expected], abs=1e-4)
    assert body["usage"]["completion_tokens"] == len(content)
    assert body["usage"]["prompt_tokens"] > 5  # tokenizer tokens, not words
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
    if len(content) == 2:
        assert choice["finish_reason"] == "length"


def test_completions_answer_each_prompt(client: httpx.Client) -> None:
    r = client.post("/completions", json={"model": "echo", "prompt": ["one two", "three"], "logprobs": 1})
    body = r.json()
    assert body["object"] == "text_completion"
    assert [(c["index"], c["text"]) for c in body["choices"]] == [(0, "one two"), (1, "three")]
    assert body["choices"][0]["logprobs"] == {
        "tokens": ["one two"],
        "token_logprobs": [0.0],
        "top_logprobs": [{"one two": 0.0}],
        "text_offset": [0],
    }
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/chat/completions", {"model": "nope", "messages": [{"role": "user", "content": "x"}]}, 404,
         "model 'nope' is not served here (serving: echo, longer-judge, tiny)"),
        ("/chat/completions", {"model": "echo", "messages": [{"role": "user", "content": "x"}], "stream": True}, 400,
         "stream: streaming is not supported by benchbridge serve"),
        ("/chat/completions", {"model": "echo", "messages": [{"role": "user", "content": "x"}], "n": 2}, 400,
         "n: only n=1 is supported by benchbridge serve"),
        ("/chat/completions", {"model": "echo", "messages": []}, 400,
         "messages: List should have at least 1 item after validation, not 0"),
        ("/completions", {"model": "echo", "prompt": "x", "echo": True}, 400, "echo: not supported by benchbridge serve"),
    ],
)  # fmt: skip
def test_bad_requests_get_openai_style_errors(
    client: httpx.Client, path: str, body: dict, status: int, message: str
) -> None:
    r = client.post(path, json=body)
    assert r.status_code == status
    assert r.json()["error"]["message"] == message


def test_malformed_bodies_and_unknown_routes_get_openai_style_errors(client: httpx.Client) -> None:
    r = client.post(
        "/chat/completions", content=b'{"model": "echo", "messages": [', headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 400
    assert r.json()["error"]["message"].startswith("body: Invalid JSON")
    r = client.post("/chat/completions", json={"messages": [{"role": "user", "content": "x"}]})
    assert (r.status_code, r.json()["error"]["message"]) == (400, "model: Field required")
    r = client.post("/completions", json={"model": "echo", "prompt": "x", "max_tokens": 0})
    assert (r.status_code, r.json()["error"]["param"]) == (400, "max_tokens")
    r = client.get("/nowhere")
    assert (r.status_code, r.json()["error"]["message"]) == (404, "GET /v1/nowhere: Not Found")
    r = client.get("/chat/completions")
    assert (r.status_code, r.json()["error"]["type"], r.headers["allow"]) == (405, "invalid_request_error", "POST")
    r = client.post("/models", json={})
    assert (r.status_code, r.headers["allow"]) == (405, "GET, HEAD")
    r = client.head("/models")
    assert (r.status_code, r.content, r.headers["content-type"]) == (200, b"", "application/json")


def test_choice_helpers() -> None:
    assert allowed_choices({"type": "string", "enum": ["x", "y"]}) == ["x", "y"]
    assert allowed_choices({"description": "should be 'Output (a)' or 'Output (b)'"}) == ["Output (a)", "Output (b)"]
    assert allowed_choices({"description": "the 'only' one"}) == []
    assert pick_choice("m", ["m", "M"]) == "m"
    assert pick_choice("Model M wins", ["m", "M"]) == "M"
    assert pick_choice("output (A)", ["Output (a)", "Output (b)"]) == "Output (a)"
    assert pick_choice("mm", ["m", "M"]) is None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_cli_serve(config: Path, model: str, **env: str) -> tuple[subprocess.Popen[str], int, httpx.Response]:
    """`benchbridge serve CONFIG --model MODEL` on a free port, once it answers `/v1/models` (that answer)."""
    port = free_port()
    cmd = [sys.executable, "-m", "bridges.cli", "serve", str(config), "--model", model, "--port", str(port)]
    proc = subprocess.Popen(
        cmd,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        stderr=subprocess.PIPE,
        text=True,
        # Ctrl-C as a terminal delivers it, even when the suite itself was started with SIGINT ignored (a
        # background job of a non-interactive shell): the child would inherit that and exit 0, not 130.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            return proc, port, httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2)
        except httpx.TransportError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                _, err = proc.communicate(timeout=30)
                raise AssertionError(f"benchbridge serve did not start: {err}") from None
            time.sleep(0.2)


def test_cli_serve_answers_until_stopped(tmp_path: Path) -> None:
    config = tmp_path / "serve.yaml"
    config.write_text(
        "name: s\nmodels:\n  - {name: echo, kind: python, target: 'tests._alpaca_models:EchoModel'}\n", "utf-8"
    )
    proc, port, r = start_cli_serve(config, "echo")
    try:
        assert [m["id"] for m in r.json()["data"]] == ["echo"]
        answer = httpx.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            json={"model": "echo", "messages": [{"role": "user", "content": "ping"}]},
            timeout=30,
        ).json()
        assert answer["choices"][0]["message"]["content"] == "ping"
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert f"echo at http://127.0.0.1:{port}/v1" in err


def test_cli_serve_unknown_model_is_a_one_line_error(tmp_path: Path) -> None:
    from bridges.cli import main

    config = tmp_path / "serve.yaml"
    config.write_text("name: s\nmodels:\n  - {name: echo, kind: python, target: 'tests._alpaca_models:EchoModel'}\n")
    assert main(["serve", str(config), "--model", "judge"]) == 2


def loopback_spec(up: LoopbackUpstream, name: str) -> dict[str, object]:
    return {
        "name": name,
        "kind": "openai",
        "model": "loopback",
        "base_url": up.base_url,
        "api_key_env": "BENCHBRIDGE_TEST_SERVE_UPSTREAM_KEY",
        "limits": {"max_concurrency": 8, "max_retries": 12, "backoff_s": 0.02, "backoff_max_s": 0.3},
    }


def test_an_openai_model_is_answered_on_the_event_loop_through_faults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An `openai` model is awaited on the server's event loop (no request thread), with the layer's retries:
    40 questions through 30% 500s and 10% dropped connections get the answers a clean upstream gives."""
    monkeypatch.setenv("BENCHBRIDGE_CACHE", str(tmp_path / "cache.sqlite"))
    monkeypatch.setenv("BENCHBRIDGE_TEST_SERVE_UPSTREAM_KEY", "sk-loopback")
    questions = [f"question {i}" for i in range(40)]
    faults = Faults(error_rate=0.3, drop_rate=0.1, seed=3)
    with LoopbackUpstream(latency_s=0.01, faults=faults, max_seconds=120) as up:
        spec = parse_model_spec(loopback_spec(up, "faulty"))
        threads_before = set(threading.enumerate())
        with serving(spec) as base_url, httpx.Client(base_url=base_url, timeout=60) as http:
            with ThreadPoolExecutor(8) as pool:
                responses = list(pool.map(lambda q: chat(http, "faulty", q), questions))
            started = set(threading.enumerate()) - threads_before
            assert not [t.name for t in started if t.name.startswith("serve-request")]
        stats = up.stats()
    assert [r.status_code for r in responses] == [200] * 40
    served = [r.json()["choices"][0]["message"]["content"] for r in responses]
    assert stats["statuses"]["500"] > 5 and stats["statuses"]["dropped"] > 0
    assert sorted(stats["answered"].values()) == [1] * 40  # each question answered once: retried, not repeated
    monkeypatch.setenv("BENCHBRIDGE_NO_CACHE", "1")
    with LoopbackUpstream(latency_s=0.0, max_seconds=60) as clean:
        expected = Model(parse_model_spec(loopback_spec(clean, "clean"))).generate(
            [ChatRequest((("user", q),)) for q in questions]
        )
    assert served == [a.text for a in expected]


def test_cli_serve_of_an_openai_model_closes_its_connections_on_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The event loop's upstream connections are closed before it ends: no asyncio 'unclosed transport' warning."""
    monkeypatch.setenv("BENCHBRIDGE_TEST_SERVE_UPSTREAM_KEY", "sk-loopback")
    with LoopbackUpstream(latency_s=0.0, max_seconds=120) as up:
        config = tmp_path / "serve.yaml"
        config.write_text(yaml.safe_dump({"name": "s", "models": [loopback_spec(up, "remote")]}), "utf-8")
        proc, port, _ = start_cli_serve(config, "remote", BENCHBRIDGE_CACHE=str(tmp_path / "cache.sqlite"))
        try:
            answer = httpx.post(
                f"http://127.0.0.1:{port}/v1/chat/completions",
                json={"model": "remote", "messages": [{"role": "user", "content": "ping"}]},
                timeout=30,
            )
        finally:
            proc.send_signal(signal.SIGINT)  # Ctrl-C: the process ends by unwinding (SIGTERM ends it at once)
            _, err = proc.communicate(timeout=30)
    assert answer.status_code == 200 and answer.json()["choices"][0]["message"]["content"].endswith("to: ping")
    assert proc.returncode == 130, err
    assert "unclosed" not in err.lower() and "Traceback" not in err, err
    with sqlite3.connect(tmp_path / "cache.sqlite") as db:  # the answer was committed by the time serve exited
        assert db.execute("SELECT COUNT(*) FROM responses").fetchone()[0] == 1

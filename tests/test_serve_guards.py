"""`benchbridge serve` hardening (issue 11): API key, loopback-only without one, body limit, timeouts, and a
model that raises SystemExit. The CLI cases run `benchbridge serve` as a real subprocess on loopback."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridges import BenchbridgeError
from bridges.models import parse_model_spec
from bridges.serve import is_loopback, serving
from tests._alpaca_models import EchoModel
from tests.conftest import DATASETS, ROOT

KEY_ENV = "TEST_SERVE_GUARD_KEY"
KEY = "guard-key-" + "7" * 24
CONFIG = """name: s
models:
  - {name: echo, kind: python, target: 'tests._alpaca_models:EchoModel'}
  - {name: exiting, kind: python, target: 'tests.test_serve_guards:ExitingModel'}
"""
MIB = 1024 * 1024
LEAK_ENV, LEAK = "SERVE_GUARD_LEAK_TOKEN", "leak-value-9f8e7d6c5b4a"


class ExitingModel(EchoModel):
    """Echoes, but raises what the prompt names: user code ending the process, or Ctrl-C, from inside a model."""

    RAISES = {"exit": SystemExit, "interrupt": KeyboardInterrupt, "generator-exit": GeneratorExit}

    def __call__(self, batch: list[Any]) -> list[str]:
        answers = super().__call__(batch)
        if "leak" in answers:  # an upstream error echoing a key
            raise RuntimeError(f"upstream rejected key {os.environ[LEAK_ENV]}")
        for answer in answers:
            if answer in self.RAISES:
                raise self.RAISES[answer](f"raised by the model on {answer!r}\nsecond line")
        return answers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "BENCHBRIDGE_SERVE_KEY"}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


def serve_cmd(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "bridges.cli", "serve", str(config), "--model", "echo,exiting", *args]


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("serve-guards") / "serve.yaml"
    path.write_text(CONFIG, "utf-8")
    return path


@dataclass
class Served:
    proc: subprocess.Popen[str]
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def rss_kb(self, field: str = "VmRSS") -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
        raise AssertionError(f"no {field} in /proc/{self.proc.pid}/status")

    def chat(self, content: str, key: str | None = KEY) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
        body = {"model": "exiting", "messages": [{"role": "user", "content": content}]}
        return httpx.post(f"{self.url}/chat/completions", json=body, headers=headers, timeout=30)


def start_serve(config: Path, cwd: Path, *args: str) -> Served:
    port = free_port()
    cmd = serve_cmd(config, "--port", str(port), *args)
    env = cli_env(**{KEY_ENV: KEY, LEAK_ENV: LEAK})
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return Served(proc, port)
        except OSError:
            if proc.poll() is not None:
                raise AssertionError(f"benchbridge serve exited: {proc.stderr.read() if proc.stderr else ''}") from None
            assert time.monotonic() < deadline, "benchbridge serve did not start"
            time.sleep(0.1)


def stop(served: Served) -> str:
    served.proc.terminate()
    _, err = served.proc.communicate(timeout=30)
    return err


@pytest.fixture(scope="module")
def exposed(config: Path) -> Iterator[Served]:
    """`benchbridge serve --host 0.0.0.0` with a key, so it may listen beyond loopback."""
    served = start_serve(config, config.parent, "--host", "0.0.0.0", "--api-key-env", KEY_ENV)
    try:
        yield served
    finally:
        err = stop(served)
        assert KEY not in err  # the key is never printed


# ---- refusals before anything is served: exit 2, one line, no traceback ----


@pytest.mark.parametrize(
    ("args", "env", "names"),
    [
        (["--host", "0.0.0.0"], {}, ["--host 0.0.0.0", "--api-key-env", "BENCHBRIDGE_SERVE_KEY"]),
        (["--host", "192.0.2.1"], {}, ["--host 192.0.2.1", "--api-key-env"]),
        (["--host", "example.org"], {}, ["--host example.org", "not loopback"]),
        (["--api-key-env", "SERVE_KEY_NOT_SET_ANYWHERE"], {}, ["SERVE_KEY_NOT_SET_ANYWHERE", "not set"]),
        (["--api-key-env", "EMPTY_SERVE_KEY"], {"EMPTY_SERVE_KEY": ""}, ["EMPTY_SERVE_KEY", "not set or empty"]),
        (["--api-key-env", "SPACED_KEY"], {"SPACED_KEY": "has a space"}, ["SPACED_KEY", "printable ASCII"]),
        (["--port", "99999"], {}, ["--port 99999", "between 1 and 65535"]),
        (["--port", "0"], {}, ["--port 0"]),
        (["--port", "http"], {}, ["--port http", "not a number"]),
        (["--max-body-mb", "0"], {}, ["--max-body-mb 0"]),
    ],
)
def test_serve_refuses_bad_settings_in_one_line(
    config: Path, args: list[str], env: dict[str, str], names: list[str]
) -> None:
    started = time.monotonic()
    proc = subprocess.run(
        serve_cmd(config, *args), env=cli_env(**env), cwd=config.parent, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("benchbridge: error: serve: ")
    for name in names:
        assert name in lines[0]
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""
    assert time.monotonic() - started < 30


def test_serve_on_a_port_in_use_is_a_one_line_error(config: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cmd = serve_cmd(config, "--port", str(port))
        proc = subprocess.run(cmd, env=cli_env(), cwd=config.parent, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"benchbridge: error: serve: cannot listen on 127.0.0.1:{port}: Address already in use"
    ]


def test_serve_key_from_the_environment_or_dotenv(config: Path, tmp_path: Path) -> None:
    """Without --api-key-env, BENCHBRIDGE_SERVE_KEY (environment or .env) is the key: 0.0.0.0 is then allowed."""
    (tmp_path / ".env").write_text(f"BENCHBRIDGE_SERVE_KEY={KEY}\n", "utf-8")
    served = start_serve(config, tmp_path, "--host", "0.0.0.0")
    try:
        assert served.chat("hello", key=None).status_code == 401
        assert served.chat("hello").json()["choices"][0]["message"]["content"] == "hello"
    finally:
        err = stop(served)
    assert KEY not in err
    assert "requests need Authorization: Bearer <key>" in err


def test_loopback_hosts() -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.3.2.1", "::1", "[::1]", "localhost", "LOCALHOST"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "", "10.0.0.1", "localhost.example.org", "::ffff:1.2.3.4"))
    spec = parse_model_spec({"name": "echo", "kind": "python", "target": "tests._alpaca_models:EchoModel"})
    with pytest.raises(BenchbridgeError, match="not loopback and no API key"), serving(spec, host="0.0.0.0"):
        pass


# ---- the key ----


def test_every_request_needs_the_key(exposed: Served) -> None:
    for key in (None, "wrong", KEY[:-1], KEY + "x", f"{KEY} {KEY}"):
        r = exposed.chat("hello", key=key)
        assert r.status_code == 401, key
        error = r.json()["error"]
        assert error["code"] == "invalid_api_key"
        assert error["type"] == "invalid_request_error"
        assert KEY not in r.text
    for header in (f"Basic {KEY}", KEY, "Bearer"):
        r = httpx.get(f"{exposed.url}/models", headers={"Authorization": header}, timeout=10)
        assert r.status_code == 401, header
    # Listing models is a request too; and the scheme is case-insensitive (RFC 9110), the key is not.
    assert httpx.get(f"{exposed.url}/models", timeout=10).status_code == 401
    r = httpx.get(f"{exposed.url}/models", headers={"Authorization": f"bearer {KEY}"}, timeout=10)
    assert [m["id"] for m in r.json()["data"]] == ["echo", "exiting"]
    r = httpx.get(f"{exposed.url}/models", headers={"Authorization": f"Bearer {KEY.upper()}"}, timeout=10)
    assert r.status_code == 401
    r = exposed.chat("say this back")
    assert r.status_code == 200
    assert r.json()["choices"][0]["message"]["content"] == "say this back"


# ---- request bodies over the limit ----


def read_status(sock: socket.socket, timeout: float) -> tuple[int, bytes]:
    """The response's status and what arrived of it (until the server closed)."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass  # the server closed with our unread body in its buffer: what it answered came first
    assert data.startswith(b"HTTP/1.1 "), data[:200]
    return int(data.split(b" ", 2)[1]), data


def send_body(sock: socket.socket, head: bytes, total: int, chunked: bool) -> threading.Thread:
    """Sends `head`, then `total` bytes of body (in chunked framing if asked) until the server stops reading."""

    def run() -> None:
        block = b"x" * MIB
        try:
            sock.sendall(head)
            sent = 0
            while sent < total:
                sock.sendall(b"%x\r\n%s\r\n" % (len(block), block) if chunked else block)
                sent += len(block)
            if chunked:
                sock.sendall(b"0\r\n\r\n")
        except OSError:  # the server answered 413 and closed: the rest is not wanted
            pass

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_50_mb_body_gets_413_and_memory_stays_low(exposed: Served, chunked: bool) -> None:
    assert exposed.chat("warm").status_code == 200
    rss_before = exposed.rss_kb()
    size = 50 * MIB
    framing = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % size
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + KEY.encode() + b"\r\n" + framing + b"\r\n\r\n"
    )
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", exposed.port)) as sock:
        sender = send_body(sock, head, size, chunked)
        status, data = read_status(sock, timeout=30)
        seconds = time.monotonic() - started
        sender.join(timeout=30)
    rss_after, peak = exposed.rss_kb(), exposed.rss_kb("VmHWM")
    print(f"\n413 ({'chunked' if chunked else 'content-length'}): {seconds:.2f}s, RSS {rss_before // 1024} MB ->"
          f" {rss_after // 1024} MB, peak {peak // 1024} MB")  # fmt: skip
    assert status == 413
    assert b"limit of 8 MiB" in data
    assert peak < 200 * 1024
    assert rss_after - rss_before < 40 * 1024
    # The server still answers.
    assert exposed.chat("still here").json()["choices"][0]["message"]["content"] == "still here"


def test_max_body_mb_sets_the_limit(tmp_path: Path, config: Path) -> None:
    served = start_serve(config, tmp_path, "--max-body-mb", "0.01")  # 10 KiB, no key on loopback
    try:
        ok = served.chat("y" * 9000, key=None)
        assert ok.status_code == 200
        r = served.chat("y" * 11000, key=None)
        assert r.status_code == 413
        assert "limit of 10485 bytes" in r.json()["error"]["message"]
    finally:
        stop(served)


# ---- timeouts ----


def seconds_until_closed(sock: socket.socket, limit: float) -> tuple[float, bytes]:
    sock.settimeout(limit)
    started = time.monotonic()
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return time.monotonic() - started, data


def test_idle_connections_are_closed_after_the_keep_alive_timeout(exposed: Served) -> None:
    """The CLI's default: 5 s. A connection that never sent anything, and one idle after a request."""
    silent = socket.create_connection(("127.0.0.1", exposed.port))
    after_request = socket.create_connection(("127.0.0.1", exposed.port))
    try:
        after_request.sendall(
            b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY.encode() + b"\r\n\r\n"
        )
        took, data = seconds_until_closed(silent, 15)
        print(f"\nsilent connection closed after {took:.2f}s")
        assert data == b""
        assert 4 < took < 7
        took, data = seconds_until_closed(after_request, 15)
        assert data.startswith(b"HTTP/1.1 200 ")
        assert took < 7
    finally:
        silent.close()
        after_request.close()


@pytest.fixture(scope="module")
def quick() -> Iterator[str]:
    """In-process, with short timeouts: 1 s idle, 1.5 s for a request's head and then its body."""
    spec = parse_model_spec({"name": "echo", "kind": "python", "target": "tests._alpaca_models:EchoModel"})
    with serving(spec, keep_alive_timeout_s=1.0, body_timeout_s=1.5, max_body_bytes=4096) as url:
        yield url


def quick_socket(url: str) -> socket.socket:
    return socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1].split("/")[0])))


def test_a_stalled_body_gets_408(quick: str) -> None:
    with quick_socket(quick) as sock:
        sock.sendall(b'POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"model"')
        took, data = seconds_until_closed(sock, 10)
    print(f"\nstalled body: 408 after {took:.2f}s")
    assert data.startswith(b"HTTP/1.1 408 ")
    assert b"request body not received within 1.5 s" in data
    assert 1.3 < took < 3


def test_a_stalled_head_gets_408(quick: str) -> None:
    with quick_socket(quick) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
        for _ in range(2):  # a byte now and then (more often than the idle timeout) does not keep it open
            time.sleep(0.6)
            sock.sendall(b"X")
        took, data = seconds_until_closed(sock, 10)  # 1.2 s after the first byte; the limit is 1.5 s
    assert data.startswith(b"HTTP/1.1 408 ")
    assert b"request head not received in time" in data
    assert 0.1 < took < 1.0


def test_a_huge_request_head_gets_431(quick: str) -> None:
    """httptools sets no limit: one endless header grew the server by ~270 MB in 20 s before this."""
    with quick_socket(quick) as sock:
        sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (70 * 1024))
        took, data = seconds_until_closed(sock, 10)
    assert data.startswith(b"HTTP/1.1 431 ")
    assert b"request head over 65536 bytes" in data
    assert took < 1
    # A large but allowed head still gets its answer.
    r = httpx.get(f"{quick}/models", headers={"X-Big": "a" * 60000}, timeout=10)
    assert r.status_code == 200


def test_idle_keep_alive_then_a_new_request_on_a_new_connection(quick: str) -> None:
    with httpx.Client(base_url=quick, timeout=10) as client:
        assert client.get("/models").status_code == 200
        time.sleep(1.5)  # the server closed the idle connection; the client reconnects
        assert client.get("/models").status_code == 200
        r = client.post(
            "/chat/completions", json={"model": "echo", "messages": [{"role": "user", "content": "z" * 5000}]}
        )
        assert r.status_code == 413


# ---- a model that raises SystemExit (or another BaseException) ----


def test_a_model_raising_systemexit_answers_500_and_serving_goes_on(config: Path, tmp_path: Path) -> None:
    served = start_serve(config, tmp_path)
    try:
        for raised in ("exit", "interrupt", "generator-exit"):
            r = served.chat(raised, key=None)
            assert r.status_code == 500, r.text
            message = r.json()["error"]["message"]
            kind = {"exit": "SystemExit", "interrupt": "KeyboardInterrupt", "generator-exit": "GeneratorExit"}[raised]
            assert message == f"model error: {kind}: raised by the model on {raised!r}"
            # The worker survived: a fresh prompt (no cached answer) is answered by the model.
            fresh = f"fresh {uuid.uuid4().hex}"
            r = served.chat(fresh, key=None)
            assert r.status_code == 200
            assert r.json()["choices"][0]["message"]["content"] == fresh
    finally:
        started = time.monotonic()
        served.proc.send_signal(signal.SIGTERM)
        try:
            served.proc.wait(timeout=10)
        finally:
            if served.proc.poll() is None:
                served.proc.kill()
        took = time.monotonic() - started
    print(f"\nSIGTERM stopped benchbridge serve in {took:.2f}s (exit {served.proc.returncode})")
    assert took < 5


def test_a_model_error_is_masked_in_the_answer_and_the_log(config: Path, tmp_path: Path) -> None:
    served = start_serve(config, tmp_path)
    try:
        r = served.chat("leak", key=None)
        assert r.status_code == 500
        assert r.json()["error"]["message"] == "model error: RuntimeError: upstream rejected key ***"
    finally:
        err = stop(served)
    assert "upstream rejected key ***" in err  # the server's log has the traceback, masked
    assert LEAK not in err


# ---- the endpoints `benchbridge run` serves for the frameworks ----


@pytest.mark.parametrize("framework", ["opencompass", "lm_eval", "alpaca_eval"])
def test_endpoints_a_run_serves_need_the_runs_random_key(
    framework: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_model_path: Path
) -> None:
    """During `run`, OpenCompass and lm-eval ask an `openai` model, and AlpacaEval a model judge, through a
    loopback endpoint: another local user must not be able to use it (nor an upstream, on the operator's key).
    The framework gets the key in its environment or client config; tests/test_openai_through_layer.py and
    tests/test_alpaca_eval.py run the frameworks for real with it."""
    import importlib

    import yaml

    import bridges.serve
    from bridges import load_config
    from bridges.frameworks import RunContext

    monkeypatch.setenv("SERVE_GUARD_UPSTREAM_KEY", "sk-upstream-never-called-0000")
    model: dict[str, Any] = {"name": "api", "kind": "openai", "model": "m", "base_url": "http://127.0.0.1:9/v1"}
    model["api_key_env"] = "SERVE_GUARD_UPSTREAM_KEY"
    dataset, options = "qa_capitals", {}
    if framework == "opencompass":
        model["tokenizer_path"] = str(tiny_model_path)  # OpenCompass's OpenAISDK needs one offline
    if framework == "alpaca_eval":
        judge = {"name": "judge", "kind": "python", "target": "tests._alpaca_models:LongerJudge"}
        dataset, options = (
            "open_instructions",
            {"reference": {"model": "api"}, "judge": {"model": judge, "kind": "tool"}},
        )
    echo = {"name": "echo", "kind": "python", "target": "tests._alpaca_models:EchoModel"}
    config = {
        "name": "c",
        "work_dir": str(tmp_path / "runs"),
        "models": [model, echo],
        "datasets": [{"path": str(DATASETS / dataset)}],
        "frameworks": {framework: options},
        # native: the frameworks' own openai clients ask the run's endpoint (parity sends every model through
        # the layer in benchbridge's process instead, so no endpoint is served to them).
        "prompt_mode": "native",
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config), "utf-8")
    module = importlib.import_module(f"bridges.frameworks.{framework}.bridge")
    bridge_class = {"opencompass": "OpenCompassBridge", "lm_eval": "LMEvalBridge", "alpaca_eval": "AlpacaEvalBridge"}
    bridge = getattr(module, bridge_class[framework])(RunContext(load_config(path), "run", "hash"))
    served: dict[str, Any] = {}
    real_serving = bridges.serve.serving

    @contextlib.contextmanager
    def recording(*args: Any, **kwargs: Any) -> Iterator[str]:
        with real_serving(*args, **kwargs) as url:
            served.update(url=url, api_key=kwargs.get("api_key"))
            yield url

    monkeypatch.setattr(bridges.serve, "serving", recording)
    endpoint = bridge._judge_endpoint(serve=True) if framework == "alpaca_eval" else bridge._served_openai_models()
    with endpoint:
        key = module.SERVED_API_KEY
        assert served["api_key"] == key
        assert len(key) >= 32
        if framework == "lm_eval":
            assert bridge.natives["api"].env_values == {"OPENAI_API_KEY": key}
        elif framework == "opencompass":
            assert bridge._environment()["OPENAI_API_KEY"] == key
        assert httpx.get(f"{served['url']}/models", timeout=10).status_code == 401
        r = httpx.get(f"{served['url']}/models", headers={"Authorization": f"Bearer {key}"}, timeout=10)
        assert [m["id"] for m in r.json()["data"]] == ["judge" if framework == "alpaca_eval" else "api"]

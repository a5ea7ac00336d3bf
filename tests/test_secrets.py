"""Secrets never reach a file benchbridge writes nor the terminal.

Planted: an OpenAI-style key in `OPENAI_API_KEY` (an `openai` model's `api_key_env`, sent to an upstream
that answers 401 quoting the Authorization header) and `MY_SECRET_TOKEN`, passed as `${MY_SECRET_TOKEN}`
in a `python` model's args. After `prepare`, `run` (lm-eval and OpenAI evals, whose child processes
write their own logs) and `publish`, no file under the work dir, the prepare and publish folders or the
response cache, and nothing printed, holds either value.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridges import load_config
from bridges.models import ChatRequest, ModelRequestRejected, parse_model_spec
from bridges.models._openai import OpenAIBackend
from bridges.models._python import PythonBackend, fingerprint
from bridges.secrets import MASK, mask, masked_output, redact, resolve_env_refs, scrub_tree
from tests._secret_models import EchoingUpstream
from tests.conftest import DATASETS, ROOT

KEY = "sk-benchbridgeTEST" + "0123456789abcdefXYZ"  # OpenAI-shaped
TOKEN = "tok-PLANTED-" + "5e3c1a9b77d2"  # not sk-shaped: only its value can find it
QA = DATASETS / "qa_capitals"


def planted(text: str | bytes) -> list[str]:
    data = text if isinstance(text, bytes) else text.encode()
    return [v for v in (KEY, TOKEN) if v.encode() in data]


# ---- masking (no framework) ----


def test_redact_masks_values_bearer_tokens_and_sk_keys() -> None:
    text = f'Authorization: Bearer abcdefgh12345678 key="{KEY}" token={TOKEN} sk-short ok'
    out = redact(text, [TOKEN])
    assert planted(out) == [] and "abcdefgh12345678" not in out
    assert out == f'Authorization: Bearer {MASK} key="{MASK}" token={MASK} sk-short ok'  # short sk- is not a key
    prose = "the bearer instruments of a task-oriented-dialogue-system"  # no digit, no sk- word: not secrets
    assert redact(prose, []) == prose


def test_mask_knows_secret_looking_and_remembered_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_SECRET_TOKEN", TOKEN)
    monkeypatch.setenv("PLAIN_SETTING", "value-that-is-long")
    assert mask(f"{TOKEN} value-that-is-long") == f"{MASK} value-that-is-long"
    monkeypatch.setenv("UPSTREAM_CRED_X", "qwertyuiop12")  # no secret-looking name
    assert mask("qwertyuiop12", ["UPSTREAM_CRED_X"]) == MASK


def test_dotenv_values_are_masked_and_an_unreadable_dotenv_breaks_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text(f"UPSTREAM_PASSWORD={TOKEN}\n", encoding="utf-8")
    assert mask(f"login {TOKEN}") == f"login {MASK}"
    (tmp_path / ".env").write_bytes(b"UPSTREAM_PASSWORD=\xff\xfe\n")
    assert mask(f"Bearer {KEY}") == f"Bearer {MASK}"


def test_an_upstream_401_echoing_the_key_is_masked_at_the_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ODD_NAME", KEY.replace("sk-", "zz-"))  # found by its api_key_env, not by its shape
    spec = parse_model_spec(
        {"name": "api", "kind": "openai", "model": "m", "base_url": "http://x/v1", "api_key_env": "ODD_NAME"}
    )
    with EchoingUpstream() as up:
        backend = OpenAIBackend(spec.model_copy(update={"base_url": up.base_url}))
        with pytest.raises(ModelRequestRejected) as info:
            backend.generate([ChatRequest((("user", "hi"),))])
    message = str(info.value)
    assert "-> 401: Incorrect API key provided: Bearer ***" in message, message
    assert "zz-benchbridge" not in message


def test_python_args_keep_env_references_until_the_model_is_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MY_SECRET_TOKEN", TOKEN)
    model = {
        "name": "tok",
        "kind": "python",
        "target": "tests._secret_models:TokenModel",
        "args": {"token": "${MY_SECRET_TOKEN}", "datasets": [str(QA)]},
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"name": "c", "models": [model], "description": "${MY_SECRET_TOKEN}"}))
    config = load_config(path)
    spec = config.models[0]
    assert spec.public_dict()["args"]["token"] == "${MY_SECRET_TOKEN}"  # what manifests and native configs get
    assert config.cfg.description == TOKEN  # elsewhere, interpolation is unchanged
    assert PythonBackend(spec).fn([[{"role": "user", "content": "What is the capital of France?"}]]) == ["Paris"]
    before = fingerprint(spec)
    monkeypatch.setenv("MY_SECRET_TOKEN", TOKEN + "-rotated")
    assert fingerprint(spec) != before  # another value may answer differently: new cache keys
    monkeypatch.delenv("MY_SECRET_TOKEN")
    with pytest.raises(Exception, match=r"model tok: args.token: environment variable \$\{MY_SECRET_TOKEN\}"):
        resolve_env_refs(spec.args, "model tok: args")  # type: ignore[attr-defined]


def test_scrub_tree_masks_text_files_and_leaves_binary_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_SECRET_TOKEN", TOKEN)
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "x.log").write_text(f"401: Bearer {KEY}\ntoken {TOKEN}\n")
    (tmp_path / "w.bin").write_bytes(b"\0\1" + TOKEN.encode())
    assert scrub_tree(tmp_path) == 1
    assert (tmp_path / "a" / "b" / "x.log").read_text() == f"401: Bearer {MASK}\ntoken {MASK}\n"
    assert (tmp_path / "w.bin").read_bytes() == b"\0\1" + TOKEN.encode()


def test_what_code_in_the_process_prints_is_masked_and_the_streams_come_back(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MY_SECRET_TOKEN", TOKEN)
    before = sys.stdout, sys.stderr
    with masked_output():
        print(f"TokenModel: connecting with token {TOKEN}", file=sys.stderr)  # a python model, built in-process
        print(f"key={KEY}")
    assert (sys.stdout, sys.stderr) == before
    out, err = capfd.readouterr()
    assert (out, err) == (f"key={MASK}\n", f"TokenModel: connecting with token {MASK}\n")


# ---- prepare, run, publish: grep everything written and printed ----


def write_config(tmp_path: Path, base_url: str) -> Path:
    config: dict[str, Any] = {
        "name": "secrets",
        "work_dir": str(tmp_path / "runs"),
        "cache": {"path": str(tmp_path / "cache" / "responses.sqlite")},
        "max_samples": 2,
        "models": [
            {
                "name": "tok",
                "kind": "python",
                "target": "tests._secret_models:TokenModel",
                "args": {"token": "${MY_SECRET_TOKEN}", "datasets": [str(QA)]},
            },
            {
                "name": "api",
                "kind": "openai",
                "model": "gpt-4o-mini",
                "base_url": base_url,
                "api_key_env": "OPENAI_API_KEY",
                # Interpolated outside python args (a value, not a reference): masked wherever written.
                "system_prompt": "You serve account ${MY_SECRET_TOKEN}.",
                "limits": {"max_retries": 0, "backoff_s": 0.01},
            },
        ],
        "datasets": [{"path": str(QA)}],
        "frameworks": {"lm_eval": {}, "openai_evals": {"methods": ["match"]}},
        "publish": {"out": str(tmp_path / "published")},
    }
    path = tmp_path / "secrets.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def _benchbridge(*args: str) -> subprocess.CompletedProcess[str]:
    """A real `benchbridge` process, as a user's terminal sees it (and free of pytest's capture)."""
    argv = [sys.executable, "-m", "bridges.cli", *args]
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)


@pytest.mark.framework  # runs lm-eval and OpenAI evals for real: the full tier
def test_no_planted_secret_in_any_file_or_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("MY_SECRET_TOKEN", TOKEN)
    with EchoingUpstream() as up:
        config = write_config(tmp_path, up.base_url)
        prepared = _benchbridge("prepare", str(config), "--out", str(tmp_path / "prepared"))
        assert prepared.returncode == 0, prepared.stderr
        ran = _benchbridge("run", str(config))
        published = _benchbridge("publish", str(config))
        assert published.returncode == 0, published.stderr
    out = prepared.stdout + ran.stdout + published.stdout
    err = prepared.stderr + ran.stderr + published.stderr
    code = ran.returncode
    assert code == 1, err  # the api model failed (401); the python model ran with its resolved token

    db = load_config(config).results_db
    with sqlite3.connect(db) as conn:
        rows = [json.loads(r) for (r,) in conn.execute("SELECT record FROM records")]
        store_text = "\n".join(
            str(v) for table in ("runs", "records") for row in conn.execute(f"SELECT * FROM {table}") for v in row
        )
    ok = {(r["framework"], r["model"]) for r in rows if r["status"] == "ok" and r["primary"]}
    assert ok == {("lm_eval", "tok"), ("openai_evals", "tok")}
    failed = [r for r in rows if r["model"] == "api" and r["status"] == "failed"]
    assert {r["framework"] for r in failed} == {"lm_eval", "openai_evals"}
    # The upstream's echo reached the failure excerpts, masked (so the check below is not vacuous).
    assert any("Bearer ***" in (r["error"] or "") for r in failed), [r["error"] for r in failed]
    assert planted(store_text) == []

    files = [p for d in ("runs", "prepared", "published", "cache") for p in (tmp_path / d).rglob("*") if p.is_file()]
    assert any(p.name == "lm_eval.log" for p in files) and any(p.suffix == ".log" and "logs" in p.parts for p in files)
    leaks = {str(p): planted(p.read_bytes()) for p in files if planted(p.read_bytes())}
    assert leaks == {}
    assert planted(out) == [] and planted(err) == []
    assert "${MY_SECRET_TOKEN}" in (tmp_path / "prepared" / "openai_evals" / "completion_fns" / "tok.yaml").read_text()

"""`bridges.frameworks.processes`: the one way every bridge starts a child process."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import pytest

from bridges.frameworks import processes
from bridges.frameworks.processes import (
    EXCERPT_CHARS,
    Interrupted,
    child_env,
    log_excerpt,
    run_child,
    stopping_children_on_signals,
)
from tests.conftest import ROOT

# A child that starts a grandchild, writes both pids, and waits.
FAMILY = (
    "import os, subprocess, sys, time\n"
    "g = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
    "open(sys.argv[1], 'w').write(f'{os.getpid()} {g.pid}')\n"
    "time.sleep(60)\n"
)


def gone(pid: int) -> bool:
    """Ended (a zombie waiting for its parent counts: it runs nothing)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except FileNotFoundError:
        return True


def wait_for_pids(path: Path) -> list[int]:
    deadline = time.monotonic() + 30
    while not (path.is_file() and len(path.read_text().split()) == 2):
        assert time.monotonic() < deadline, "the child never wrote its pids"
        time.sleep(0.05)
    return [int(p) for p in path.read_text().split()]


def test_child_env_is_one_rule_offline_importable_and_overridable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "USE_TF"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "0")  # set by the user: kept
    monkeypatch.setenv("LEAVE_ME_OUT", "x")
    (tmp_path / "only_here.py").write_text("WHERE = 'tmp'\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))  # as a test or a notebook adds a folder after start
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    env = child_env({"EXTRA": "1"}, drop=["LEAVE_ME_OUT"])
    assert (env["HF_HUB_OFFLINE"], env["HF_DATASETS_OFFLINE"], env["TRANSFORMERS_OFFLINE"], env["USE_TF"]) == (
        "1",
        "0",
        "1",
        "0",
    )
    assert "LEAVE_ME_OUT" not in env and env["EXTRA"] == "1"
    paths = env["PYTHONPATH"].split(os.pathsep)
    assert paths[:2] == [str(ROOT), str(elsewhere)]
    assert str(tmp_path) in paths
    # A fresh interpreter with it imports the project and the folder this process added.
    code = "import only_here, bridges.frameworks.processes, os; print(only_here.WHERE, os.getcwd())"
    result = run_child([sys.executable, "-c", code], log=tmp_path / "child.log", env=env)
    assert result.ok, result.excerpt()
    assert f"tmp {elsewhere}" in result.log.read_text(encoding="utf-8")


def test_a_timeout_ends_the_child_and_everything_it_started(tmp_path: Path) -> None:
    pids_file = tmp_path / "pids"
    holder: dict[str, processes.ChildResult] = {}

    def go() -> None:
        holder["r"] = run_child(
            [sys.executable, "-c", FAMILY, str(pids_file)], log=tmp_path / "t.log", env=child_env(), timeout=3
        )

    started = time.monotonic()
    thread = threading.Thread(target=go)
    thread.start()
    pids = wait_for_pids(pids_file)
    thread.join(timeout=30)
    assert not thread.is_alive()
    result = holder["r"]
    assert (result.returncode, result.timed_out, result.ok) == (None, True, False)
    assert time.monotonic() - started < 20
    deadline = time.monotonic() + 10
    while not all(gone(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(gone(p) for p in pids), pids  # the grandchild too: the whole process group
    assert processes.live_pids() == []


def test_stopping_ends_running_children_and_no_new_one_starts(tmp_path: Path) -> None:
    pids_file = tmp_path / "pids"
    errors: list[BaseException] = []

    def go() -> None:
        try:
            run_child([sys.executable, "-c", FAMILY, str(pids_file)], log=tmp_path / "s.log", env=child_env())
        except BaseException as exc:  # noqa: BLE001 - the thread reports what ended it
            errors.append(exc)

    with stopping_children_on_signals():
        thread = threading.Thread(target=go)
        thread.start()
        pids = wait_for_pids(pids_file)
        processes.stop_all()  # what Ctrl-C and SIGTERM do
        thread.join(timeout=30)
        assert [type(e) for e in errors] == [Interrupted]
        with pytest.raises(Interrupted):
            run_child([sys.executable, "-c", "pass"], log=tmp_path / "late.log", env=child_env())
        assert not (tmp_path / "late.log").exists()
    deadline = time.monotonic() + 10
    while not all(gone(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(gone(p) for p in pids), pids
    # Once the run is over, children start again.
    assert run_child([sys.executable, "-c", "pass"], log=tmp_path / "after.log", env=child_env()).ok


def test_the_failure_excerpt_is_the_logs_end_with_secrets_masked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "sk-excerpt-test-0123456789abcdef"
    monkeypatch.setenv("MY_PROVIDER_KEY", secret)
    code = "import os, sys; print('x' * 6000); print('boom with', os.environ['MY_PROVIDER_KEY']); sys.exit(3)"
    result = run_child([sys.executable, "-c", code], log=tmp_path / "f.log", env=child_env())
    assert result.returncode == 3
    text = result.excerpt(["MY_PROVIDER_KEY"])
    assert len(text) <= EXCERPT_CHARS
    assert "boom with" in text and secret not in text
    assert log_excerpt(tmp_path / "missing.log") == ""


def test_a_failed_record_keeps_the_reason_and_the_logs_end() -> None:
    from bridges.records import ERROR_CHARS, failure

    long = "lm-eval exited with code 1 (log: runs/x/lm_eval.log)\n" + "noise\n" * 3000 + "ValueError: the real cause"
    rec = failure(run_id="r", model="m", framework="f", framework_version="1", benchmark="b", error=long)
    assert rec.error is not None and len(rec.error) <= ERROR_CHARS
    assert rec.error.startswith("lm-eval exited with code 1 (log: runs/x/lm_eval.log)\n[...]\n")
    assert rec.error.endswith("ValueError: the real cause")
    short = failure(run_id="r", model="m", framework="f", framework_version="1", benchmark="b", error="why\nlog")
    assert short.error == "why\nlog"

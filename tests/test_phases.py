"""Errors by phase: exit 2 only for what is found before anything runs; once a framework runs, whatever it
raises is that framework's stored failure and the others still run (exit 1); Ctrl-C ends the frameworks'
processes (their whole process groups) and keeps what was stored (exit 130).

The bridges here are a third-party package's, installed the way any is found (a dist-info folder with
entry points in the group "benchbridge.frameworks" on the path), and go through the real machinery: the
`benchbridge` command, the runner, `Bridge.run`'s template and `bridges.frameworks.processes`; none of
them is presented as one of the four frameworks.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bridges.cli import main
from tests.conftest import DATASETS, ROOT

# The third-party package's module; `benchbridge` imports it through its entry points.
PHASE_BRIDGES = '''
import os
import sys
from pathlib import Path

from bridges import BenchbridgeError, Bridge, framework
from bridges.frameworks.processes import child_env, run_child


@framework("steady")
class Steady(Bridge):
    """Writes a report and collects one number from it."""

    name = "steady"
    distribution = "benchbridge"
    kinds = frozenset({"qa"})

    def prepare(self, out_dir):
        out_dir.mkdir(parents=True, exist_ok=True)
        return []

    def execute(self, out_dir):
        (out_dir / "report.txt").write_text("0.75", encoding="utf-8")

    def collect(self, out_dir):
        value = float((out_dir / "report.txt").read_text(encoding="utf-8"))
        return [self.record(model=m.name, benchmark="qa_capitals", metric="exact_match", value=value, primary=True)
                for m in self.config.models]


@framework("unauthorized")
class Unauthorized(Steady):
    """Fails as AlpacaEval did when generation got a 401: a BenchbridgeError raised while it runs."""

    name = "unauthorized"

    def execute(self, out_dir):
        (out_dir / "half-written.json").write_text("{", encoding="utf-8")
        raise BenchbridgeError("upstream answered 401 Unauthorized (key sk-phase-test-secret-0123456789)")


@framework("buggy")
class Buggy(Steady):
    """A bug in a layer: a RuntimeError while it runs."""

    name = "buggy"

    def execute(self, out_dir):
        raise RuntimeError("the layer broke")


@framework("sleeper")
class Sleeper(Steady):
    """Starts a child that starts a grandchild; both write their pid and wait for a minute."""

    name = "sleeper"

    def execute(self, out_dir):
        code = (
            "import os, subprocess, sys, time\\n"
            "g = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\\n"
            "open(sys.argv[1], 'w').write(f'{os.getpid()} {g.pid}')\\n"
            "time.sleep(60)\\n"
        )
        pids = Path(os.environ["PHASE_PIDS"])
        run_child([sys.executable, "-c", code, str(pids)], log=out_dir / "sleeper.log", env=child_env())
'''


def config_text(frameworks: list[str]) -> str:
    listed = "".join(f"  {fw}: {{}}\n" for fw in frameworks)
    return f"""
name: phases
work_dir: runs
max_parallel: 1
models:
  - name: keyed
    kind: python
    target: bridges.testing:AnswerKeyModel
    args: {{datasets: ["{DATASETS / "qa_capitals"}"]}}
datasets:
  - path: {DATASETS / "qa_capitals"}
frameworks:
{listed}"""


ENTRY_POINTS = "[benchbridge.frameworks]\n" + "".join(
    f"{name} = phase_bridges:{cls}\n"
    for name, cls in (("steady", "Steady"), ("unauthorized", "Unauthorized"), ("buggy", "Buggy"), ("sleeper", "Sleeper"))
)


def setup(tmp_path: Path, frameworks: list[str]) -> tuple[Path, dict[str, str]]:
    (tmp_path / "phase_bridges.py").write_text(PHASE_BRIDGES, encoding="utf-8")
    dist = tmp_path / "phase_bridges-0.1.dist-info"  # what pip writes for an installed package
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: phase-bridges\nVersion: 0.1\n", encoding="utf-8")
    (dist / "entry_points.txt").write_text(ENTRY_POINTS, encoding="utf-8")
    path = tmp_path / "run.yaml"
    path.write_text(config_text(frameworks), encoding="utf-8")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]),
        "PHASE_PIDS": str(tmp_path / "pids.txt"),
        "BENCHBRIDGE_CACHE": str(tmp_path / "cache.sqlite"),
    }
    return path, env


def benchbridge(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    """The `benchbridge` command in a fresh process (it finds the test package by its entry points)."""
    exe = Path(sys.executable).parent / "benchbridge"
    return subprocess.Popen(
        [str(exe), *args], cwd=cwd, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def stored(config_path: Path) -> dict[str, list[dict]]:
    from leaderboards import ResultsStore

    store = ResultsStore(config_path.parent / "runs" / "results.sqlite")  # the test bridges are not registered here
    out: dict[str, list[dict]] = {}
    for r in store.records():
        out.setdefault(r.framework, []).append(r.model_dump())
    return out


@pytest.mark.parametrize(
    ("failing", "cause"),
    [
        ("unauthorized", "upstream answered 401 Unauthorized"),
        ("buggy", "RuntimeError: the layer broke"),
    ],
)
def test_an_error_while_a_framework_runs_is_its_stored_failure_and_the_next_still_runs(
    tmp_path: Path, failing: str, cause: str
) -> None:
    path, env = setup(tmp_path, [failing, "steady"])
    proc = benchbridge(["run", str(path), "--no-publish"], env, tmp_path)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 1, err
    assert "Traceback" not in err + out
    records = stored(path)
    assert [(r["status"], r["value"]) for r in records["steady"]] == [("ok", 0.75)]  # the next one still ran
    [failed] = records[failing]
    assert failed["status"] == "failed" and cause in failed["error"]
    assert "sk-phase-test-secret" not in json.dumps(records)
    if failing == "buggy":  # the traceback is kept in the run folder, not shown on the terminal
        [log] = (tmp_path / "runs").glob("*/buggy/benchbridge-error.log")
        assert 'raise RuntimeError("the layer broke")' in log.read_text(encoding="utf-8")
        assert str(log) in failed["error"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_ends_the_frameworks_process_groups_and_keeps_what_was_stored(tmp_path: Path, sig: int) -> None:
    path, env = setup(tmp_path, ["steady", "sleeper"])
    proc = benchbridge(["run", str(path), "--no-publish"], env, tmp_path)
    pids_file = tmp_path / "pids.txt"
    try:
        deadline = time.monotonic() + 180
        while not (pids_file.is_file() and len(pids_file.read_text().split()) == 2):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the sleeper's child never started"
            time.sleep(0.2)
        pids = [int(p) for p in pids_file.read_text().split()]
        proc.send_signal(sig)  # to benchbridge alone, as Ctrl-C does: its children lead their own process groups
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()  # a hung run must not outlive the test
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    for pid in pids:  # the child and its grandchild: the whole group ended
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    records = stored(path)
    assert [(r["status"], r["value"]) for r in records["steady"]] == [("ok", 0.75)]
    assert "sleeper" not in records


@pytest.mark.parametrize(
    ("framework", "dataset", "kind"),
    [
        ("opencompass", "open_instructions", "open"),
        ("openai_evals", "open_instructions", "open"),
        ("lm_eval", "open_instructions", "open"),
        ("alpaca_eval", "mcq_science_en", "mcq"),
    ],
)
def test_a_dataset_assigned_to_a_framework_that_cannot_take_its_kind_is_a_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], framework: str, dataset: str, kind: str
) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(
        f"""name: kinds
work_dir: runs
models:
  - {{name: keyed, kind: python, target: bridges.testing:AnswerKeyModel, args: {{datasets: []}}}}
datasets:
  - path: {DATASETS / "qa_capitals"}
  - path: {DATASETS / dataset}
    frameworks: [{framework}]
frameworks:
  {framework}: {{}}
""",
        encoding="utf-8",
    )
    assert main(["run", str(path), "--no-publish"]) == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1
    assert f"run.yaml:8: datasets[1].frameworks[0]: {framework} cannot take dataset {dataset} of kind '{kind}'" in (
        lines[0]
    )
    assert not (tmp_path / "runs").exists()


def test_frameworks_from_entry_points_are_listed_and_imported_on_use_and_built_ins_win(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bridges._registry import Registry

    dist = tmp_path / "ep_pkg-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ep-pkg\nVersion: 1.0\n", encoding="utf-8")
    (dist / "entry_points.txt").write_text(
        "[test.benchbridge.frameworks]\nmine = ep_mod:Mine\nlm_eval = ep_mod:Impostor\n", encoding="utf-8"
    )
    (tmp_path / "ep_mod.py").write_text("class Mine: ...\nclass Impostor: ...\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry: Registry[type] = Registry("framework", entry_points="test.benchbridge.frameworks")
    registry.add_lazy("lm_eval", "bridges.frameworks.lm_eval.bridge:LMEvalBridge")
    assert registry.names() == ["lm_eval", "mine"]
    assert registry.get("mine").__name__ == "Mine"
    assert registry.get("lm_eval").__name__ == "LMEvalBridge"

"""Executor settings and vLLM/SGLang serving without a cluster or a GPU (fast tier): the `executor:` key and
`--executor` flag, how a suite is cut into units and what each asks of Ray, the engines' command lines,
the one-line refusal on a CPU machine, and a stand-in engine server started, waited for and stopped."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from bridges import load_config
from bridges._runner import make_bridges
from bridges.executors.engines import ServeSettings, engine_command, engine_key, serving_engines
from bridges.executors.ray import model_split, unit_options
from bridges.models import ChatRequest, HFSpec, OpenAISpec, get_model
from tests.conftest import DATASETS

STANDIN = Path(__file__).with_name("_standin_engine.py")


def write(tmp_path: Path, extra: str = "", models: str = "") -> Path:
    models = models or """
  - {name: a, kind: python, target: bridges.testing:AnswerKeyModel, args: {datasets: []}, resources: {num_gpus: 1, a100: 2}}
  - {name: b, kind: python, target: bridges.testing:AnswerKeyModel, args: {datasets: []}}"""
    path = tmp_path / "run.yaml"
    path.write_text(
        f"name: t\nmodels:{models}\ndatasets:\n  - path: {DATASETS / 'qa_capitals'}\n"
        f"frameworks:\n  openai_evals: {{datasets: {{qa_capitals: [match]}}}}\n{extra}",
        encoding="utf-8",
    )
    return path


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("benchbridge")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, cwd=cwd, timeout=120)


@pytest.mark.parametrize(
    ("extra", "flag", "message"),
    [
        ("executor: {kind: rya}\n", None, r"run\.yaml:\d+: executor\.kind: unknown executor 'rya'; did you mean 'ray'\?"),
        ("executor: {kind: ray, max_retries: -1}\n", None, r"executor\.max_retries: Input should be greater than or equal to 0"),
        ("executor: {kind: ray, adress: auto}\n", None, r"executor\.adress: Extra inputs are not permitted"),
        ("", "dask", r"--executor: unknown executor 'dask'; known: local, ray"),
    ],
)
def test_bad_executor_is_one_line_exit_2_and_nothing_written(tmp_path: Path, extra: str, flag: str | None, message: str) -> None:
    path = write(tmp_path, extra)
    out = run_cli("run", str(path), *(["--executor", flag] if flag else []), cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("benchbridge: error: "), out.stderr
    assert __import__("re").search(message, lines[0]), lines[0]
    assert not (tmp_path / "runs").exists()


def test_units_are_framework_x_model_unless_the_options_name_a_model(tmp_path: Path) -> None:
    config = load_config(write(tmp_path))
    (bridge,) = make_bridges(config, None, {"run_id": "r", "config_hash": "h"})
    assert model_split(bridge)  # evals on two contestants: a unit each
    graded = load_config(write(tmp_path, models="""
  - {name: a, kind: python, target: bridges.testing:AnswerKeyModel, args: {datasets: []}}
  - {name: judge, kind: python, target: bridges.testing:AnswerKeyModel, args: {datasets: []}}""").parent / "run.yaml")
    graded.cfg.frameworks["openai_evals"] = {"datasets": {"qa_capitals": ["match"]}, "grader": "judge"}
    (bridge,) = make_bridges(graded, None, {"run_id": "r", "config_hash": "h"})
    assert not model_split(bridge)  # the grader must be in the unit that grades: one unit


def test_a_units_ray_options_come_from_its_models_resources(tmp_path: Path) -> None:
    config = load_config(write(tmp_path))
    a, b = config.models
    assert unit_options(config, [a], 1.0) == {"num_cpus": 1.0, "num_gpus": 1.0, "resources": {"a100": 2.0}}
    assert unit_options(config, [b], 0.5) == {"num_cpus": 0.5}
    assert unit_options(config, [a, b], 1.0)["num_gpus"] == 1.0
    assert "resources" not in a.public_dict() and a.identity() == b.identity()  # where it runs changes no answer


def test_engine_command_lines() -> None:
    vllm = ServeSettings(engine="vllm", replicas=2, args={"max_model_len": 4096, "enforce_eager": True, "quiet": False})
    assert engine_command("m", "/w/m", vllm, 9000) == [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", "/w/m", "--served-model-name", "m",
        "--host", "127.0.0.1", "--port", "9000", "--api-key", "$BENCHBRIDGE_ENGINE_KEY",
        "--data-parallel-size", "2", "--max-model-len", "4096", "--enforce-eager",
    ]
    sglang = ServeSettings(engine="sglang", args={"tp_size": 2}, host="0.0.0.0")
    assert engine_command("m", "/w/m", sglang, 9001) == [
        sys.executable, "-m", "sglang.launch_server", "--model-path", "/w/m", "--served-model-name", "m",
        "--host", "0.0.0.0", "--port", "9001", "--api-key", "$BENCHBRIDGE_ENGINE_KEY", "--tp-size", "2",
    ]


def test_every_engine_key_is_read_as_the_value_of_its_flag() -> None:
    """The key goes on the engine's command line; argparse takes a value starting with "-" for a flag (exit 2
    before the server starts), as it did in CI for a urlsafe key. 2000 draws: a 1-in-64 failure shows."""
    import argparse

    parser = argparse.ArgumentParser(exit_on_error=False)
    parser.add_argument("--api-key")
    parser.add_argument("--port", type=int)
    for _ in range(2000):
        key = engine_key()
        args, rest = parser.parse_known_args(["--api-key", key, "--port", "1"])
        assert (args.api_key, args.port, rest) == (key, 1, [])
        assert len(key) >= 32  # still a secret worth its name


@pytest.mark.parametrize("engine", ["vllm", "sglang"])
def test_a_cpu_machine_refuses_an_engine_in_one_line(tmp_path: Path, engine: str) -> None:
    (tmp_path / "weights").mkdir()
    models = f"\n  - {{name: big, kind: hf, path: ./weights, serve: {{engine: {engine}}}}}"
    out = run_cli("run", str(write(tmp_path, models=models)), cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert f"models[0].serve: engine {engine} cannot start on this machine: it needs the {engine} package" in line
    assert "a GPU (torch sees no CUDA device)" in line
    assert not (tmp_path / "runs").exists()


def spec(tmp_path: Path, **serve: object) -> HFSpec:
    settings = ServeSettings(engine="vllm", command=[sys.executable, str(STANDIN)], **serve)  # type: ignore[arg-type]
    return HFSpec(name="big", path=str(tmp_path), serve=settings, system_prompt="Be brief.")


def test_a_standin_engine_is_started_waited_for_asked_and_stopped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STANDIN_ARGV", str(tmp_path / "argv.json"))
    monkeypatch.setenv("BENCHBRIDGE_NO_CACHE", "1")
    config = SimpleNamespace(models=[spec(tmp_path, args={"warmup_s": 1.5, "enforce_eager": True})])
    t0 = time.monotonic()
    with serving_engines(config, tmp_path / "run") as served:
        waited = time.monotonic() - t0
        assert served and waited >= 1.5  # /health answered 503 while the engine "loaded"
        (served_spec,) = config.models
        assert isinstance(served_spec, OpenAISpec) and served_spec.name == "big" and served_spec.model == "big"
        port = int(served_spec.base_url.rsplit(":", 1)[1].split("/")[0])
        answer = get_model(served_spec).generate([ChatRequest((("user", "hi"),))])[0].text
        assert answer == "served:big:hi"  # through the model layer, with the run's key
        argv = json.loads((tmp_path / "argv.json").read_text())
        assert argv[:4] == ["--model", str(tmp_path), "--served-model-name", "big"] and "--enforce-eager" in argv
    assert isinstance(config.models[0], HFSpec)  # restored
    with socket.socket() as s:  # the server is gone
        assert s.connect_ex(("127.0.0.1", port)) != 0
    key = argv[argv.index("--api-key") + 1]
    log = (tmp_path / "run" / "serve-big.log").read_text()
    assert "stand-in engine" in log and key not in log  # the key is masked in the engine's log


def test_an_engine_that_dies_at_start_fails_with_its_log(tmp_path: Path) -> None:
    from bridges._errors import FrameworkFailure

    config = SimpleNamespace(models=[spec(tmp_path, args={"exit_code": 3})])
    with pytest.raises(FrameworkFailure) as raised, serving_engines(config, tmp_path / "run"):
        pass
    assert "big: vllm server: the server exited (3) before it was healthy" in str(raised.value)
    assert "CUDA out of memory (stand-in)" in raised.value.log_excerpt
    assert isinstance(config.models[0], HFSpec)


def test_ray_not_installed_is_one_line_before_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    from bridges._errors import BenchbridgeError
    from bridges.executors import ExecutorSettings, make_executor

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError, as without the extra
    with pytest.raises(BenchbridgeError, match=r"^executor ray: the ray package is not installed; pip install 'benchbridge\[ray\]'"):
        make_executor(ExecutorSettings(kind="ray"))

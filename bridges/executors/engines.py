"""Models at scale: an `hf` model spec with `serve: {engine: vllm | sglang, args: {...}, replicas: N}` is
served by the engine's own OpenAI-compatible server for the length of a run, and every framework asks it
through benchbridge's model layer as an `openai` model (cache, limits, retries as for any endpoint).

`benchbridge run` checks before anything runs that the engine can start here (its package importable and
a GPU visible: one line naming what is missing), starts the server (a subprocess in its own process group,
log in the run folder), waits for its `/health` to answer 200, swaps the spec for an `openai` spec at the
server, and stops the server when the run ends. `replicas` is the engine's own data parallelism
(vLLM `--data-parallel-size`, SGLang `--dp-size`): one endpoint, N copies of the model. `args` become the
engine's flags (`max_model_len: 4096` -> `--max-model-len 4096`, `true` -> a bare flag). `command`
replaces the engine's launch command (a wrapper script, a container, or a stand-in in tests).
The server's key is made for the run and read by name (`ENV_KEY`), like the run's own model service.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from bridges._errors import BenchbridgeError, FrameworkFailure

ENV_KEY = "BENCHBRIDGE_ENGINE_KEY"  # the served engines' key, made per run: never a user's secret


class ServeSettings(BaseModel):
    """An `hf` model's `serve:` mapping."""

    model_config = ConfigDict(extra="forbid")
    engine: Literal["vllm", "sglang"]
    args: dict[str, Any] = Field(default_factory=dict)
    replicas: int = Field(1, ge=1)
    host: str = "127.0.0.1"  # 0.0.0.0 to reach it from other nodes of a cluster
    port: int | None = Field(None, ge=1, le=65535)  # default: a free one (fix it to reuse cached answers)
    startup_timeout_s: float = Field(900.0, gt=0)  # weights load and kernels compile before /health is 200
    command: list[str] | None = None  # the launch command before benchbridge's flags; default the engine's


@dataclass(frozen=True)
class Engine:
    package: str
    module: str
    model_flag: str
    replicas_flag: str


ENGINES = {
    "vllm": Engine("vllm", "vllm.entrypoints.openai.api_server", "--model", "--data-parallel-size"),
    "sglang": Engine("sglang", "sglang.launch_server", "--model-path", "--dp-size"),
}


def flags(args: dict[str, Any]) -> list[str]:
    """`{max_model_len: 4096, enforce_eager: true, x: false}` -> `--max-model-len 4096 --enforce-eager`."""
    out: list[str] = []
    for key, value in args.items():
        flag = "--" + str(key).replace("_", "-")
        if value is True:
            out.append(flag)
        elif value is False or value is None:
            continue
        else:
            out += [flag, str(value)]
    return out


def engine_command(name: str, path: str, settings: ServeSettings, port: int) -> list[str]:
    """The engine's server command line for the model at `path`, served under `name`."""
    engine = ENGINES[settings.engine]
    launch = settings.command or [sys.executable, "-m", engine.module]
    cmd = [*launch, engine.model_flag, path, "--served-model-name", name, "--host", settings.host]
    cmd += ["--port", str(port), "--api-key", "$" + ENV_KEY]  # the value is put in by `start`, never logged
    if settings.replicas > 1:
        cmd += [engine.replicas_flag, str(settings.replicas)]
    return cmd + flags(settings.args)


def engine_key() -> str:
    """A run's key for its engines: hex, because it goes on their command line as `--api-key KEY` and
    argparse (vLLM's and SGLang's parsers) reads a value starting with "-" as a flag, so one urlsafe key in
    64 stopped the server at start."""
    return secrets.token_hex(24)


def gpu_visible() -> bool:
    try:
        import torch
    except ImportError:
        return shutil.which("nvidia-smi") is not None
    return bool(torch.cuda.is_available())


def check_engine(settings: ServeSettings, key: str) -> None:
    """Before anything runs: the engine's package and a GPU are here (not checked for a custom `command`)."""
    if settings.command:
        return
    engine = ENGINES[settings.engine]
    missing = []
    if importlib.util.find_spec(engine.package) is None:
        missing.append(f"the {engine.package} package (not installed: pip install {engine.package})")
    if not gpu_visible():
        missing.append("a GPU (torch sees no CUDA device)")
    if missing:
        raise BenchbridgeError(
            f"{key}: engine {settings.engine} cannot start on this machine: it needs {' and '.join(missing)}; "
            "run on a GPU node, or remove serve: to run the model in-process"
        )


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host if host != "0.0.0.0" else "127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float, what: str) -> None:
    """Until `url/health` answers 200; the server exiting first, or the timeout, is a failure with its log."""
    import httpx

    from bridges.frameworks.processes import log_excerpt

    deadline = time.monotonic() + timeout_s
    while True:
        code = proc.poll()
        if code is not None:
            raise FrameworkFailure(f"{what}: the server exited ({code}) before it was healthy (log: {log})",
                                   log_excerpt(log))
        try:
            if httpx.get(f"{url}/health", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass  # not listening yet
        if time.monotonic() > deadline:
            raise FrameworkFailure(f"{what}: /health not 200 within {timeout_s:.0f}s (log: {log})", log_excerpt(log))
        time.sleep(0.25)


def stop(proc: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
    """SIGTERM to the server's process group (an engine starts workers of its own), SIGKILL after `grace_s`."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(grace_s)
            return
        except subprocess.TimeoutExpired:
            continue


@contextmanager
def start(name: str, path: str, settings: ServeSettings, log: Path, key: str) -> Iterator[str]:
    """Serves the model at `path` as `name` until the block ends; yields the server's base URL (…/v1)."""
    from bridges.frameworks.processes import child_env

    port = settings.port or free_port(settings.host)
    cmd = [key if part == "$" + ENV_KEY else part for part in engine_command(name, path, settings, port)]
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=child_env(), start_new_session=True)
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    url = f"http://{host}:{port}"
    try:
        wait_healthy(url, proc, log, settings.startup_timeout_s, f"models: {name}: {settings.engine} server")
        yield f"{url}/v1"
    finally:
        stop(proc)
        from bridges.secrets import mask

        # Engines print their arguments, the key among them: the log keeps its name, not its value.
        log.write_text(mask(log.read_text(encoding="utf-8", errors="replace").replace(key, "***")), encoding="utf-8")


def served_spec(spec: Any, base_url: str) -> Any:
    """The `openai` spec every framework asks instead of the `hf` one: same name, prompt and generation."""
    from bridges.models import OpenAISpec

    return OpenAISpec(
        name=spec.name,
        model=spec.name,
        base_url=base_url,
        api_key_env=ENV_KEY,
        tokenizer_path=spec.tokenizer_path or spec.path,  # OpenCompass counts tokens with the model's own
        system_prompt=spec.system_prompt,
        generation=spec.generation,
        limits=spec.limits,
        batch_size=spec.batch_size,
    )


def check_engines(specs: Sequence[Any], where: Any) -> None:
    """`where(i)`: the config location of models[i] (`config.where('models', i)`)."""
    for i, spec in enumerate(specs):
        settings = getattr(spec, "serve", None)
        if settings is not None:
            check_engine(settings, f"{where(i)}: models[{i}].serve")


@contextmanager
def serving_engines(config: Any, run_dir: Path, progress: Any = lambda m: None) -> Iterator[bool]:
    """Starts every `serve:` model's engine and puts its `openai` spec in `config.models` for the block
    (restored after); yields whether any model is served (the caller builds its bridges again then)."""
    from bridges._parallel import scoped_environ

    original = list(config.models)
    if not any(getattr(m, "serve", None) is not None for m in original):
        yield False
        return
    key = engine_key()
    with ExitStack() as stack, scoped_environ({ENV_KEY: key}):
        swapped = []
        for spec in original:
            settings = getattr(spec, "serve", None)
            if settings is None:
                swapped.append(spec)
                continue
            progress(f"[serve] {spec.name}: starting {settings.engine} (x{settings.replicas})")
            url = stack.enter_context(start(spec.name, spec.path, settings, run_dir / f"serve-{spec.name}.log", key))
            progress(f"[serve] {spec.name}: healthy at {url}")
            swapped.append(served_spec(spec, url))
        config.models = swapped
        try:
            yield True
        finally:
            config.models = original

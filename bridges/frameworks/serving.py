"""Models during a run: each model a framework asks through benchbridge is loaded once, in benchbridge's
process, and served to every framework process of the run.

`benchbridge run` opens `run_service(config.models)` around all frameworks: one `bridges.serve` server on
loopback with a random per-run key, every config model on it, each loaded on its first cache miss (a run
whose answers are all cached loads nothing). Its address, key and the models it serves go into the
environment (`ENV_URL`, `ENV_KEY`, `ENV_MODELS`), so every process a framework starts inherits them.

Code that runs inside a framework's process (the OpenAI evals completion function, OpenCompass's
`BenchbridgeModel`, lm-eval's python LM) gets its model from `model_for(spec)`: the served model when the
run serves this very spec (same name and answer identity), else the model layer in its own process, which
is what artifacts from `benchbridge prepare` do when run by hand. Either way the answers are the model
layer's (system prompt, defaults, response cache, limits, retries): served, the layer runs in benchbridge's
process, and the framework process only sends the request.

Loads are logged per run (`bridges.models._loads`): `<run dir>/model_loads.jsonl`.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import os
import re
import secrets
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from bridges._parallel import scoped_environ
from bridges._registry import import_target
from bridges.models import (
    MODEL_KINDS,
    ChatRequest,
    ChatResponse,
    Limits,
    ModelSpec,
    OpenAISpec,
    RetryableModelError,
    get_model,
)

ENV_URL = "BENCHBRIDGE_RUN_URL"
ENV_KEY = "BENCHBRIDGE_RUN_KEY"  # read by name like any secret: never written to an artifact
ENV_MODELS = "BENCHBRIDGE_RUN_MODELS"  # {"<name>": "<served digest>"}: which specs the run serves


class Generates(Protocol):
    def generate(self, requests: Sequence[ChatRequest]) -> list[ChatResponse]: ...


def served_digest(spec: ModelSpec) -> str:
    """The name and answer identity: a process asks the run's server only for the very spec it serves."""
    return hashlib.sha256(f"{spec.name}\n{spec.identity()}".encode()).hexdigest()[:16]


@dataclass(frozen=True)
class RunEndpoint:
    url: str
    key: str
    digests: dict[str, str]

    def serves(self, spec: ModelSpec) -> bool:
        return self.digests.get(spec.name) == served_digest(spec)

    def env(self) -> dict[str, str]:
        return {ENV_URL: self.url, ENV_KEY: self.key, ENV_MODELS: json.dumps(self.digests, sort_keys=True)}


def endpoint_from_env() -> RunEndpoint | None:
    url, key, models = (os.environ.get(n) for n in (ENV_URL, ENV_KEY, ENV_MODELS))
    if not (url and key and models):
        return None
    try:
        digests = json.loads(models)
    except json.JSONDecodeError:
        return None
    return RunEndpoint(url, key, digests) if isinstance(digests, dict) else None


@contextmanager
def run_service(specs: Sequence[ModelSpec], import_paths: Sequence[str] = ()) -> Iterator[RunEndpoint | None]:
    """Serves `specs` (lazily) for the length of a run, its address in this process's environment.

    `import_paths`: where `python` models import from, as in the frameworks' processes (the models now
    load here). Yields None when there is nothing to serve.
    """
    if not specs:
        yield None
        return
    from bridges.serve import serving

    key = secrets.token_urlsafe(24)
    saved_path = list(sys.path)
    sys.path[:0] = [p for p in import_paths if p not in sys.path]
    try:
        with serving(specs, api_key=key, lazy=True) as url:
            endpoint = RunEndpoint(url, key, {s.name: served_digest(s) for s in specs})
            with scoped_environ(endpoint.env()):
                yield endpoint
    finally:
        sys.path[:] = saved_path


class RemoteModel:
    """A served spec asked over loopback HTTP, with `Model.generate`'s signature.

    The requests go as they are (no system prompt or defaults added: the server's model layer adds them,
    and caches the answers), several at once so the server's batching worker answers them together.
    """

    def __init__(self, spec: ModelSpec, endpoint: RunEndpoint) -> None:
        self.spec = spec
        concurrency = max(spec.batch_size, spec.limits.max_concurrency)
        # Timeouts and retries are the server's layer's: the wait here covers a whole batch's generation.
        limits = Limits(max_concurrency=concurrency, timeout_s=3600.0, max_retries=0)
        served = OpenAISpec(name=spec.name, model=spec.name, base_url=endpoint.url, api_key_env=ENV_KEY, limits=limits)
        # The `openai` kind's backend alone (no layer: the server's layer caches and retries), as its client.
        backend_class: Any = import_target(MODEL_KINDS.get("openai").backend)  # a registry's "module:Class"
        self.client: Any = backend_class(served)
        self.concurrency = concurrency

    def generate(self, requests: Sequence[ChatRequest]) -> list[ChatResponse]:
        if len(requests) <= 1:
            return [self._post(r) for r in requests]
        with ThreadPoolExecutor(min(self.concurrency, len(requests)), thread_name_prefix="served") as pool:
            return list(pool.map(self._post, requests))

    def _post(self, request: ChatRequest) -> ChatResponse:
        try:
            return self.client.post(request)
        except RetryableModelError as exc:
            raise model_error(exc) from None


_MODEL_ERROR = re.compile(r" -> 500: model error: (?P<kind>[A-Za-z_]\w*)(?:: (?P<message>.*))?$", re.DOTALL)


def model_error(exc: RetryableModelError) -> Exception:
    """What the served model raised, as the framework's process would have seen it loading the model itself
    (`RuntimeError: ...` from the model's code, in the framework's log and the stored failure); a built-in
    exception type is raised as itself, any other as RuntimeError naming it. Other errors stay as they are."""
    match = _MODEL_ERROR.search(str(exc))
    if match is None:
        return exc
    kind, message = match["kind"], match["message"] or ""
    builtin = getattr(builtins, kind, None)
    if isinstance(builtin, type) and issubclass(builtin, Exception):
        try:
            return builtin(message)
        except TypeError:  # a type that needs more arguments (UnicodeDecodeError): named below
            pass
    return RuntimeError(f"{kind}: {message}" if message else kind)


def model_for(spec: ModelSpec) -> Generates:
    """The model code inside a framework's process calls: served by the run when it serves this spec,
    else the model layer in this process (artifacts run by hand)."""
    endpoint = endpoint_from_env()
    if endpoint is not None and endpoint.serves(spec):
        return RemoteModel(spec, endpoint)
    return get_model(spec)

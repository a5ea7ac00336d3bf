"""`python` models: an in-house callable or class given as `module:attr` or registered by name."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import json
import sys
import threading
import time
from collections.abc import Callable
from importlib.machinery import ModuleSpec
from pathlib import Path
from typing import Any

from bridges._errors import BenchbridgeError
from bridges._registry import Registry, import_target
from bridges.models._loads import note_load
from bridges.models._spec import PythonSpec
from bridges.models._types import ChatRequest, ChatResponse
from bridges.secrets import env_refs, resolve_env_refs

PYTHON_MODELS: Registry[Any] = Registry("python model")


def python_model(name: str) -> Callable[[Any], Any]:
    """Registers a callable or class as a `python` model: ``@python_model("my-model")``.

    It is called with a batch: a list of conversations (lists of ``{"role", "content"}``), or of
    prompt strings when the spec says ``input: prompt``, and returns one string per item.
    """
    return PYTHON_MODELS.register(name)


def render_prompt(messages: list[dict[str, str]]) -> str:
    """Plain-text rendering for callables that take prompts, not chat."""
    if len(messages) == 1:
        return messages[0]["content"]
    return "\n\n".join(f"{m['role']}: {m['content']}" for m in messages)


def _source_modules(spec: PythonSpec) -> list[str]:
    """The modules whose source is the model's code: its `imports` and the target's module."""
    modules = list(spec.imports)
    if ":" in spec.target:
        modules.append(spec.target.partition(":")[0])
    return modules


def _find_module(name: str) -> ModuleSpec | None:
    """Where the module is, without importing it (None: not found)."""
    try:
        return importlib.util.find_spec(name)
    except (ImportError, ValueError):  # ValueError: in sys.modules without a __spec__
        return None  # the backend, built on a cache miss, names the missing module


def _source_of(found: ModuleSpec | None) -> bytes | None:
    """The module's source file as it is on disk now (None: not found, or not a file)."""
    if found is not None and found.origin and Path(found.origin).is_file():
        return Path(found.origin).read_bytes()
    return None


# module name -> its source when `resolve_target` last imported it. Models load in benchbridge's process
# (served to the frameworks), which may run several times (tests, a notebook): a module edited since is
# imported again, so the code answering is the code the fingerprint (and the reuse of finished work) names.
_IMPORTED_SOURCE: dict[str, bytes | None] = {}
_IMPORT_LOCK = threading.Lock()


def _import_current(name: str) -> None:
    with _IMPORT_LOCK:
        found = _find_module(name)
        source = _source_of(found)
        if name in sys.modules and _IMPORTED_SOURCE.get(name, source) != source:
            # Dropped, not reloaded: a failed reload would leave the old code in place, answering.
            del sys.modules[name]
        if name not in sys.modules:
            _drop_bytecode(found)
        importlib.import_module(name)
        _IMPORTED_SOURCE[name] = source


def _drop_bytecode(found: ModuleSpec | None) -> None:
    """Removes the module's cached bytecode before it is imported. Python trusts a .pyc whose source has the
    same size and the same modification second, so an edit of the same length within a second ran the old
    code under the new source's fingerprint: old answers cached under the new code's keys."""
    if found is not None and found.cached and found.origin and found.origin.endswith(".py"):
        try:
            Path(found.cached).unlink(missing_ok=True)
        except OSError:  # a read-only folder: its source is not being edited either
            pass


def fingerprint(spec: PythonSpec) -> str:
    """The source of the target's module and of `imports`: editing the model's code makes new cache keys.

    Read from the files without running them. Data the callable reads (files named in `args`) is
    not covered: change an argument, or run with `--no-cache`, after changing it.
    """
    h = hashlib.sha256()
    for name in _source_modules(spec):
        h.update(f"{name}\n".encode())
        h.update(_source_of(_find_module(name)) or b"")
    if env_refs(spec.args):
        # The values behind `${VAR}` in args change answers (an endpoint, a key); only their hash is kept.
        resolved = resolve_env_refs(spec.args, f"model {spec.name}: args")
        h.update(json.dumps(resolved, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def resolve_target(spec: PythonSpec, key: str) -> Any:
    """The spec's callable or class (its `imports` imported first); a one-line error naming `key` when
    it does not import or is not callable. Imports the user's module, so its top level runs."""
    try:
        for module in spec.imports:
            try:
                _import_current(module)
            except ImportError as exc:
                raise BenchbridgeError(f"imports: cannot import {module!r}: {exc}") from None
        if ":" in spec.target:
            try:
                _import_current(spec.target.partition(":")[0])
            except (ImportError, SyntaxError):
                pass  # import_target below imports it again and names what is wrong, one line
        obj = import_target(spec.target) if ":" in spec.target else PYTHON_MODELS.get(spec.target)
    except BenchbridgeError as exc:
        raise BenchbridgeError(f"{key}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - the user's module raised while importing: report it, one line
        raise BenchbridgeError(f"{key}: importing {spec.target!r} raised {type(exc).__name__}: {exc}") from None
    if not callable(obj):
        raise BenchbridgeError(f"{key}: {spec.target!r} is a {type(obj).__name__}, not a callable or class")
    return obj


# The one prompt `benchbridge run` sends each python model before any framework starts.
SMOKE_PROMPT = "Reply with OK."


class PythonBackend:
    batched = True

    def __init__(self, spec: PythonSpec) -> None:
        started = time.monotonic()
        self.spec = spec
        obj = resolve_target(spec, f"model {spec.name}: target")
        if inspect.isclass(obj):
            obj = obj(**resolve_env_refs(spec.args, f"model {spec.name}: args"))
        elif spec.args:
            raise BenchbridgeError(f"model {spec.name}: args given but {spec.target!r} is a function, not a class")
        if not callable(obj):
            raise BenchbridgeError(f"model {spec.name}: {spec.target!r} is not callable")
        self.fn: Callable[[list[Any]], list[str]] = obj
        note_load("python", spec.target, spec.name, started)  # a class may load weights when built

    def generate(self, requests: list[ChatRequest]) -> list[ChatResponse]:
        convs = [r.message_dicts() for r in requests]
        batch: list[Any] = [render_prompt(c) for c in convs] if self.spec.input == "prompt" else convs
        answers = self.fn(batch)
        if not isinstance(answers, list | tuple) or not all(isinstance(a, str) for a in answers):
            raise BenchbridgeError(f"model {self.spec.name}: {self.spec.target} must return a list of strings")
        return [ChatResponse(text=a) for a in answers]

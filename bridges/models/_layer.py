"""The model layer: every call benchbridge itself makes to a model goes through `Model.generate`.

One place for system prompts, default generation settings, batching and concurrency, so that
caching, retries and rate limits apply to every bridge at once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from bridges._registry import import_target
from bridges.models._spec import MODEL_KINDS, ModelSpec

Messages = tuple[tuple[str, str], ...]


def as_messages(messages: Sequence[dict[str, str]] | str) -> Messages:
    """Chat messages (or one user prompt) in the hashable form requests carry."""
    if isinstance(messages, str):
        return (("user", messages),)
    return tuple((m["role"], m["content"]) for m in messages)


@dataclass(frozen=True)
class ChatRequest:
    messages: Messages
    max_new_tokens: int | None = None
    temperature: float | None = None
    stop: tuple[str, ...] | None = None
    seed: int | None = None
    logprobs: bool = False
    top_logprobs: int = 0
    # OpenAI-style forced tool call: the tool's JSON schema and name (AlpacaEval's chatgpt_fn judge).
    tool: tuple[str, str] | None = None  # (name, json.dumps(parameters schema))

    def message_dicts(self) -> list[dict[str, str]]:
        return [{"role": r, "content": c} for r, c in self.messages]


@dataclass
class TokenLogprob:
    token: str
    logprob: float
    top: list[tuple[str, float]] = field(default_factory=list)


@dataclass
class ChatResponse:
    text: str
    logprobs: list[TokenLogprob] | None = None
    tool_arguments: str | None = None  # JSON text of the forced tool call's arguments
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Backend(Protocol):
    """What a model kind implements. `generate` receives at most `spec.batch_size` requests."""

    batched: bool  # True: one call handles a batch (hf); False: one request per call, run concurrently

    def generate(self, requests: list[ChatRequest]) -> list[ChatResponse]: ...


Progress = Callable[[int], None]


class Model:
    """A model spec bound to its backend (created on first use)."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self._backend: Backend | None = None
        self._lock = threading.Lock()

    @property
    def backend(self) -> Backend:
        with self._lock:
            if self._backend is None:
                backend_cls = import_target(MODEL_KINDS.get(self.spec.kind).backend)
                self._backend = backend_cls(self.spec)  # type: ignore[operator]
            return self._backend

    def _complete_request(self, req: ChatRequest) -> ChatRequest:
        gen = self.spec.generation
        messages = req.messages
        if self.spec.system_prompt and not any(role == "system" for role, _ in messages):
            messages = (("system", self.spec.system_prompt), *messages)
        return replace(
            req,
            messages=messages,
            max_new_tokens=req.max_new_tokens or gen.max_new_tokens,
            temperature=gen.temperature if req.temperature is None else req.temperature,
            stop=tuple(gen.stop) if req.stop is None else req.stop,
            seed=gen.seed if req.seed is None else req.seed,
        )

    def generate(self, requests: Sequence[ChatRequest], progress: Progress | None = None) -> list[ChatResponse]:
        """Answers `requests` in order."""
        full = [self._complete_request(r) for r in requests]
        backend = self.backend
        size = self.spec.batch_size if backend.batched else 1
        chunks = [full[i : i + size] for i in range(0, len(full), size)]

        def run(chunk: list[ChatRequest]) -> list[ChatResponse]:
            out = backend.generate(chunk)
            if len(out) != len(chunk):
                raise RuntimeError(f"model {self.spec.name!r} returned {len(out)} answers for {len(chunk)} prompts")
            if progress:
                progress(len(chunk))
            return out

        workers = 1 if backend.batched else min(self.spec.limits.max_concurrency, len(chunks)) or 1
        if workers == 1:
            results = [run(c) for c in chunks]
        else:
            with ThreadPoolExecutor(workers, thread_name_prefix=f"model-{self.spec.name}") as pool:
                results = list(pool.map(run, chunks))
        return [r for chunk in results for r in chunk]

    def chat(self, conversations: Sequence[Sequence[dict[str, str]] | str], **settings: Any) -> list[str]:
        """Convenience: a list of conversations (or prompts) -> a list of answer texts."""
        reqs = [ChatRequest(as_messages(c), **settings) for c in conversations]
        return [r.text for r in self.generate(reqs)]


_MODELS: dict[str, Model] = {}
_MODELS_LOCK = threading.Lock()


def get_model(spec: ModelSpec) -> Model:
    """One `Model` per spec per process, so a loaded HF model is reused across bridges."""
    key = spec.model_dump_json()
    with _MODELS_LOCK:
        if key not in _MODELS:
            _MODELS[key] = Model(spec)
        return _MODELS[key]

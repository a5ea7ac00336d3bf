"""The OpenAI evals completion function that runs any benchbridge model spec through the model layer.

A registry written by `benchbridge prepare` names this class in `completion_fns/<model>.yaml` with
the model spec as its `args` (`model: {...}`; env-var names only, never secrets). `oaieval` builds
it with an extra `registry=` keyword and calls it from up to `EVALS_THREADS` threads at once.

During `benchbridge run` the model is the run's served one (`bridges.frameworks.serving.model_for`):
loaded once in benchbridge's process for all the run's `oaieval` processes, each thread's prompt
sent over loopback, where the server batches what arrives together. Run by hand from a prepared
registry, the model loads in this process: batched backends (hf, python) then get evals' concurrent
calls gathered into batches by `_MicroBatcher`, so a local model answers several samples per forward
pass instead of one thread at a time fighting over the same weights and tokenizer. Other backends
(openai) are called directly from evals' threads; the layer applies their concurrency limits.

This module is imported only inside `oaieval`; it must not import `evals` at module level (its
import needs `OPENAI_API_KEY`), so results are plain objects with `get_completions()`.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, replace
from typing import Any

from bridges._registry import import_target
from bridges.frameworks.serving import RemoteModel, model_for
from bridges.models import MODEL_KINDS, ChatRequest, ChatResponse, Model, as_messages, parse_model_spec

# evals' own convention for few-shot turns: role "system" with these names.
_FEWSHOT_ROLES = {"example_user": "user", "example_assistant": "assistant"}
_BATCH_WAIT_S = 0.02  # how long the first request of a batch waits for siblings from other threads


@dataclass
class BenchbridgeCompletionResult:
    completions: list[str]

    def get_completions(self) -> list[str]:
        return self.completions


def prompt_messages(prompt: Any) -> list[dict[str, str]]:
    """An evals prompt (chat list, text, or `Prompt` object) as chat messages for the model layer."""
    if hasattr(prompt, "to_formatted_prompt"):  # evals.prompt.base.Prompt
        prompt = prompt.to_formatted_prompt()
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    if isinstance(prompt, list) and all(isinstance(m, dict) for m in prompt):
        messages = []
        for m in prompt:
            role = _FEWSHOT_ROLES.get(m.get("name", ""), m["role"])
            messages.append({"role": role, "content": str(m["content"])})
        return messages
    raise TypeError(f"unsupported evals prompt type {type(prompt).__name__}: expected chat messages or text")


class _MicroBatcher:
    """Gathers requests arriving from several threads into `model.generate` batches."""

    def __init__(self, model: Model, max_batch: int) -> None:
        self.model = model
        self.max_batch = max_batch
        self.cond = threading.Condition()
        self.pending: list[tuple[ChatRequest, Future[ChatResponse]]] = []
        self.worker: threading.Thread | None = None

    def submit(self, request: ChatRequest) -> ChatResponse:
        future: Future[ChatResponse] = Future()
        with self.cond:
            self.pending.append((request, future))
            if self.worker is None:
                self.worker = threading.Thread(target=self._work, name="benchbridge-batcher", daemon=True)
                self.worker.start()
            self.cond.notify()
        return future.result()

    def _next_batch(self) -> list[tuple[ChatRequest, Future[ChatResponse]]]:
        with self.cond:
            while not self.pending:
                self.cond.wait()
            self.cond.wait_for(lambda: len(self.pending) >= self.max_batch, timeout=_BATCH_WAIT_S)
            # One batch shares generation settings (the hf backend applies the first request's).
            first = self.pending[0][0]
            same = [p for p in self.pending if _settings(p[0]) == _settings(first)][: self.max_batch]
            self.pending = [p for p in self.pending if p not in same]
            return same

    def _work(self) -> None:
        while True:
            batch = self._next_batch()
            try:
                answers = self.model.generate([req for req, _ in batch])
            except BaseException as exc:  # handed to every waiting evals thread, which re-raises it
                for _, future in batch:
                    future.set_exception(exc)
                continue
            for (_, future), answer in zip(batch, answers, strict=True):
                future.set_result(answer)


def _settings(req: ChatRequest) -> tuple[Any, ...]:
    return (req.max_new_tokens, req.temperature, req.stop, req.seed)


class BenchbridgeCompletionFn:
    """`completion_fns/<name>.yaml`: ``class: bridges.frameworks.openai_evals.completion:BenchbridgeCompletionFn``,
    ``args: {model: <model spec as JSON>}``."""

    def __init__(self, model: dict[str, Any], registry: Any = None) -> None:
        del registry  # evals passes its registry to every completion function; we need none of it
        self.spec = parse_model_spec(model, where="completion_fns: args.model")
        self.model = model_for(self.spec)  # the run's served model, or (by hand) the layer in this process
        self._batcher: _MicroBatcher | None = None
        self._batcher_lock = threading.Lock()

    def _generate(self, request: ChatRequest) -> ChatResponse:
        if isinstance(self.model, RemoteModel):  # the server batches what evals' threads send together
            return self.model.generate([request])[0]
        assert isinstance(self.model, Model)
        # The backend's class says whether it batches; an instance would load the model even when
        # every answer is in the layer's response cache.
        backend_cls = import_target(MODEL_KINDS.get(self.spec.kind).backend)
        if not getattr(backend_cls, "batched", False) or self.spec.batch_size == 1:
            return self.model.generate([request])[0]
        with self._batcher_lock:
            if self._batcher is None:
                self._batcher = _MicroBatcher(self.model, self.spec.batch_size)
        return self._batcher.submit(request)

    def __call__(self, prompt: Any, **kwargs: Any) -> BenchbridgeCompletionResult:
        """Answers one prompt. evals' `max_tokens` caps the spec's `max_new_tokens`; the spec's other
        generation settings (temperature, stop, seed) apply as for every framework."""
        messages = prompt_messages(prompt)
        request = ChatRequest(as_messages(messages))
        cap = kwargs.get("max_tokens")
        limit = self.spec.generation.max_new_tokens
        if isinstance(cap, int) and cap > 0:
            limit = min(limit, cap)
        request = replace(request, max_new_tokens=limit)
        answer = self._generate(request)
        _record_sampling(messages, answer, self.spec.name)
        return BenchbridgeCompletionResult([answer.text])


def _record_sampling(messages: Sequence[dict[str, str]], answer: ChatResponse, model_name: str) -> None:
    """Logs the exchange in evals' record file, as its own OpenAI completion functions do."""
    record = sys.modules.get("evals.record")  # not imported: not inside an evals run, nothing to log to
    if record is None or record.default_recorder() is None:
        return
    extra: dict[str, Any] = {"model": model_name}
    if answer.prompt_tokens or answer.completion_tokens:
        extra["usage"] = {
            "prompt_tokens": answer.prompt_tokens,
            "completion_tokens": answer.completion_tokens,
            "total_tokens": answer.prompt_tokens + answer.completion_tokens,
        }
    record.record_sampling(prompt=list(messages), sampled=[answer.text], **extra)

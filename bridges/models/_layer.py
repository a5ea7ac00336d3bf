"""The model layer: every call benchbridge itself makes to a model goes through `Model.generate`.

One place for system prompts, default generation settings, the response cache, batching,
concurrency, rate limits and retries, so that they apply to every bridge at once.

What a call does: complete each request with the spec's defaults and system prompt; look every
answer up in the response cache (a request is the same question when the spec's identity, the
kind's fingerprint and every request field agree: the display name and limits do not count);
ask the backend only the rest (identical requests once), `batch_size` at a time for batched
backends and `max_concurrency` at a time for the others; write each answer to the cache the
moment it arrives, so a killed run resumes without asking again.

Sampling without a seed (`temperature > 0`, `seed: null`): the cache keeps the draw it got, and a
rerun replays it, which is what makes a resumed run end with the results of an uninterrupted
one. Identical unseeded sampled requests in one call are distinct draws (each gets an index in
its key), so asking the same prompt n times still gives n samples. For fresh draws, change the
seed or run with `--no-cache`.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, Protocol, cast

from bridges._registry import import_target
from bridges.models._cache import ResponseCache, Usage, response_cache
from bridges.models._limits import Throttle
from bridges.models._spec import MODEL_KINDS, ModelSpec
from bridges.models._types import (
    ChatRequest,
    ChatResponse,
    Messages,
    ModelRequestRejected,
    ModelUnavailable,
    RetryableModelError,
    TokenLogprob,
    as_messages,
    cut_at_stops,
)

__all__ = [
    "AsyncBackend",
    "Backend",
    "ChatRequest",
    "ChatResponse",
    "Messages",
    "Model",
    "ModelRequestRejected",
    "ModelUnavailable",
    "Progress",
    "RetryableModelError",
    "TokenLogprob",
    "answer_identity",
    "as_messages",
    "get_model",
]

CACHE_KEY_VERSION = 1
_REQUEST_DEFAULTS = {f.name: f.default for f in fields(ChatRequest) if f.name != "messages"}


class Backend(Protocol):
    """What a model kind implements. `generate` receives at most `spec.batch_size` requests.

    Raise `RetryableModelError` for what a retry may fix, `ModelRequestRejected` for what it cannot.
    """

    batched: bool  # True: one call handles a batch (hf); False: one request per call, run concurrently
    # Optional, default False. True: the stops do not change what is generated, only where the text is cut
    # (hf), so the layer asks and caches each request without them and cuts the answer itself.
    stops_after_generation: bool

    def generate(self, requests: list[ChatRequest]) -> list[ChatResponse]: ...


class AsyncBackend(Backend, Protocol):
    """A backend that can also be awaited, for the layer's `generate_async` (one request per call, not batched)."""

    async def generate_async(self, requests: list[ChatRequest]) -> list[ChatResponse]: ...


Progress = Callable[[int], None]


def estimated_tokens(req: ChatRequest) -> int:
    """Prompt (characters/4, as OpenAI's rule of thumb) plus the most the answer may take."""
    return sum(len(c) for _, c in req.messages) // 4 + 4 * len(req.messages) + (req.max_new_tokens or 0)


def tokens_of(req: ChatRequest, resp: ChatResponse) -> int:
    used = resp.prompt_tokens + resp.completion_tokens
    return used or (sum(len(c) for _, c in req.messages) + len(resp.text)) // 4


def _unseeded_sampling(req: ChatRequest) -> bool:
    return (req.temperature or 0) > 0 and req.seed is None


def with_system_prompt(messages: Messages, system_prompt: str) -> Messages:
    """The model's system prompt first; a dataset's own system turn follows it in the same message.

    Both are kept so that system-prompt variants of one model still differ on datasets that carry
    their own instructions (lm-eval joins `system_instruction` and a task description the same way).
    """
    if messages and messages[0][0] == "system":
        return (("system", f"{system_prompt}\n\n{messages[0][1]}"), *messages[1:])
    return (("system", system_prompt), *messages)


@dataclass
class _Lookup:
    """One `generate` call: its requests completed with the spec's defaults, the requests as asked (see stops),
    their cache keys, the answers found (filled as the misses are answered) and the misses to ask."""

    full: list[ChatRequest]
    asked: list[ChatRequest]
    keys: list[str]
    cache: ResponseCache
    answers: dict[str, ChatResponse]
    todo: dict[str, ChatRequest]
    wanted: dict[str, int]

    def count(self) -> None:
        # Tokens saved: every answer this call did not have to ask for (cached, or a duplicate of one asked).
        asked_at = {k: i for i, k in reversed(list(enumerate(self.keys))) if k in self.todo}
        saved = sum(
            tokens_of(self.full[i], self.answers[k])
            for i, k in enumerate(self.keys)
            if k in self.answers and asked_at.get(k) != i
        )
        self.cache.count(Usage(hits=len(self.keys) - len(self.todo), misses=len(self.todo), tokens_saved=saved))

    def results(self) -> list[ChatResponse]:
        return [
            replace(self.answers[k], text=cut_at_stops(self.answers[k].text, r.stop)) if a is not r else self.answers[k]
            for k, r, a in zip(self.keys, self.full, self.asked, strict=True)
        ]


class Model:
    """A model spec bound to its backend (created on first cache miss: a fully cached run never loads it)."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self._backend: Backend | None = None
        self._fingerprint: str | None = None
        self.identity = spec.identity()
        self._lock = threading.Lock()
        self.throttle = Throttle(spec.limits, spec.name)

    @functools.cached_property
    def backend_class(self) -> Callable[[ModelSpec], Backend]:
        """The kind's backend class (a kind declares it as "module:attr", a class taking the spec): what it
        declares (`batched`, `stops_after_generation`) can be read without building it, so loading nothing."""
        return cast(Callable[[ModelSpec], Backend], import_target(MODEL_KINDS.get(self.spec.kind).backend))

    @property
    def backend(self) -> Backend:
        with self._lock:
            if self._backend is None:
                self._backend = self.backend_class(self.spec)
            return self._backend

    @property
    def stops_after_generation(self) -> bool:
        return bool(getattr(self.backend_class, "stops_after_generation", False))

    @property
    def fingerprint(self) -> str:
        with self._lock:
            if self._fingerprint is None:
                self._fingerprint = self._compute_fingerprint()
            return self._fingerprint

    def _compute_fingerprint(self) -> str:
        target = MODEL_KINDS.get(self.spec.kind).fingerprint
        if not target:
            return ""
        fingerprint = cast(Callable[[ModelSpec], object], import_target(target))  # declared as "module:attr"
        return str(fingerprint(self.spec))

    def _key_prefix(self) -> dict[str, Any]:
        return {"v": CACHE_KEY_VERSION, "model": self.identity, "fingerprint": self.fingerprint}

    def answer_identity(self) -> str:
        """One hash of what the response cache keys this model's answers by (spec identity and kind
        fingerprint: an `hf` folder's files, a `python` model's source), computed afresh: a model changed
        since this process first looked is seen as changed, here and in the cache keys from now on.
        Reuse of finished work (evals' records, AlpacaEval outputs) is keyed by it too."""
        current = self._compute_fingerprint()
        with self._lock:
            if self._fingerprint not in (None, current):
                self._backend = None  # built from what changed: built again on the next cache miss
            self._fingerprint = current
        return hashlib.sha256(json.dumps(self._key_prefix(), sort_keys=True).encode()).hexdigest()[:16]

    def _complete_request(self, req: ChatRequest) -> ChatRequest:
        gen = self.spec.generation
        messages = req.messages
        if self.spec.system_prompt:
            messages = with_system_prompt(messages, self.spec.system_prompt)
        return replace(
            req,
            messages=messages,
            max_new_tokens=req.max_new_tokens or gen.max_new_tokens,
            temperature=gen.temperature if req.temperature is None else req.temperature,
            stop=tuple(gen.stop) if req.stop is None else req.stop,
            seed=gen.seed if req.seed is None else req.seed,
        )

    def cache_keys(self, requests: Sequence[ChatRequest]) -> list[str]:
        """One key per (completed) request; see the module docstring for what it covers."""
        prefix = self._key_prefix()
        draws: dict[str, int] = {}
        keys = []
        for req in requests:
            # Fields at their default are left out, so adding a field to ChatRequest keeps old keys valid.
            fields_set = {k: getattr(req, k) for k, d in _REQUEST_DEFAULTS.items() if getattr(req, k) != d}
            payload = json.dumps({**prefix, "messages": req.messages, **fields_set}, sort_keys=True)
            key = hashlib.sha256(payload.encode()).hexdigest()
            if _unseeded_sampling(req):
                draw = draws.get(key, 0)
                draws[key] = draw + 1
                if draw:
                    key = hashlib.sha256(f"{key}/draw{draw}".encode()).hexdigest()
            keys.append(key)
        return keys

    def _ask(self, cache: ResponseCache, batch: list[tuple[str, ChatRequest]], wait: bool) -> list[ChatResponse]:
        """One backend call (with retries) for a batch of cache misses; the answers are cached at once.

        `wait=False` (many threads): the commit may be left to the thread holding the cache's
        connection, which makes it within a commit's time; the calling thread asks its next question.
        """
        backend = self.backend
        requests = [r for _, r in batch]
        estimate = sum(estimated_tokens(r) for r in requests)
        out = self.throttle.call(
            lambda: backend.generate(requests),
            len(requests),
            estimate,
            on_retry=lambda: cache.count(Usage(retries=1)),
        )
        self._received(requests, out, estimate)
        cache.put_many(self.identity, zip((k for k, _ in batch), out, strict=True), wait=wait)
        cache.count(Usage(calls=1))
        return out

    def _received(self, requests: list[ChatRequest], out: list[ChatResponse], estimate: int) -> None:
        if len(out) != len(requests):
            raise RuntimeError(f"model {self.spec.name!r} returned {len(out)} answers for {len(requests)} prompts")
        used = sum(r.prompt_tokens + r.completion_tokens for r in out)
        if used and self.throttle.tokens:
            self.throttle.tokens.refund(estimate - used)

    def _lookup(self, requests: Sequence[ChatRequest]) -> _Lookup:
        full = [self._complete_request(r) for r in requests]
        # Stops that only cut the text: one generation (and cache entry) per conversation and settings, cut
        # below per request at its stops, which is exactly what the backend answers when given them.
        # Not for unseeded sampling: each such request is its own draw (numbered per key), and requests differing
        # only in their stops sharing a key would take each other's draws depending on their order.
        cut_here = self.stops_after_generation
        asked = [replace(r, stop=()) if cut_here and r.stop and not _unseeded_sampling(r) else r for r in full]
        keys = self.cache_keys(asked)
        cache = response_cache()
        answers = cache.get_many(keys)
        todo: dict[str, ChatRequest] = {}
        for key, req in zip(keys, asked, strict=True):
            if key not in answers:
                todo.setdefault(key, req)
        wanted: dict[str, int] = {}
        for key in keys:
            wanted[key] = wanted.get(key, 0) + 1
        return _Lookup(full, asked, keys, cache, answers, todo, wanted)

    def generate(self, requests: Sequence[ChatRequest], progress: Progress | None = None) -> list[ChatResponse]:
        """Answers `requests` in order: from the cache where it can, from the model for the rest."""
        call = self._lookup(requests)
        if progress and len(call.keys) > len(call.todo):
            progress(sum(n for k, n in call.wanted.items() if k in call.answers))
        try:
            self._answer_misses(call.cache, call.todo, call.wanted, call.answers, progress)
        finally:
            call.count()
            call.cache.flush(force=False)
        return call.results()

    @property
    def asynchronous(self) -> bool:
        """The kind's backend can be awaited (`generate_async`), one request per call (openai)."""
        backend_class = self.backend_class
        return callable(getattr(backend_class, "generate_async", None)) and not getattr(backend_class, "batched", False)

    async def generate_async(self, requests: Sequence[ChatRequest]) -> list[ChatResponse]:
        """`generate` for an event loop (`benchbridge serve`): the same keys, cache, limits and retries, with the
        backend's `generate_async` awaited where `generate` blocks a thread per request in flight (at 32 requests
        in flight the threads' hand-offs cost more than the requests). Lookups run on the loop (a read never
        waits for a writer); answers are committed by the cache's writer thread within `WRITE_BEHIND_S`. A kind
        without `generate_async` runs `generate` on a thread. The backend keeps connections per event loop:
        call `close_async` on that loop before it ends."""
        if not self.asynchronous:
            return await asyncio.get_running_loop().run_in_executor(None, self.generate, list(requests))
        call = self._lookup(requests)
        try:
            if call.todo:
                backend = cast(AsyncBackend, self.backend)
                # `max_concurrency` coroutines taking from one queue, like `generate`'s threads (one task per miss
                # would leave hundreds waiting for a slot). As there, the first failure stops the others taking
                # more, but the requests in flight finish and are cached: they may be paid for.
                pending = deque(call.todo.items())
                errors: list[Exception] = []

                async def work() -> None:
                    while pending and not errors:
                        try:
                            await self._ask_async(call, backend, *pending.popleft())
                        except Exception as exc:  # raised below, once the others are done (cancellation is not)
                            errors.append(exc)

                await asyncio.gather(*(work() for _ in range(min(self.spec.limits.max_concurrency, len(pending)))))
                if errors:
                    raise errors[0]
        finally:
            call.count()
            call.cache.flush_soon()
        return call.results()

    async def close_async(self) -> None:
        """Closes what the backend keeps on the running loop (an `openai` model's connections), before it ends."""
        close = getattr(self._backend, "close_async", None)
        if close is not None:
            await close()

    async def _ask_async(self, call: _Lookup, backend: AsyncBackend, key: str, request: ChatRequest) -> None:
        estimate = estimated_tokens(request)
        out = await self.throttle.call_async(
            lambda: backend.generate_async([request]), 1, estimate, on_retry=lambda: call.cache.count(Usage(retries=1))
        )
        self._received([request], out, estimate)
        call.cache.put_soon(self.identity, [(key, out[0])])
        call.cache.count(Usage(calls=1))
        call.answers[key] = out[0]

    def _answer_misses(
        self,
        cache: ResponseCache,
        todo: dict[str, ChatRequest],
        wanted: dict[str, int],
        answers: dict[str, ChatResponse],
        progress: Progress | None,
    ) -> None:
        if not todo:
            return
        backend = self.backend
        pending = list(todo.items())
        if backend.batched:
            # Similar lengths together: less padding per batch (answers are matched by key, not position).
            pending.sort(key=lambda kr: sum(len(c) for _, c in kr[1].messages))
        size = self.spec.batch_size if backend.batched else 1
        batches = [pending[i : i + size] for i in range(0, len(pending), size)]

        lock = threading.Lock()

        def done(batch: list[tuple[str, ChatRequest]], out: list[ChatResponse]) -> None:
            with lock:  # progress callbacks are called one at a time, whichever thread finished
                for (key, _), resp in zip(batch, out, strict=True):
                    answers[key] = resp
                if progress:
                    progress(sum(wanted[k] for k, _ in batch))

        workers = 1 if backend.batched else min(self.spec.limits.max_concurrency, len(batches))
        if workers == 1:
            for batch in batches:  # committed (wait=True) before the next is asked: a kill loses no finished batch
                done(batch, self._ask(cache, batch, wait=True))
            return
        # Plain threads pulling from one queue: cheaper per request than executor futures, which
        # matters at hundreds of requests a second. The first failure stops the others taking more.
        queue = deque(batches)
        errors: list[BaseException] = []
        stop = threading.Event()

        def work() -> None:
            while not stop.is_set():
                with lock:
                    if not queue:
                        return
                    batch = queue.popleft()
                try:
                    out = self._ask(cache, batch, wait=False)
                except BaseException as exc:  # handed to the calling thread, which raises it
                    errors.append(exc)
                    stop.set()
                    return
                done(batch, out)

        threads = [
            threading.Thread(target=work, name=f"model-{self.spec.name}-{i}", daemon=True) for i in range(workers)
        ]
        try:
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        finally:
            stop.set()  # e.g. Ctrl-C in the caller: the workers finish the request in hand and stop
            # Workers leave their commits to whichever thread holds the connection (`wait=False`):
            # every answer this call got is committed before it returns (or raises).
            cache.sync()
        if errors:
            raise errors[0]

    def chat(self, conversations: Sequence[Sequence[dict[str, str]] | str], **settings: Any) -> list[str]:
        """Convenience: a list of conversations (or prompts) -> a list of answer texts."""
        reqs = [ChatRequest(as_messages(c), **settings) for c in conversations]
        return [r.text for r in self.generate(reqs)]


_MODELS: dict[str, Model] = {}
_MODELS_LOCK = threading.Lock()


def answer_identity(spec: ModelSpec) -> str:
    """`Model.answer_identity` of the spec's shared model: changes whenever its cached answers would."""
    return get_model(spec).answer_identity()


def get_model(spec: ModelSpec) -> Model:
    """One `Model` per spec per process, so a loaded HF model (and its concurrency limit) is shared by bridges."""
    key = spec.model_dump_json()
    with _MODELS_LOCK:
        if key not in _MODELS:
            _MODELS[key] = Model(spec)
        return _MODELS[key]

"""`benchbridge serve`: any model spec behind an OpenAI-compatible API, on loopback by default.

Every answer comes from the model layer (`get_model(spec).generate`), so a served model behaves as it
does everywhere else in benchbridge. Endpoints: `/v1/chat/completions`, `/v1/completions`,
`/v1/models`. What AlpacaEval's judges ask for is supported:

- a forced tool call (`tools` + `tool_choice` naming a function, e.g. `chatgpt_fn`): the arguments are
  built from the model's answer and constrained to the schema's allowed choices (a string `enum`, or
  the quoted alternatives of its description such as `'Output (a)' or 'Output (b)'`; for a ranking of
  `{model, rank}` items the model identifiers of the prompt). The answer's choice is the one it is,
  else the first one it names (case first: `m` is not `M`). An answer naming none is passed on
  verbatim, so the client's parser reports it as unparsed instead of benchbridge guessing. A backend
  that makes tool calls itself (`openai`) is passed through.
- `logprobs`/`top_logprobs` (e.g. `weighted_alpaca_eval_gpt4_turbo`): `hf` models give the real
  per-token log-probabilities from their logits; a backend without them (`python`) returns its whole
  answer as one chosen token with logprob 0.
- `usage`: the backend's token counts, or whitespace-separated word counts when it has none.

Backends that batch (`hf`, `python`): requests that arrive together with the same settings are
answered in one `generate` call (an `hf` model then decodes them as one batch), and one worker per
model keeps the model from being called from many threads at once. Backends that can be awaited
(`openai`): each request awaits `Model.generate_async` on the event loop itself (the same cache, limits
and retries; no thread per request in flight, whose hand-offs cost more than the rest of the request at
32 clients), and the layer's `limits.max_concurrency` bounds how many are in flight. Accepted
connections get TCP_NODELAY, so a response body does not wait behind its headers for the peer's
delayed ACK.

The server is a plain ASGI app (`ServeRoutes`) on uvicorn with httptools; request bodies are validated
by pydantic models.

Guards, checked before a route sees a request (a pure ASGI middleware, `RequestGuard`, plus a uvicorn
protocol subclass for what happens before a request exists):
- with an API key, every request needs `Authorization: Bearer <key>` (401 otherwise, compared in
  constant time); without one the server may only listen on loopback (`check_exposure`);
- a body over `max_body_bytes` gets 413 before it is read whole: a larger Content-Length at once, a
  chunked body as soon as the bytes received pass the limit;
- a request's head, and then its body, must each arrive within `body_timeout_s` (408); a head over
  `MAX_HEAD_BYTES` gets 431; a connection with no request in progress closes after
  `keep_alive_timeout_s`, also a fresh one that never sends anything;
- a model raising any `BaseException` (SystemExit from user code included) answers that request 500;
  the worker keeps answering later ones.
Refusals close the connection: the rest of an unread body is not worth draining.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import ipaddress
import json
import logging
import queue
import re
import socket
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeVar

import uvicorn
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from bridges._errors import BenchbridgeError
from bridges.models import ChatRequest, ChatResponse, ModelSpec, TokenLogprob, get_model, response_cache
from bridges.secrets import mask, remember_secret_name, spec_secret_names

_log = logging.getLogger("uvicorn.error")  # printed by uvicorn's handler, like its own errors

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
# How long the batching worker waits for more requests to join the first one (seconds).
BATCH_WINDOW_S = 0.02
SERVE_KEY_ENV = "BENCHBRIDGE_SERVE_KEY"  # the key when `serve --api-key-env` is not given
MIB = 1024 * 1024
DEFAULT_MAX_BODY_BYTES = 8 * MIB
DEFAULT_BODY_TIMEOUT_S = 30.0
DEFAULT_KEEP_ALIVE_TIMEOUT_S = 5.0
# On SIGTERM, requests still in a model call get this long before they are cancelled.
GRACEFUL_SHUTDOWN_S = 5


class ApiError(Exception):
    """An error answered in OpenAI's format: `{"error": {"message", "type", "param", "code"}}`."""

    def __init__(
        self, status: int, message: str, param: str | None = None, code: str | None = None, allow: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.allow = allow  # a 405's Allow header

    def response(self) -> JSONResponse:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        body = {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}
        return JSONResponse(body, status_code=self.status, headers={"Allow": self.allow} if self.allow else None)


# ---- request bodies (unknown OpenAI fields such as top_p or user are accepted and ignored) ----


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ChatMessageIn(_Lenient):
    role: str
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        parts = [p.get("text", "") for p in self.content if p.get("type") == "text"]
        if len(parts) != len(self.content):
            raise ApiError(400, "messages[].content: only text parts are supported", param="messages")
        return "".join(parts)


class FunctionDef(_Lenient):
    name: str
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=dict)


class ToolDef(_Lenient):
    type: Literal["function"] = "function"
    function: FunctionDef


class _Sampling(_Lenient):
    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = 1
    stream: bool = False

    def check_supported(self) -> None:
        if self.stream:
            raise ApiError(400, "stream: streaming is not supported by benchbridge serve", param="stream")
        if self.n != 1:
            raise ApiError(400, "n: only n=1 is supported by benchbridge serve", param="n")

    def stops(self) -> tuple[str, ...] | None:
        if self.stop is None:
            return None
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)


class ChatCompletionBody(_Sampling):
    messages: list[ChatMessageIn] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    tools: list[ToolDef] | None = None
    tool_choice: str | dict[str, Any] | None = None


class CompletionBody(_Sampling):
    prompt: str | list[str]
    logprobs: int | None = Field(None, ge=0, le=20)
    echo: bool = False


BodyT = TypeVar("BodyT", bound=_Sampling)


# ---- forced tool calls ----

CHAT_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
_QUOTED = re.compile(r"'([^']+)'|\"([^\"]+)\"")
# AlpacaEval's ranking prompts name each output: `"model": "m"` or `"model_identifier": "model_1"`.
_PROMPT_IDENTIFIER = re.compile(r"\"model(?:_identifier)?\"\s*:\s*\"([^\"]+)\"")


def forced_tool(body: ChatCompletionBody) -> ToolDef | None:
    """The tool the request forces, or None when the model may answer in text."""
    tools = body.tools or []
    choice = body.tool_choice
    if not tools or choice in (None, "none", "auto"):
        return None
    if choice == "required":
        if len(tools) != 1:
            raise ApiError(400, "tool_choice 'required' with several tools: name the function", param="tool_choice")
        return tools[0]
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        for tool in tools:
            if tool.function.name == name:
                return tool
        raise ApiError(400, f"tool_choice names function {name!r}, which is not in tools", param="tool_choice")
    raise ApiError(400, f"tool_choice {choice!r} is not understood", param="tool_choice")


def allowed_choices(prop: dict[str, Any]) -> list[str]:
    """A string property's allowed values: its `enum`, else two or more quoted options in its description."""
    enum = prop.get("enum")
    if enum:
        return [str(v) for v in enum]
    quoted = [a or b for a, b in _QUOTED.findall(str(prop.get("description", "")))]
    return list(dict.fromkeys(quoted)) if len(set(quoted)) >= 2 else []


def pick_choice(text: str, choices: Sequence[str]) -> str | None:
    """The one allowed choice `text` names (exactly, else first mentioned), or None if none or ambiguous.

    Case matters first (AlpacaEval's ranking judges tell `m` from `M`); a case-insensitive mention
    counts only when it is unambiguous.
    """
    bare = text.strip().strip("\"'`.").strip()
    if bare in choices:
        return bare
    for flags in (0, re.IGNORECASE):
        hits: list[tuple[int, int, str]] = []
        for choice in choices:
            found = re.search(rf"(?<!\w){re.escape(choice)}(?!\w)", text, flags)
            if found:
                hits.append((found.start(), -len(choice), choice))
        if hits:
            hits.sort()
            first = [h for h in hits if h[:2] == hits[0][:2]]
            return first[0][2] if len(first) == 1 else None
    return None


def _fill_string(prop: dict[str, Any], answer: str, prompt: str) -> Any:
    choices = allowed_choices(prop)
    if not choices:
        return answer.strip()
    picked = pick_choice(answer, choices)
    return answer.strip() if picked is None else picked


def _fill_ranking(prop: dict[str, Any], answer: str, prompt: str) -> Any:
    item_props = (prop.get("items") or {}).get("properties") or {}
    if set(item_props) != {"model", "rank"}:
        raise ApiError(
            400, "tools: an array property must be a ranking of {model, rank} items (AlpacaEval's *_fn judges)"
        )
    identifiers = allowed_choices(item_props["model"]) or list(dict.fromkeys(_PROMPT_IDENTIFIER.findall(prompt)))
    if len(identifiers) < 2:
        raise ApiError(400, "tools: cannot find the model identifiers to rank (no enum, none in the prompt)")
    best = pick_choice(answer, identifiers)
    if best is None:
        return answer.strip()
    order = [best, *[i for i in identifiers if i != best]]
    return [{"model": name, "rank": rank} for rank, name in enumerate(order, start=1)]


PROPERTY_FILLERS: dict[str, Callable[[dict[str, Any], str, str], Any]] = {
    "string": _fill_string,
    "array": _fill_ranking,
}


def tool_arguments(schema: dict[str, Any], answer: str, prompt: str) -> dict[str, Any]:
    """Fills an object schema from the model's text answer (see the module docstring)."""
    if schema.get("type", "object") != "object" or not schema.get("properties"):
        raise ApiError(400, "tools[].function.parameters: benchbridge serve fills object schemas with properties")
    out = {}
    for name, prop in schema["properties"].items():
        fill = PROPERTY_FILLERS.get(str(prop.get("type", "string")))
        if fill is None:
            raise ApiError(400, f"tools: property {name!r} of type {prop.get('type')!r} cannot be filled from text")
        out[name] = fill(prop, answer, prompt)
    return out


# ---- the served models ----


def model_error(exc: BaseException) -> ApiError:
    """A model's error as an HTTP 500 in OpenAI's format, one line (the log keeps the traceback).

    Both are masked: an upstream's error may echo the operator's key (e.g. its Authorization header).
    """
    _log.error("model error: %s", mask("".join(traceback.format_exception(exc)).rstrip()))
    detail = mask(str(exc)).strip().splitlines()
    return ApiError(500, f"model error: {type(exc).__name__}" + (f": {detail[0]}" if detail else ""))


def answer_of(future: Future[ChatResponse]) -> ChatResponse:
    """The model's answer, or its error as an HTTP 500."""
    try:
        return future.result()
    except BaseException as exc:  # the worker hands over whatever the model raised, SystemExit included
        raise model_error(exc) from exc


def word_count(text: str) -> int:
    return len(text.split())


class ModelWorker:
    """Answers one model's requests: batched backends on one thread that batches what arrives together,
    the others directly on the calling (request) thread, the layer bounding the calls in flight."""

    def __init__(self, spec: ModelSpec, *, lazy: bool = False) -> None:
        self.spec = spec
        self.model = get_model(spec)
        if lazy:  # a run's service: loaded on the first cache miss, so a fully cached run loads nothing
            self.batched = bool(getattr(self.model.backend_class, "batched", False))
        else:  # load now: a missing model folder fails at start, not per request
            self.batched = self.model.backend.batched
        self._queue: queue.Queue[tuple[ChatRequest, Future[ChatResponse]] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        if self.batched:
            self._thread = threading.Thread(target=self._loop, name=f"serve-{spec.name}", daemon=True)
            self._thread.start()

    def submit(self, request: ChatRequest) -> Future[ChatResponse]:
        """Queues a request for the batching worker (batched backends only)."""
        future: Future[ChatResponse] = Future()
        self._queue.put((request, future))
        return future

    def answer_all(self, requests: Sequence[ChatRequest]) -> list[ChatResponse]:
        """The answers, in order; a model error is an HTTP 500 in OpenAI's format."""
        if self.batched:  # submitted together, so the worker can answer them as one batch
            futures = [self.submit(r) for r in requests]
            return [answer_of(f) for f in futures]
        try:
            return self.model.generate(requests)
        except BaseException as exc:  # user code's SystemExit too: it must not end a request thread's loop
            raise model_error(exc) from exc

    def answer(self, request: ChatRequest) -> ChatResponse:
        return self.answer_all([request])[0]

    async def answer_all_async(self, requests: Sequence[ChatRequest], threads: Executor) -> list[ChatResponse]:
        """`answer_all` from the event loop: awaited there for a backend that can be (`Model.asynchronous`),
        else on one of `threads`."""
        if not self.model.asynchronous:
            return await asyncio.get_running_loop().run_in_executor(threads, self.answer_all, requests)
        try:
            return await self.model.generate_async(requests)
        except Exception as exc:  # answered as an HTTP 500 naming it; a cancelled request stays cancelled
            raise model_error(exc) from exc

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=30)

    def _next_batch(self) -> list[tuple[ChatRequest, Future[ChatResponse]]] | None:
        first = self._queue.get()
        if first is None:
            return None
        batch = [first]
        deadline = time.monotonic() + BATCH_WINDOW_S
        while len(batch) < self.spec.batch_size:
            wait = deadline - time.monotonic()
            if wait <= 0:
                break
            try:
                item = self._queue.get(timeout=wait)
            except queue.Empty:
                break
            if item is None:
                self._queue.put(None)  # stop after answering what is already taken
                break
            batch.append(item)
        return batch

    def _loop(self) -> None:
        # Stops that only cut the text (hf) are no setting of the generation: the layer cuts each answer.
        cut_by_layer = self.model.stops_after_generation
        while (batch := self._next_batch()) is not None:
            # One generate call per group of identical settings: a backend applies one setting to a batch.
            groups: dict[ChatRequest, list[tuple[ChatRequest, Future[ChatResponse]]]] = {}
            for request, future in batch:
                setting = replace(request, messages=(), stop=None) if cut_by_layer else replace(request, messages=())
                groups.setdefault(setting, []).append((request, future))
            for group in groups.values():
                try:
                    answers = self.model.generate([request for request, _ in group])
                except BaseException as exc:  # handed to each waiting request, which answers HTTP 500 with it
                    # BaseException: a model's SystemExit or KeyboardInterrupt must not end this thread (later
                    # requests would wait forever). Signals reach the main thread only, so none is lost here.
                    for _, future in group:
                        future.set_exception(exc)
                    continue
                for (_, future), answer in zip(group, answers, strict=True):
                    future.set_result(answer)


def commit_answers_and_counts() -> None:
    cache = response_cache()
    cache.sync()
    cache.flush()


class ServedModels:
    """The models one server answers for, by name."""

    def __init__(self, specs: Sequence[ModelSpec], *, lazy: bool = False) -> None:
        if not specs:
            raise BenchbridgeError("serve: no model to serve")
        self.lazy = lazy
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise BenchbridgeError(f"serve: model names must be unique, got {', '.join(names)}")
        for name in spec_secret_names(specs):  # masked in what a model error answers or logs, whatever its name
            remember_secret_name(name)
        # Request threads wait on the model layer, which bounds the calls in flight itself: enough threads
        # for every model's concurrency or batch to fill at once (and 40 at least, as Starlette's pool has).
        threads = max(40, sum(max(s.limits.max_concurrency, s.batch_size) for s in specs))
        self.request_threads = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="serve-request")
        self.workers: dict[str, ModelWorker] = {}
        try:
            for spec in specs:
                self.workers[spec.name] = ModelWorker(spec, lazy=lazy)
        except BaseException:
            self.close()
            raise

    def worker(self, name: str) -> ModelWorker:
        if name not in self.workers:
            raise ApiError(
                404,
                f"model {name!r} is not served here (serving: {', '.join(self.workers)})",
                "model",
                "model_not_found",
            )
        return self.workers[name]

    async def close_async(self) -> None:
        """Closes what the models keep on the running loop (their connections), before it ends, and commits
        the answers the loop queued for the response cache (`put_soon`) with this process's counts."""
        for worker in self.workers.values():
            try:
                await worker.model.close_async()
            except Exception as exc:  # the others are still closed, the answers still committed
                _log.warning("serve: closing model %s: %s", worker.spec.name, mask(str(exc)))
        # On a thread: the commit may wait for another process's write lock, and the loop still runs.
        await asyncio.to_thread(commit_answers_and_counts)

    def close(self) -> None:
        self.request_threads.shutdown(wait=False, cancel_futures=True)
        for worker in self.workers.values():
            worker.close()


def _chat_logprobs(answer: ChatResponse, top_k: int) -> dict[str, Any]:
    tokens = answer.logprobs
    if tokens is None:  # a backend without logprobs: its whole answer is the one chosen token
        tokens = [TokenLogprob(answer.text, 0.0, [(answer.text, 0.0)])]

    def entry(token: str, logprob: float) -> dict[str, Any]:
        return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}

    return {
        "content": [{**entry(t.token, t.logprob), "top_logprobs": [entry(*x) for x in t.top[:top_k]]} for t in tokens],
        "refusal": None,
    }


def _completion_logprobs(answer: ChatResponse, top_k: int) -> dict[str, Any]:
    tokens = answer.logprobs
    if tokens is None:
        tokens = [TokenLogprob(answer.text, 0.0, [(answer.text, 0.0)])]
    offsets, at = [], 0
    for t in tokens:
        offsets.append(at)
        at += len(t.token)
    return {
        "tokens": [t.token for t in tokens],
        "token_logprobs": [t.logprob for t in tokens],
        "top_logprobs": [dict(t.top[:top_k]) for t in tokens],
        "text_offset": offsets,
    }


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _finish_reason(answer: ChatResponse, limit: int | None) -> str:
    if limit and answer.completion_tokens >= limit:
        return "length"
    return "stop"


@dataclass(frozen=True)
class ChatCall:
    """A checked `/v1/chat/completions` body: who answers, what the model layer is asked."""

    worker: ModelWorker
    request: ChatRequest
    tool: ToolDef | None


def chat_call(served: ServedModels, body: ChatCompletionBody) -> ChatCall:
    body.check_supported()
    worker = served.worker(body.model)
    for m in body.messages:
        if m.role not in CHAT_ROLES:
            raise ApiError(400, f"messages[].role: {m.role!r} is not supported (system, user, assistant)")
    messages = tuple((CHAT_ROLES[m.role], m.text()) for m in body.messages)
    tool = forced_tool(body)
    request = ChatRequest(
        messages=messages,
        max_new_tokens=body.max_completion_tokens or body.max_tokens,
        temperature=body.temperature,
        stop=body.stops(),
        seed=body.seed,
        logprobs=body.logprobs,
        top_logprobs=body.top_logprobs or 0,
        tool=(tool.function.name, json.dumps(tool.function.parameters, sort_keys=True)) if tool else None,
    )
    return ChatCall(worker, request, tool)


def chat_completion(body: ChatCompletionBody, call: ChatCall, answer: ChatResponse) -> dict[str, Any]:
    """The `/v1/chat/completions` response for the model's answer."""
    messages, tool, limit = call.request.messages, call.tool, call.request.max_new_tokens
    message: dict[str, Any] = {"role": "assistant", "content": answer.text, "refusal": None}
    finish = _finish_reason(answer, limit)
    if tool is not None:
        prompt = "\n".join(content for _, content in messages)
        arguments = answer.tool_arguments
        if arguments is None:
            arguments = json.dumps(tool_arguments(tool.function.parameters, answer.text, prompt))
        tool_call = {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function"}
        message = {
            **message,
            "content": None,
            "tool_calls": [{**tool_call, "function": {"name": tool.function.name, "arguments": arguments}}],
        }
        finish = "tool_calls"
    prompt_tokens = answer.prompt_tokens or sum(word_count(c) for _, c in messages)
    completion_tokens = answer.completion_tokens or word_count(answer.text)
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": _chat_logprobs(answer, body.top_logprobs or 0) if body.logprobs else None,
                "finish_reason": finish,
            }
        ],
        "usage": _usage(prompt_tokens, completion_tokens),
    }


def text_call(served: ServedModels, body: CompletionBody) -> tuple[ModelWorker, list[str], list[ChatRequest]]:
    """A checked `/v1/completions` body: who answers, the prompts, and what the model layer is asked for each
    (a prompt is one user message: the layer has chat models only)."""
    body.check_supported()
    if body.echo:
        raise ApiError(400, "echo: not supported by benchbridge serve", param="echo")
    worker = served.worker(body.model)
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    if not prompts:
        raise ApiError(400, "prompt: empty list", param="prompt")
    requests = [
        ChatRequest(
            messages=(("user", p),),
            max_new_tokens=body.max_tokens,
            temperature=body.temperature,
            stop=body.stops(),
            seed=body.seed,
            logprobs=body.logprobs is not None,
            top_logprobs=body.logprobs or 0,
        )
        for p in prompts
    ]
    return worker, prompts, requests


def text_completion(body: CompletionBody, prompts: list[str], answers: list[ChatResponse]) -> dict[str, Any]:
    """The `/v1/completions` response for the model's answers."""
    want_logprobs = body.logprobs is not None
    choices = [
        {
            "index": i,
            "text": a.text,
            "logprobs": _completion_logprobs(a, body.logprobs or 0) if want_logprobs else None,
            "finish_reason": _finish_reason(a, body.max_tokens),
        }
        for i, a in enumerate(answers)
    ]
    prompt_tokens = sum(a.prompt_tokens or word_count(p) for a, p in zip(answers, prompts, strict=True))
    completion_tokens = sum(a.completion_tokens or word_count(a.text) for a in answers)
    return {
        "id": f"cmpl-{uuid.uuid4().hex}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": body.model,
        "choices": choices,
        "usage": _usage(prompt_tokens, completion_tokens),
    }


def parse_body(model: type[BodyT], raw: bytes) -> BodyT:
    """The request body validated by pydantic straight from JSON; the first problem is a 400 naming its field."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "body"
        raise ApiError(400, f"{loc}: {err['msg']}", param=loc) from None


Handler = Callable[[bytes], Awaitable[JSONResponse]]


class ServeRoutes:
    """The API's three routes as a plain ASGI app, unguarded (`make_app` puts `RequestGuard` in front, which
    has read the body whole by then).

    Not Starlette's router, nor FastAPI's: at hundreds of requests a second their per-request layers (error
    and exception middleware, route matching by regex, a `Request` object, wrapped `send`s) cost about as
    much event-loop CPU as the model layer's own work, and this API is three fixed paths whose bodies
    pydantic validates anyway. An unknown path is 404 and a wrong method 405, in OpenAI's error format.
    """

    def __init__(self, served: ServedModels) -> None:
        self.served = served
        # HEAD wherever GET, as HTTP asks (uvicorn sends a HEAD's headers without the body).
        self.routes: dict[str, tuple[tuple[str, ...], Handler]] = {
            "/v1/models": (("GET", "HEAD"), self.list_models),
            "/v1/chat/completions": (("POST",), self.chat_completions),
            "/v1/completions": (("POST",), self.completions),
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan is off; a websocket has no route here
            return
        method, path = scope["method"], scope["path"]
        route = self.routes.get(path)
        try:
            if route is None:
                raise ApiError(404, f"{method} {path}: Not Found")
            if method not in route[0]:
                raise ApiError(405, f"{method} {path}: Method Not Allowed", allow=", ".join(route[0]))
            response = await route[1](await _body(receive))
        except ApiError as exc:
            response = exc.response()
        await response(scope, receive, send)

    async def list_models(self, raw: bytes) -> JSONResponse:
        data = [
            {"id": name, "object": "model", "created": 0, "owned_by": "benchbridge"} for name in self.served.workers
        ]
        return JSONResponse({"object": "list", "data": data})

    async def chat_completions(self, raw: bytes) -> JSONResponse:
        body = parse_body(ChatCompletionBody, raw)
        call = chat_call(self.served, body)
        answers = await call.worker.answer_all_async([call.request], self.served.request_threads)
        return JSONResponse(chat_completion(body, call, answers[0]))

    async def completions(self, raw: bytes) -> JSONResponse:
        body = parse_body(CompletionBody, raw)
        worker, prompts, requests = text_call(self.served, body)
        answers = await worker.answer_all_async(requests, self.served.request_threads)
        return JSONResponse(text_completion(body, prompts, answers))


async def _body(receive: Receive) -> bytes:
    """The request body (`RequestGuard` hands it over in one message; read whole otherwise)."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":  # the client went away
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


@dataclass(frozen=True)
class Guards:
    """What a server checks before a route sees a request (see the module docstring)."""

    api_key: str | None = field(default=None, repr=False)  # repr=False: a logged or printed Guards hides it
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S
    keep_alive_timeout_s: float = DEFAULT_KEEP_ALIVE_TIMEOUT_S


class RequestGuard:
    """Pure ASGI middleware: the key, the body's size and the body's deadline, before the app runs.

    It reads the body itself (at most `max_body_bytes`, so holding it is bounded) and hands the app a
    `receive` that replays it: the app never waits on a slow client, and a refusal needs no
    cooperation from Starlette's error handling. A refusal closes the connection.
    """

    def __init__(self, app: ASGIApp, guards: Guards) -> None:
        self.app = app
        self.guards = guards
        self._key = guards.api_key.encode() if guards.api_key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            self._check_head(scope)
            body = await self._read_body(receive)
        except ApiError as exc:
            response = exc.response()
            response.headers["connection"] = "close"  # uvicorn then closes after the answer
            if exc.status == 401:
                response.headers["www-authenticate"] = "Bearer"
            await response(scope, receive, send)
            return
        if body is None:  # the client went away mid-body: nobody to answer
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # after the body: only a disconnect can come
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    def _check_head(self, scope: Scope) -> None:
        authorization = length = None
        for name, value in scope["headers"]:  # ASGI header names are lower-case
            if name == b"authorization":
                authorization = value
            elif name == b"content-length":
                length = value
        if self._key is not None:
            scheme, _, token = (authorization or b"").strip().partition(b" ")
            if authorization is None or scheme.lower() != b"bearer":
                raise ApiError(401, "no API key: send the header Authorization: Bearer <key>", code="invalid_api_key")
            if not hmac.compare_digest(token.strip(), self._key):
                raise ApiError(401, "Incorrect API key provided.", code="invalid_api_key")
        if length is not None and length.isdigit() and int(length) > self.guards.max_body_bytes:
            raise self._too_large()

    def _too_large(self) -> ApiError:
        limit = self.guards.max_body_bytes
        shown = f"{limit / MIB:g} MiB" if limit >= MIB else f"{limit} bytes"
        return ApiError(413, f"request body larger than this server's limit of {shown} (serve --max-body-mb)")

    async def _read_body(self, receive: Receive) -> bytes | None:
        """The whole body, counted as it arrives; None if the client disconnected."""
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.guards.body_timeout_s):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return None
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.guards.max_body_bytes:  # a chunked body, or one longer than it said
                        raise self._too_large()
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            raise ApiError(408, f"request body not received within {self.guards.body_timeout_s:g} s") from None
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def make_app(served: ServedModels, guards: Guards | None = None) -> ASGIApp:
    """The served API behind its guards (default: no key, 8 MiB bodies, 30 s body and 5 s idle timeouts)."""
    return RequestGuard(ServeRoutes(served), guards or Guards())


# A request's head (request line and headers) larger than this gets 431: httptools sets no limit of its own,
# and a client streaming one endless header grew the server by hundreds of MB within the head timeout.
MAX_HEAD_BYTES = 64 * 1024


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol plus the limits it lacks on what comes before a request exists.

    uvicorn arms its keep-alive timer only after a response, so a connection that never sends a request
    stayed open for good; here it is armed on connect too (any byte received cancels it, as uvicorn
    does). Nothing bounded how long a request's head may take to arrive (a client sending a header
    byte now and then held its connection forever): it gets `head_timeout_s` from its first byte. Nor
    how large it may be: `MAX_HEAD_BYTES`.
    """

    head_timeout_s: float = DEFAULT_BODY_TIMEOUT_S  # set per server by `_protocol_class`
    _head_timer: asyncio.TimerHandle | None = None
    _head_bytes = 0

    # [override]: uvicorn's protocol takes a stream transport where asyncio.Protocol declares BaseTransport.
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._head_timer is not None:  # still inside a head after these bytes: they all belong to it
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._cancel_head_timer()
                self._refuse(431, "Request Header Fields Too Large", f"request head over {MAX_HEAD_BYTES} bytes")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._cancel_head_timer()
        self._head_bytes = 0
        self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def on_headers_complete(self) -> None:
        self._cancel_head_timer()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        self._refuse(408, "Request Timeout", "request head not received in time")

    def _refuse(self, status: int, reason: str, message: str) -> None:
        """Answers before any request exists (so outside the app), in OpenAI's error format, and closes."""
        if self.transport.is_closing():
            return
        body = bytes(ApiError(status, message).response().body)
        head = f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\nconnection: close\r\n"
        self.transport.write(f"{head}content-length: {len(body)}\r\n\r\n".encode() + body)
        self.transport.close()


def _protocol_class(head_timeout_s: float) -> type[GuardedHttpToolsProtocol]:
    return type("GuardedHttpTools", (GuardedHttpToolsProtocol,), {"head_timeout_s": head_timeout_s})


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or `localhost`: a name that could resolve elsewhere is not loopback."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, api_key: str | None) -> None:
    """Refuses to serve beyond loopback without a key: anyone reaching the port would get answers (and
    an `openai` model would call its upstream with the operator's key)."""
    if api_key is None and not is_loopback(host):
        raise BenchbridgeError(
            f"serve: --host {host} is not loopback and no API key is set: set one with --api-key-env NAME "
            f"(or the {SERVE_KEY_ENV} environment variable), or listen on 127.0.0.1"
        )


def option_number(text: str, flag: str, low: float, high: float) -> float:
    """A `serve` number option, checked here rather than by argparse, whose errors print a usage block too."""
    try:
        value = float(text)
    except ValueError:
        raise BenchbridgeError(f"serve: {flag} {text}: not a number") from None
    if not low <= value <= high or (flag == "--port" and not value.is_integer()):
        raise BenchbridgeError(f"serve: {flag} {text}: must be between {low:g} and {high:g}")
    return value


def key_from_env(name: str | None) -> str | None:
    """The key `serve` requires: `$NAME` for `--api-key-env NAME`, else `$BENCHBRIDGE_SERVE_KEY` if set and not
    empty, else None. `.env` counts as environment, as for every other secret."""
    from bridges._config import config_environment

    if name:
        remember_secret_name(name)  # masked wherever it could show, even when its name does not look secret
    key = config_environment().get(name or SERVE_KEY_ENV) or None
    where = f"--api-key-env {name}" if name else SERVE_KEY_ENV
    if name and key is None:
        raise BenchbridgeError(
            f"serve: {where}: environment variable {name} is not set or empty (export it or put it in .env)"
        )
    if key is not None and not all("!" <= c <= "~" for c in key):
        # A header value could not carry it (spaces, control characters, non-ASCII): no request would match.
        raise BenchbridgeError(f"serve: {where}: the key must be printable ASCII without spaces")
    return key


def bind(host: str, port: int) -> socket.socket:
    """A listening-ready socket; port 0 picks a free one."""
    if not 0 <= port <= 65535:  # socket.bind would raise OverflowError, not OSError
        raise BenchbridgeError(f"serve: --port {port}: a port number is 1-65535")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted connections only when the socket says
    # it is TCP (proto 0 does not), and without it each response body waits ~40 ms behind its headers.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # inherited by accepted connections on Linux
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise BenchbridgeError(f"serve: cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


def base_url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/v1" if ":" in host else f"http://{host}:{port}/v1"


class _Server(uvicorn.Server):
    """uvicorn's server, stopped promptly: `stop()` wakes its main loop (uvicorn polls `should_exit` every
    0.1 s), and a shutdown with no request in flight skips uvicorn's fixed 0.1 s pause and 0.1 s polls
    (~0.2 s per run's serving, paid per unit by the Ray executor). Requests still in flight get uvicorn's
    own graceful shutdown (up to GRACEFUL_SHUTDOWN_S)."""

    _wake: asyncio.Event | None = None
    _loop: asyncio.AbstractEventLoop | None = None
    served: ServedModels | None = None

    async def _serve(self, sockets: list[socket.socket] | None = None) -> None:
        # Inside uvicorn's signal capture, which re-raises a SIGTERM once `_serve` returns: the last moment.
        try:
            await super()._serve(sockets)
        finally:
            if self.served is not None:
                await self.served.close_async()

    async def main_loop(self) -> None:
        self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 1) % 864000
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 0.1)  # the tick uvicorn sleeps, cut short by stop()

    def stop(self) -> None:
        """Asks the server to exit (from any thread)."""
        self.should_exit = True
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # the loop already closed: it has exited
                loop.call_soon_threadsafe(wake.set)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()  # an idle keep-alive connection closes now; a busy one after its response
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 0.1
        while (self.server_state.connections or self.server_state.tasks) and loop.time() < deadline:
            await asyncio.sleep(0.005)
        if self.server_state.connections or self.server_state.tasks:
            await super().shutdown(sockets)  # still answering: uvicorn's graceful wait and its timeout
            return
        for server in self.servers:
            await server.wait_closed()
        if not self.force_exit:
            await self.lifespan.shutdown()


def _server(served: ServedModels, guards: Guards) -> _Server:
    config = uvicorn.Config(
        make_app(served, guards),
        http=_protocol_class(guards.body_timeout_s),
        log_level="warning",
        access_log=False,
        lifespan="off",
        # No X-Forwarded-* rewriting: nothing here reads the client's address, and uvicorn's middleware for it
        # was CPU on every request.
        proxy_headers=False,
        timeout_keep_alive=guards.keep_alive_timeout_s,  # type: ignore[arg-type]  # a float works (call_later)
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )
    server = _Server(config)
    server.served = served
    return server


@contextmanager
def serving(
    specs: ModelSpec | Sequence[ModelSpec],
    host: str = DEFAULT_HOST,
    port: int = 0,
    start_timeout_s: float = 30.0,
    *,
    api_key: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S,
    keep_alive_timeout_s: float = DEFAULT_KEEP_ALIVE_TIMEOUT_S,
    lazy: bool = False,
) -> Iterator[str]:
    """Serves `specs` on a background thread; yields the base URL (`http://127.0.0.1:PORT/v1`), then stops.

    With `api_key`, every request needs `Authorization: Bearer <api_key>`; without one, `host` must be
    loopback. The other guards are described in the module docstring. `lazy`: each model loads on its
    first cache miss instead of now (a run serves every model a framework might ask, most from cache).
    """
    check_exposure(host, api_key)
    guards = Guards(api_key, max_body_bytes, body_timeout_s, keep_alive_timeout_s)
    sock = bind(host, port)
    served: ServedModels | None = None
    server: _Server | None = None
    thread: threading.Thread | None = None
    try:
        served = ServedModels([specs] if isinstance(specs, ModelSpec) else list(specs), lazy=lazy)
        server = _server(served, guards)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="benchbridge-serve", daemon=True)
        thread.start()
        deadline = time.monotonic() + start_timeout_s
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise BenchbridgeError(f"serve: the server on {host}:{sock.getsockname()[1]} did not start")
            time.sleep(0.01)
        yield base_url(sock)
    finally:
        if server is not None:
            server.stop()
        if thread is not None:
            thread.join(timeout=30)
        sock.close()
        if served is not None:
            served.close()


def run_server(
    specs: Sequence[ModelSpec],
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    api_key: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S,
    keep_alive_timeout_s: float = DEFAULT_KEEP_ALIVE_TIMEOUT_S,
) -> None:
    """Serves in the foreground until Ctrl-C or SIGTERM (`benchbridge serve`)."""
    check_exposure(host, api_key)
    guards = Guards(api_key, max_body_bytes, body_timeout_s, keep_alive_timeout_s)
    sock = bind(host, port)  # before loading models: a taken port fails at once
    try:
        served = ServedModels(specs)
        try:
            names = ", ".join(s.name for s in specs)
            auth = "requests need Authorization: Bearer <key>" if api_key else "no API key: loopback only"
            print(f"benchbridge serve: {names} at {base_url(sock)} ({auth}; Ctrl-C stops)", file=sys.stderr, flush=True)
            # What start-up made (modules, models, settings) lives as long as the server: out of the garbage
            # collector's full passes, which otherwise scan all of it while every request waits (~30 ms each).
            gc.collect()
            gc.freeze()
            _server(served, guards).run(sockets=[sock])
        finally:
            served.close()
    finally:
        sock.close()

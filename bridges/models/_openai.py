"""`openai` models: any OpenAI-compatible chat endpoint. The key comes from the environment or `.env`."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from bridges._errors import BenchbridgeError
from bridges.models._async_http import AsyncHTTPPool
from bridges.models._http import HTTPPool
from bridges.models._spec import OpenAISpec
from bridges.models._types import (
    ChatRequest,
    ChatResponse,
    ModelRequestRejected,
    RetryableModelError,
    TokenLogprob,
)
from bridges.secrets import read_secret, redact, secret_values

# Worth another try (the OpenAI SDK's own choice); any other 4xx is a request a retry cannot fix.
RETRY_STATUS = frozenset({408, 409, 429})


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """`retry-after-ms` (OpenAI) or `Retry-After` in seconds or as an HTTP date; None when absent."""
    if ms := headers.get("retry-after-ms"):
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, (when - datetime.now(UTC)).total_seconds())


def error_message(data: bytes) -> str:
    try:
        payload = json.loads(data)
        return str(payload["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return data[:300].decode("utf-8", "replace").strip() or "(empty body)"


def error_code(data: bytes) -> str | None:
    try:
        return json.loads(data)["error"].get("code")
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


class OpenAIBackend:
    """One request per call; the layer runs `limits.max_concurrency` of them at once (see `_http` for the transport)."""

    batched = False

    def __init__(self, spec: OpenAISpec) -> None:
        self.spec = spec
        key = read_secret(spec.api_key_env)
        if key is None:
            raise BenchbridgeError(
                f"model {spec.name}: api_key_env: ${spec.api_key_env} is not set (set it in the environment or .env)"
            )
        if any(c in key for c in "\r\n\0"):  # it would end the header line and start headers of its own
            raise BenchbridgeError(
                f"model {spec.name}: api_key_env: ${spec.api_key_env} holds a line break or NUL (a key is one line)"
            )
        self.url = spec.base_url.rstrip("/") + "/chat/completions"
        self.where = f"model {spec.name}: POST {self.url}"
        self.secrets = secret_values([spec.api_key_env])
        self.headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        try:
            self.http = HTTPPool(spec.base_url, spec.limits.max_concurrency, spec.limits.timeout_s)
        except BenchbridgeError as exc:
            raise BenchbridgeError(f"model {spec.name}: {exc}") from None
        self._async_pools: dict[asyncio.AbstractEventLoop, AsyncHTTPPool] = {}

    def request_body(self, req: ChatRequest) -> dict:
        body: dict = {
            "model": self.spec.model,
            "messages": req.message_dicts(),
            "max_tokens": req.max_new_tokens,
            "temperature": req.temperature,
        }
        if self.spec.generation.top_p is not None:
            body["top_p"] = self.spec.generation.top_p
        if req.stop:
            body["stop"] = list(req.stop)
        if req.seed is not None:
            body["seed"] = req.seed
        if req.logprobs:
            body["logprobs"] = True
            body["top_logprobs"] = req.top_logprobs
        if req.tool:
            name, schema = req.tool
            body["tools"] = [{"type": "function", "function": {"name": name, "parameters": json.loads(schema)}}]
            body["tool_choice"] = {"type": "function", "function": {"name": name}}
        return body

    def post(self, req: ChatRequest) -> ChatResponse:
        body = json.dumps(self.request_body(req)).encode()
        try:
            resp = self.http.post("/chat/completions", body, self.headers)
        except (socket.gaierror, ssl.SSLCertVerificationError) as exc:  # a retry cannot fix a name or a certificate
            raise ModelRequestRejected(f"{self.where}: {exc}") from None
        except OSError as exc:  # timeouts, refused, dropped or unreadable connections
            raise RetryableModelError(f"{self.where}: {type(exc).__name__}: {exc}") from exc
        return self.answer(resp.status, resp.headers, resp.data)

    async def post_async(self, req: ChatRequest) -> ChatResponse:
        """`post` on an event loop (`benchbridge serve`): `_async_http` instead of a thread blocked on a socket."""
        body = json.dumps(self.request_body(req)).encode()
        try:
            resp = await self._async_pool().post("/chat/completions", body, self.headers)
        except (socket.gaierror, ssl.SSLCertVerificationError) as exc:  # a retry cannot fix a name or a certificate
            raise ModelRequestRejected(f"{self.where}: {exc}") from None
        except OSError as exc:  # timeouts, refused, dropped or unreadable connections
            raise RetryableModelError(f"{self.where}: {type(exc).__name__}: {exc}") from exc
        return self.answer(resp.status, resp.headers, resp.data)

    def answer(self, status: int, headers: Mapping[str, str], data: bytes) -> ChatResponse:
        """The answer in an upstream's HTTP response, or the error that says whether a retry may fix it."""
        if status == 200:
            try:
                return parse_chat_completion(json.loads(data))
            except (ValueError, KeyError, IndexError, TypeError) as exc:
                text = redact(f"{self.where}: unreadable answer ({exc}): {data[:200]!r}", self.secrets)
                raise RetryableModelError(text) from exc
        # Upstreams quote the request in errors (a 401 may echo the Authorization header): masked
        # here, before the message reaches a log, a record or a terminal.
        message = redact(f"{self.where} -> {status}: {error_message(data)}", self.secrets)
        if status == 429 and error_code(data) == "insufficient_quota":
            raise ModelRequestRejected(message)
        if status in RETRY_STATUS or status >= 500:
            raise RetryableModelError(message, retry_after_seconds(headers))
        if status in (401, 403):
            message += f" (check ${self.spec.api_key_env})"
        raise ModelRequestRejected(message)

    def generate(self, requests: list[ChatRequest]) -> list[ChatResponse]:
        return [self.post(req) for req in requests]

    async def generate_async(self, requests: list[ChatRequest]) -> list[ChatResponse]:
        return [await self.post_async(req) for req in requests]

    def _async_pool(self) -> AsyncHTTPPool:
        """The running loop's connections (a connection belongs to the loop it was opened on)."""
        loop = asyncio.get_running_loop()
        pool = self._async_pools.get(loop)
        if pool is None:
            pool = self._async_pools[loop] = AsyncHTTPPool(self.http)
        return pool

    async def close_async(self) -> None:
        """Closes the running loop's connections (before that loop ends)."""
        pool = self._async_pools.pop(asyncio.get_running_loop(), None)
        if pool is not None:
            pool.close()


def parse_chat_completion(data: dict) -> ChatResponse:
    choice = data["choices"][0]
    msg = choice.get("message") or {}
    tool_args = None
    if msg.get("tool_calls"):
        tool_args = msg["tool_calls"][0]["function"]["arguments"]
    logprobs = None
    if choice.get("logprobs") and choice["logprobs"].get("content"):
        logprobs = [
            TokenLogprob(t["token"], t["logprob"], [(x["token"], x["logprob"]) for x in t.get("top_logprobs", [])])
            for t in choice["logprobs"]["content"]
        ]
    usage = data.get("usage") or {}
    return ChatResponse(
        text=msg.get("content") or "",
        logprobs=logprobs,
        tool_arguments=tool_args,
        prompt_tokens=usage.get("prompt_tokens", 0),
        completion_tokens=usage.get("completion_tokens", 0),
    )

"""`openai` models: any OpenAI-compatible chat endpoint. The key comes from the environment or `.env`."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import ssl
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp

from bridges._errors import BenchbridgeError
from bridges.models._http import IDLE_REUSE_S, HTTPPool
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


def retry_after_seconds(headers: Any) -> float | None:
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
        self.url = spec.base_url.rstrip("/") + "/chat/completions"
        self.where = f"model {spec.name}: POST {self.url}"
        self.secrets = secret_values([spec.api_key_env])
        self.headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        try:
            self.http = HTTPPool(spec.base_url, spec.limits.max_concurrency, spec.limits.timeout_s)
        except BenchbridgeError as exc:
            raise BenchbridgeError(f"model {spec.name}: {exc}") from None
        self.async_url = self.http.url("/chat/completions")
        self._sessions: dict[asyncio.AbstractEventLoop, aiohttp.ClientSession] = {}

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
        except (OSError, http.client.HTTPException) as exc:  # timeouts, refused or dropped connections
            raise RetryableModelError(f"{self.where}: {type(exc).__name__}: {exc}") from exc
        return self.answer(resp.status, resp.headers, resp.data)

    async def post_async(self, req: ChatRequest) -> ChatResponse:
        """`post` on an event loop (`benchbridge serve`): aiohttp instead of a thread blocked in `http.client`."""
        body = json.dumps(self.request_body(req)).encode()
        session = self._session()
        try:
            async with session.post(
                self.async_url,
                data=body,
                headers={**self.headers, **self.http.request_proxy_headers()},
                proxy=self.http.proxy_url,
                proxy_headers=self.http.proxy_headers() if self.http.https else None,  # for the CONNECT
            ) as resp:
                data = await resp.read()
                status, headers = resp.status, resp.headers
        except (aiohttp.ClientConnectorDNSError, aiohttp.ClientConnectorCertificateError) as exc:
            raise ModelRequestRejected(f"{self.where}: {exc}") from None
        except (OSError, aiohttp.ClientError, TimeoutError) as exc:  # timeouts, refused or dropped connections
            raise RetryableModelError(f"{self.where}: {type(exc).__name__}: {exc}") from exc
        return self.answer(status, headers, data)

    def answer(self, status: int, headers: Any, data: bytes) -> ChatResponse:
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

    def _session(self) -> aiohttp.ClientSession:
        """The running loop's connection pool (a session belongs to the loop it was made on)."""
        loop = asyncio.get_running_loop()
        session = self._sessions.get(loop)
        if session is None or session.closed:
            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=self.spec.limits.max_concurrency,
                    ssl=self.http.context or True,
                    keepalive_timeout=IDLE_REUSE_S,  # servers close idle connections (uvicorn after 5 s)
                ),
                timeout=aiohttp.ClientTimeout(total=self.spec.limits.timeout_s),
                # Nothing the standard-library path does not send either: no cookies, compression or netrc.
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept-Encoding"),
                trust_env=False,  # the proxy comes from `HTTPPool`, which reads the environment the same way
            )
            self._sessions[loop] = session
        return session

    async def close_async(self) -> None:
        """Closes the running loop's connections (before that loop ends)."""
        session = self._sessions.pop(asyncio.get_running_loop(), None)
        if session is not None:
            await session.close()


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

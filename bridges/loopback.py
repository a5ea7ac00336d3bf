"""A loopback OpenAI-compatible upstream for tests and benchmarks: fixed latency, injected faults, counters.

It runs in its own process (so its event loop never competes with the client for the GIL), binds
127.0.0.1 only, and stops by itself: when the parent process goes away or after `max_seconds`.

Answers are a pure function of the request (model, messages, settings), so a run against a faulty
upstream can be compared with a run against a clean one. A request with `temperature > 0` and no
`seed` gets a fresh random answer each time, like a real sampled model.

Faults, decided per HTTP request from a seeded generator:
- `error_rate`: a 500 with an OpenAI-style error body;
- `drop_rate`: the connection is closed without any response;
- `burst_every` / `burst_s`: every `burst_every`-th request starts a window of `burst_s` seconds in
  which every request gets a 429 with `Retry-After` (whole seconds, as HTTP says) and
  `retry-after-ms`. A request that comes back before the time it was told counts as `early_retries`.

`GET /stats` reports requests, statuses, per-request-key answer counts and the most requests ever
in flight at once; `POST /reset` clears them.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import os
import random
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any, cast

import httpx


@dataclass
class Faults:
    error_rate: float = 0.0
    drop_rate: float = 0.0
    burst_every: int = 0
    burst_s: float = 1.0
    seed: int = 0


def request_key(body: dict[str, Any]) -> str:
    """What makes two requests the same question (the fields that change the answer)."""
    fields = {k: body.get(k) for k in ("model", "messages", "max_tokens", "temperature", "stop", "seed", "tools")}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def answer_text(body: dict[str, Any]) -> str:
    key = request_key(body)
    if (body.get("temperature") or 0) > 0 and body.get("seed") is None:
        key += f"-draw{random.getrandbits(32):08x}"
    last_user = next((m["content"] for m in reversed(body.get("messages", [])) if m["role"] == "user"), "")
    return f"answer {key} to: {last_user[:40]}"


def completion_body(body: dict[str, Any]) -> dict[str, Any]:
    text = answer_text(body)
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if body.get("tools"):
        name = body["tools"][0]["function"]["name"]
        message = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_0", "type": "function", "function": {"name": name, "arguments": json.dumps({"a": text})}}
            ],
        }
    choice: dict[str, Any] = {"index": 0, "message": message, "finish_reason": "stop"}
    if body.get("logprobs"):
        top = [{"token": t, "logprob": -float(i + 1)} for i, t in enumerate("abcde"[: body.get("top_logprobs") or 0])]
        choice["logprobs"] = {"content": [{"token": text.split()[0], "logprob": -0.5, "top_logprobs": top}]}
    prompt_tokens = sum(len(m.get("content") or "") for m in body.get("messages", [])) // 4 + 1
    return {
        "id": "chatcmpl-loopback",
        "object": "chat.completion",
        "model": body.get("model"),
        "choices": [choice],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(text) // 4,
            "total_tokens": prompt_tokens + len(text) // 4,
        },
    }


class UpstreamState:
    def __init__(self, latency_s: float, faults: Faults, api_key: str | None) -> None:
        self.latency_s = latency_s
        self.faults = faults
        self.api_key = api_key
        self.reset()

    def reset(self) -> None:
        self.rng = random.Random(self.faults.seed)
        self.requests = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.statuses: Counter[str] = Counter()
        self.answered: Counter[str] = Counter()  # request key -> 200 responses sent
        self.arrivals: list[float] = []  # monotonic seconds, first attempt or retry alike
        self.burst_until = 0.0
        self.told_to_wait: dict[str, float] = {}  # request key -> earliest allowed return
        self.early_retries = 0

    def stats(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "max_in_flight": self.max_in_flight,
            "statuses": dict(self.statuses),
            "answered": dict(self.answered),
            "arrivals": self.arrivals,
            "early_retries": self.early_retries,
            "latency_s": self.latency_s,
            "faults": asdict(self.faults),
        }


_REASONS = {200: "OK", 401: "Unauthorized", 404: "Not Found", 411: "Length Required", 429: "Too Many Requests"}
_REASONS[500] = "Internal Server Error"


class UpstreamProtocol(asyncio.Protocol):
    """Minimal HTTP/1.1 with keep-alive and Content-Length bodies: what OpenAI clients send.

    Written on asyncio directly rather than aiohttp: the upstream should cost the client as little
    CPU as possible on a small machine (this takes ~0.1 ms a request, aiohttp ~0.35 ms).
    """

    def __init__(self, state: UpstreamState) -> None:
        self.state = state
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.busy = False  # requests on one connection are answered in order; clients do not pipeline

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # a TCP server's connections are stream transports

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._next()

    def _next(self) -> None:
        if self.busy or self.transport is None or self.transport.is_closing():
            return
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        lines = self.buffer[:end].decode("latin-1").split("\r\n")
        method, path = lines[0].split(" ")[:2]
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "chunked" in headers.get("transfer-encoding", ""):
            self.respond(411, {"error": {"message": "send Content-Length"}}, close=True)
            return
        length = int(headers.get("content-length") or 0)
        if len(self.buffer) < end + 4 + length:
            return
        body, self.buffer = self.buffer[end + 4 : end + 4 + length], self.buffer[end + 4 + length :]
        self.busy = True
        self.close_after = headers.get("connection", "").lower() == "close"
        asyncio.get_running_loop().create_task(self.handle(method, path, headers, body))

    def respond(self, status: int, payload: Any, headers: dict[str, str] | None = None, close: bool = False) -> None:
        assert self.transport is not None
        data = json.dumps(payload).encode()
        head = f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}\r\nContent-Type: application/json\r\n"
        head += f"Content-Length: {len(data)}\r\n"
        for name, value in (headers or {}).items():
            head += f"{name}: {value}\r\n"
        if close:
            head += "Connection: close\r\n"
        self.transport.write(head.encode() + b"\r\n" + data)
        if close:
            self.transport.close()

    async def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> None:
        state = self.state
        payload: Any  # a JSON body: an error, a completion, the model list or the stats
        status, payload, extra = 404, {"error": {"message": f"no route {method} {path}"}}, None
        if method == "POST" and path == "/v1/chat/completions":
            result = await chat(state, headers, body)
            if result is None:  # a dropped connection: no response at all
                assert self.transport is not None
                self.transport.abort()
                return
            status, payload, extra = result
        elif method == "GET" and path == "/v1/models":
            status, payload = 200, {"object": "list", "data": [{"id": "loopback", "object": "model"}]}
        elif method == "GET" and path == "/stats":
            status, payload = 200, state.stats()
        elif method == "POST" and path == "/reset":
            state.reset()
            status, payload = 200, {"ok": True}
        if self.transport is None or self.transport.is_closing():
            return
        self.respond(status, payload, extra, close=self.close_after)
        self.busy = False
        self._next()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


def error(state: UpstreamState, status: int, message: str, code: str, headers: dict[str, str] | None = None) -> Any:
    state.statuses[str(status)] += 1
    return status, {"error": {"message": message, "type": code, "code": code}}, headers


async def chat(state: UpstreamState, headers: dict[str, str], raw: bytes) -> tuple[int, Any, dict | None] | None:
    now = time.monotonic()
    state.requests += 1
    state.arrivals.append(now)
    if state.api_key and headers.get("authorization") != f"Bearer {state.api_key}":
        return error(state, 401, "Incorrect API key provided.", "invalid_api_key")
    body = json.loads(raw)
    key = request_key(body)
    if now < state.told_to_wait.get(key, 0.0):
        state.early_retries += 1
    faults = state.faults
    if faults.burst_every and state.requests % faults.burst_every == 0:
        state.burst_until = max(state.burst_until, now + faults.burst_s)
    if now < state.burst_until:
        wait = math.ceil(state.burst_until - now)
        state.told_to_wait[key] = now + wait
        retry = {"Retry-After": str(wait), "retry-after-ms": str(wait * 1000)}
        return error(state, 429, "Rate limit reached, please retry later.", "rate_limit_exceeded", retry)
    roll = state.rng.random()
    state.in_flight += 1
    state.max_in_flight = max(state.max_in_flight, state.in_flight)
    try:
        await asyncio.sleep(state.latency_s)
    finally:
        state.in_flight -= 1
    if roll < faults.drop_rate:
        state.statuses["dropped"] += 1
        return None
    if roll < faults.drop_rate + faults.error_rate:
        return error(state, 500, "The server had an error while processing your request.", "server_error")
    state.statuses["200"] += 1
    state.answered[key] += 1
    return 200, completion_body(body), None


async def _serve(state: UpstreamState, port: int, max_seconds: float, parent_pid: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: UpstreamProtocol(state), "127.0.0.1", port, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    deadline = time.monotonic() + max_seconds
    # Bounded: stop when the parent is gone (killed test runner) or the lifetime is over.
    while time.monotonic() < deadline and os.getppid() == parent_pid:
        await asyncio.sleep(0.2)
    server.close()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--latency", type=float, default=0.05)
    p.add_argument("--faults", default="{}", help="JSON of Faults fields")
    p.add_argument("--api-key")
    p.add_argument("--max-seconds", type=float, default=900)
    p.add_argument("--parent-pid", type=int, default=os.getppid())
    args = p.parse_args(argv)
    state = UpstreamState(args.latency, Faults(**json.loads(args.faults)), args.api_key)
    asyncio.run(_serve(state, args.port, args.max_seconds, args.parent_pid))


class LoopbackUpstream:
    """Starts the upstream in a child process: ``with LoopbackUpstream(latency_s=0.05) as up: up.base_url``."""

    def __init__(
        self,
        latency_s: float = 0.05,
        faults: Faults | None = None,
        api_key: str | None = None,
        max_seconds: float = 900,
    ) -> None:
        self.latency_s = latency_s
        self.faults = faults or Faults()
        self.api_key = api_key
        self.max_seconds = max_seconds
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0

    def start(self) -> LoopbackUpstream:
        cmd = [
            sys.executable,
            "-m",
            "bridges.loopback",
            "--latency",
            str(self.latency_s),
            "--faults",
            json.dumps(asdict(self.faults)),
            "--max-seconds",
            str(self.max_seconds),
            "--parent-pid",
            str(os.getpid()),
        ]
        if self.api_key:
            cmd += ["--api-key", self.api_key]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.strip().isdigit():
            self.stop()
            raise RuntimeError(f"loopback upstream did not start (said {line!r})")
        self.port = int(line)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
            self.proc = None

    def __enter__(self) -> LoopbackUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.root}/v1"

    def stats(self) -> dict[str, Any]:
        return httpx.get(f"{self.root}/stats", timeout=10).json()

    def reset(self) -> None:
        httpx.post(f"{self.root}/reset", timeout=10).raise_for_status()


if __name__ == "__main__":
    main()

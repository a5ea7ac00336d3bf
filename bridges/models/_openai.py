"""`openai` models: any OpenAI-compatible chat endpoint. The key comes from the environment or `.env`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx

from bridges._errors import BenchbridgeError
from bridges.models._layer import ChatRequest, ChatResponse, TokenLogprob
from bridges.models._spec import OpenAISpec


def read_secret(name: str) -> str | None:
    """An environment variable, else the same key in `./.env`. Never written anywhere by us."""
    if os.environ.get(name):
        return os.environ[name]
    env_file = Path(".env")
    if env_file.is_file():
        from dotenv import dotenv_values

        return dotenv_values(env_file).get(name) or None
    return None


class OpenAIBackend:
    batched = False

    def __init__(self, spec: OpenAISpec) -> None:
        self.spec = spec
        key = read_secret(spec.api_key_env)
        if key is None:
            raise BenchbridgeError(
                f"model {spec.name}: api_key_env: ${spec.api_key_env} is not set (set it in the environment or .env)"
            )
        self.client = httpx.Client(
            base_url=spec.base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {key}"},
            timeout=spec.limits.timeout_s,
        )

    def request_body(self, req: ChatRequest) -> dict:
        body: dict = {
            "model": self.spec.model,
            "messages": req.message_dicts(),
            "max_tokens": req.max_new_tokens,
            "temperature": req.temperature,
        }
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

    def generate(self, requests: list[ChatRequest]) -> list[ChatResponse]:
        out = []
        for req in requests:
            resp = self.client.post("/chat/completions", json=self.request_body(req))
            resp.raise_for_status()
            out.append(parse_chat_completion(resp.json()))
        return out


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

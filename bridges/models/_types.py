"""What goes in and out of the model layer, and the errors a backend raises to steer its retries."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from bridges._errors import BenchbridgeError, FrameworkFailure

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


def cut_at_stops(text: str, stops: Sequence[str] | None) -> str:
    """The text up to the earliest occurrence of any stop sequence (OpenAI's `stop`: the stop is not kept)."""
    found = [text.find(stop) for stop in stops or () if stop]
    return text[: min((i for i in found if i >= 0), default=len(text))]


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


class RetryableModelError(Exception):
    """A failure worth retrying (429, 5xx, timeout, dropped connection). `python` models may raise it too.

    `retry_after` (seconds) is the upstream's own `Retry-After`; the layer waits at least that long.
    """

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ModelRequestRejected(BenchbridgeError):
    """The upstream refused the request in a way a retry cannot fix (400, 401, 403, 404, no quota)."""


class ModelUnavailable(FrameworkFailure):
    """Retries ran out (or the upstream asked for a longer wait than allowed)."""

"""Model specs: one YAML mapping per model, its `kind` choosing a registry entry."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bridges._errors import BenchbridgeError
from bridges._files import MAX_NAME
from bridges._registry import Registry
from bridges.executors.engines import ServeSettings


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class Generation(_Strict):
    """Generation settings; frameworks that generate for us are given these too."""

    max_new_tokens: int = Field(256, ge=1)
    temperature: float = Field(0.0, ge=0)
    top_p: float | None = None
    stop: list[str] = Field(default_factory=list)
    seed: int | None = None


class Limits(_Strict):
    """How hard the model layer may push this model, and how it retries (`limits:` in a model's YAML).

    Concurrency and rate limits hold per process (all threads); a framework that starts several
    processes gets them per process, and the upstream's 429s with `Retry-After` cover the rest.
    """

    max_concurrency: int = Field(4, ge=1, description="requests (or batches) in flight at once")
    requests_per_minute: float | None = Field(
        None, gt=0, description="prompts per minute (a batch counts its prompts), token bucket; None: unlimited"
    )
    tokens_per_minute: float | None = Field(None, gt=0, description="prompt + max_new_tokens, corrected by usage")
    max_retries: int = Field(6, ge=0, description="retries of a 429/5xx/timeout/dropped connection")
    timeout_s: float = Field(120.0, gt=0, description="per attempt")
    backoff_s: float = Field(0.5, ge=0, description="first retry waits up to this (full jitter), doubling")
    backoff_max_s: float = Field(30.0, ge=0, description="cap of one backoff wait")
    max_retry_after_s: float = Field(
        300.0, ge=0, description="a Retry-After longer than this (a daily quota, say) fails now instead of waiting"
    )


class ModelSpec(_Strict):
    """Fields every model kind has."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@+-]*$", max_length=MAX_NAME)
    kind: str
    system_prompt: str | None = None
    generation: Generation = Field(default_factory=Generation)
    limits: Limits = Field(default_factory=Limits)
    batch_size: int = Field(8, ge=1)
    # Where a unit of this model may run (the ray executor's task options: num_cpus, num_gpus, memory, or a
    # custom resource of the cluster's nodes). Not part of what the model answers, so never dumped.
    resources: dict[str, float] | None = Field(None, exclude=True)

    def identity(self) -> str:
        """Stable hash of everything that changes answers (not the display name)."""
        payload = self.model_dump(mode="json", exclude={"name", "limits", "batch_size"})
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    def public_dict(self) -> dict[str, Any]:
        """The spec as written to manifests: holds env-var names, never secret values."""
        return self.model_dump(mode="json")


class HFSpec(ModelSpec):
    kind: Literal["hf"] = "hf"
    path: str
    chat: bool = True
    tokenizer_path: str | None = None
    tokenizer_kwargs: dict[str, Any] = Field(default_factory=dict)
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    peft_path: str | None = None
    max_seq_len: int = Field(2048, ge=16)
    # Served by vLLM or SGLang for the run (bridges/executors/engines.py); frameworks then ask an openai spec.
    serve: ServeSettings | None = Field(None, exclude=True)


class OpenAISpec(ModelSpec):
    kind: Literal["openai"] = "openai"
    model: str
    base_url: str = "https://api.openai.com/v1"
    api_key_env: str = "OPENAI_API_KEY"
    # OpenCompass's OpenAISDK downloads a tiktoken file unless given a local HF tokenizer.
    tokenizer_path: str | None = None

    @field_validator("base_url")
    @classmethod
    def _plain_http_url(cls, value: str) -> str:
        """Refused rather than half-honoured: requests go to the origin and path only, and the URL is written
        into native configs and errors, so credentials in it would leak while never being sent. The bridges
        append their paths to it as written, so it must end where its path ends. (No message repeats the URL,
        which may hold a secret.)"""
        if any(c.isspace() or not c.isprintable() for c in value):
            raise ValueError("contains spaces or control characters")
        if "?" in value or "#" in value:
            raise ValueError("has a query (?...) or fragment (#...), which is not sent: give the origin and path only")
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018  # raises on a port that is not a number in 0-65535
        except ValueError:  # urllib's message quotes the host part, credentials included
            raise ValueError("is not a valid URL (like http://127.0.0.1:8000/v1)") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("not an http(s) URL (like http://127.0.0.1:8000/v1)")
        if "@" in parts.netloc:
            raise ValueError(
                "holds credentials (user:password@host): they are not sent and would be written to logs;"
                " give the key in api_key_env"
            )
        return value


class PythonSpec(ModelSpec):
    kind: Literal["python"] = "python"
    target: str = Field(description="'package.module:attr', or a name registered with @python_model")
    args: dict[str, Any] = Field(default_factory=dict)
    input: Literal["messages", "prompt"] = "messages"
    imports: list[str] = Field(default_factory=list, description="modules to import so decorators run")


class ModelKind(BaseModel):
    """A registry entry: the spec type and where its backend lives (imported lazily).

    `fingerprint` ("module:function", spec -> str) adds to the response cache key what the spec's
    fields cannot show changed: the weights in an `hf` folder, the source of a `python` model.
    It must be cheap and must not load the model: a fully cached rerun never loads it.
    """

    spec: type[ModelSpec]
    backend: str
    fingerprint: str | None = None


MODEL_KINDS: Registry[ModelKind] = Registry("model kind")
MODEL_KINDS.register("hf")(
    ModelKind(spec=HFSpec, backend="bridges.models._hf:HFBackend", fingerprint="bridges.models._hf:fingerprint")
)
MODEL_KINDS.register("openai")(ModelKind(spec=OpenAISpec, backend="bridges.models._openai:OpenAIBackend"))
MODEL_KINDS.register("python")(
    ModelKind(
        spec=PythonSpec,
        backend="bridges.models._python:PythonBackend",
        fingerprint="bridges.models._python:fingerprint",
    )
)


def parse_model_spec(raw: Any, where: str = "model") -> ModelSpec:
    """Validates one model mapping; errors name `where.key`."""
    if not isinstance(raw, dict):
        raise BenchbridgeError(f"{where}: expected a mapping with name and kind")
    if "kind" not in raw:
        raise BenchbridgeError(f"{where}.kind: missing (one of {', '.join(MODEL_KINDS.names())})")
    kind = MODEL_KINDS.get(str(raw["kind"]), key=f"{where}.kind")
    try:
        return kind.spec.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise BenchbridgeError(f"{where}.{loc}: {err['msg']}") from None

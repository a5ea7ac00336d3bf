"""Keeps secrets out of everything we store or publish.

Specs hold env-var names, never values, but a framework's log excerpt (an error we keep for the
board) can still echo a key, e.g. an `Authorization: Bearer ...` header. So the store and the
publisher pass every text they write through `redact`, which replaces the values of secret-looking
environment variables (and of any `api_key_env` a model spec names) and bearer tokens.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

SECRET_NAME_PARTS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL")
MIN_SECRET_LENGTH = 8  # shorter values ("1", "true") are settings, and replacing them would mangle text
MASK = "***"
_BEARER = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]{8,}")


def _dotenv_values() -> dict[str, str]:
    env_file = Path(".env")
    if not env_file.is_file():
        return {}
    from dotenv import dotenv_values

    return {k: v for k, v in dotenv_values(env_file).items() if v is not None}


def secret_values(extra_names: Iterable[str] = (), env: Mapping[str, str] | None = None) -> list[str]:
    """Values of secret-looking variables from the environment and `.env`, longest first."""
    source = {**_dotenv_values(), **(dict(os.environ) if env is None else dict(env))}
    names = set(extra_names)
    values = {
        value
        for name, value in source.items()
        if len(value) >= MIN_SECRET_LENGTH and (name in names or any(p in name.upper() for p in SECRET_NAME_PARTS))
    }
    # A value with quotes or backslashes is written escaped inside JSON: mask that spelling too.
    values |= {json.dumps(v, ensure_ascii=False)[1:-1] for v in values}
    return sorted(values, key=len, reverse=True)


def key_env_names(models: Iterable[Mapping[str, object]]) -> list[str]:
    """The `api_key_env` names that model specs (as in a manifest) point at."""
    return [str(m["api_key_env"]) for m in models if isinstance(m, Mapping) and m.get("api_key_env")]


def redact(text: str, secrets: Iterable[str]) -> str:
    for value in secrets:
        if value in text:
            text = text.replace(value, MASK)
    return _BEARER.sub(lambda m: f"{m.group(1)} {MASK}", text)

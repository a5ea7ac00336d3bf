"""Keeps secrets out of everything benchbridge writes or prints.

Specs hold env-var names, never values, but text that comes back from a model or a framework can
still quote a key: an upstream's 401 echoing the `Authorization` header, a traceback printing a
python model's arguments. So every text we write (run-folder logs, meta files, failure excerpts,
the store, published files) or print passes through `mask`/`redact`, which replace:

- the values of secret-looking variables (names containing KEY, TOKEN, SECRET, PASSWORD...) from the
  environment and `.env`, and of every variable a model names as `api_key_env` or that we read as
  a secret (`remember_secret_name`);
- `Bearer <token>` and OpenAI-style keys (`sk-` and at least 16 more letters, digits, `_` or `-`),
  whatever their source.

Framework child processes write their own log files, which we cannot filter at the source: a
bridge calls `scrub_tree` on its run folder once the framework has ended, before reading excerpts.

A `python` model's `args` keep their `${VAR}` references in everything written (manifests, native
configs, job files); `resolve_env_refs` turns them into values only inside the process that builds
the model, and `referenced_env` hands the values of those variables to framework child processes
through their environment.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO, cast

SECRET_NAME_PARTS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL")
MIN_SECRET_LENGTH = 8  # shorter values ("1", "true") are settings, and replacing them would mangle text
MASK = "***"
# A token has a digit somewhere: "the bearer instruments" in a dataset's text is left alone.
_BEARER = re.compile(r"(?i)\b(bearer)\s+(?=[A-Za-z._~+/=-]*[0-9])[A-Za-z0-9._~+/=-]{8,}")
# OpenAI-style keys: sk-..., sk-proj-..., also when quoted inside JSON or a repr.
_SK_KEY = re.compile(r"(?<![A-Za-z0-9_-])sk-[A-Za-z0-9_-]{16,}")
ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
# Files under a run folder larger than this are not text logs (weights, databases): not rewritten.
MAX_SCRUB_BYTES = 64 * 1024 * 1024
_BINARY_SUFFIXES = {".sqlite", ".db", ".bin", ".safetensors", ".pt", ".pth", ".gguf", ".parquet", ".arrow", ".xlsx"}

_NAMES: set[str] = set()  # variables read as secrets by this process (api_key_env, python args refs)
_NAMES_LOCK = threading.Lock()


def remember_secret_name(name: str) -> None:
    """Marks a variable as holding a secret, whatever its name: its value is masked from now on."""
    with _NAMES_LOCK:
        _NAMES.add(name)


def is_secret_name(name: str) -> bool:
    upper = name.upper()
    return any(part in upper for part in SECRET_NAME_PARTS)


def dotenv_values() -> dict[str, str]:
    """`./.env` as a dict (values that are set only)."""
    env_file = Path(".env")
    if not env_file.is_file():
        return {}
    from dotenv import dotenv_values as read

    try:
        return {k: v for k, v in read(env_file).items() if v is not None}
    except (OSError, UnicodeDecodeError):
        return {}  # unreadable: masking must never be what fails (it runs on every error we print)


def read_secret(name: str) -> str | None:
    """An environment variable, else the same key in `./.env`. Never written anywhere by us: from now on
    its value is masked in what this process writes or prints."""
    remember_secret_name(name)
    if os.environ.get(name):
        return os.environ[name]
    return dotenv_values().get(name) or None


def secret_values(extra_names: Iterable[str] = (), env: Mapping[str, str] | None = None) -> list[str]:
    """Values of secret-looking (or named) variables from the environment and `.env`, longest first."""
    source = {**dotenv_values(), **(dict(os.environ) if env is None else dict(env))}
    with _NAMES_LOCK:
        names = set(extra_names) | _NAMES
    values = {
        value
        for name, value in source.items()
        if len(value) >= MIN_SECRET_LENGTH and (name in names or is_secret_name(name))
    }
    # A value with quotes or backslashes is written escaped inside JSON: mask that spelling too.
    values |= {json.dumps(v, ensure_ascii=False)[1:-1] for v in values}
    return sorted(values, key=len, reverse=True)


def key_env_names(models: Iterable[Mapping[str, object]]) -> list[str]:
    """The `api_key_env` names that model specs (as in a manifest) point at."""
    return [str(m["api_key_env"]) for m in models if isinstance(m, Mapping) and m.get("api_key_env")]


def spec_secret_names(specs: Iterable[Any]) -> list[str]:
    """Variables model specs read secrets from: `api_key_env`, and `${VAR}` in a python model's args."""
    names = []
    for spec in specs:
        data = spec.public_dict() if hasattr(spec, "public_dict") else spec
        if not isinstance(data, Mapping):
            continue
        if data.get("api_key_env"):
            names.append(str(data["api_key_env"]))
        names += [var for var, _ in env_refs(data.get("args"))]
    return names


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with each of `secrets` and every bearer token or `sk-` key replaced by `***`."""
    for value in secrets:
        if value in text:
            text = text.replace(value, MASK)
    text = _BEARER.sub(lambda m: f"{m.group(1)} {MASK}", text)
    return _SK_KEY.sub(MASK, text)


def mask(text: str, extra_names: Iterable[str] = ()) -> str:
    """`redact` with the secret values this process knows of (environment, `.env`, remembered names)."""
    return redact(text, secret_values(extra_names))


def scrub_file(path: Path, secrets: list[str]) -> bool:
    """Masks secrets in one text file in place (atomically); True when it changed."""
    try:
        st = path.stat()
        if path.suffix in _BINARY_SUFFIXES or st.st_size > MAX_SCRUB_BYTES:
            return False
        data = path.read_bytes()
    except OSError:
        return False
    if b"\0" in data[:8192]:
        return False  # binary
    # Most files hold nothing to mask: substring checks (in C) spare them the decoding and the regexes.
    if b"sk-" not in data and b"bearer" not in data.lower() and not any(v.encode() in data for v in secrets):
        return False
    text = data.decode("utf-8", errors="surrogateescape")
    clean = redact(text, secrets)
    if clean == text:
        return False
    tmp = path.with_name(f".{path.name}.scrub")
    try:
        tmp.write_bytes(clean.encode("utf-8", errors="surrogateescape"))
        os.chmod(tmp, st.st_mode & 0o7777)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        return False  # a folder we may not write: nothing of ours was written there either
    return True


def scrub_tree(root: Path, extra_names: Iterable[str] = ()) -> int:
    """Masks secrets in every text file under `root` (framework logs we cannot filter at the source).

    Returns the number of files changed. Symlinks are not followed (they may point outside the run).
    """
    if not root.is_dir():
        return 0
    secrets = secret_values(extra_names)
    changed = 0
    for folder, _, files in os.walk(root):
        for name in files:
            path = Path(folder) / name
            if not path.is_symlink() and path.is_file():
                changed += scrub_file(path, secrets)
    return changed


# ---- ${VAR} references kept in python model args ----


def env_refs(value: Any) -> list[tuple[str, str | None]]:
    """Every `${VAR}` / `${VAR:-default}` in a nested value, as (name, default)."""
    if isinstance(value, Mapping):
        return [ref for v in value.values() for ref in env_refs(v)]
    if isinstance(value, list | tuple):
        return [ref for v in value for ref in env_refs(v)]
    if isinstance(value, str):
        return [(m.group(1), m.group(2)) for m in ENV_REF.finditer(value)]
    return []


def lookup_env(name: str, env: Mapping[str, str] | None = None) -> str | None:
    """A variable from the environment, else from `./.env`."""
    source = os.environ if env is None else env
    if name in source:
        return source[name]
    return dotenv_values().get(name)


def resolve_env_refs(value: Any, where: str) -> Any:
    """`value` with every `${VAR}` replaced from the environment (or `.env`); the variables are
    remembered as secrets, so their values are masked in whatever this process writes or prints."""
    from bridges._errors import BenchbridgeError

    if isinstance(value, Mapping):
        return {k: resolve_env_refs(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_env_refs(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match[str]) -> str:
        var, default = m.group(1), m.group(2)
        found = lookup_env(var)
        if found is not None:
            remember_secret_name(var)
            return found
        if default is not None:
            return default
        raise BenchbridgeError(f"{where}: environment variable ${{{var}}} is not set")

    return ENV_REF.sub(sub, value)


def referenced_env(specs: Iterable[Any]) -> dict[str, str]:
    """Values of the variables python model args refer to, for a child process's environment
    (which is how they reach a framework subprocess: never through a file)."""
    out = {}
    for spec in specs:
        data = spec.public_dict() if hasattr(spec, "public_dict") else spec
        for var, _ in env_refs(data.get("args") if isinstance(data, Mapping) else None):
            found = lookup_env(var)
            if found is not None:
                out[var] = found
    return out


class MaskedStream:
    """A text stream (stdout, stderr) that masks secrets in each write before passing it on.

    What code in benchbridge's own process prints, ours or not (a python model printing its token while
    it loads, a library's warning quoting a key), reaches the terminal through it. Each write is masked
    whole: a secret split across two writes would pass (print writes its text in one)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        self.stream.write(mask(text) if text.strip() else text)
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, flush, encoding...: the stream's own
        return getattr(self.stream, name)


@contextlib.contextmanager
def masked_output() -> Iterator[None]:
    """While open, `sys.stdout` and `sys.stderr` mask secrets (see `MaskedStream`); restored after."""
    saved = sys.stdout, sys.stderr
    if not isinstance(sys.stdout, MaskedStream):
        sys.stdout = cast(TextIO, MaskedStream(sys.stdout))
    if not isinstance(sys.stderr, MaskedStream):
        sys.stderr = cast(TextIO, MaskedStream(sys.stderr))
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved

"""Errors a user sees as one line. The CLI maps them to exit codes; nothing else catches them."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class BenchbridgeError(Exception):
    """Bad input: one line naming the file, line or key. CLI exit code 2."""

    exit_code = 2


class FrameworkFailure(BenchbridgeError):
    """A framework ran and failed (or reported failed tasks). CLI exit code 1."""

    exit_code = 1

    def __init__(self, message: str, log_excerpt: str = "") -> None:
        super().__init__(message)
        self.log_excerpt = log_excerpt


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """`"did you mean 'x'? "` for the closest of `known` (difflib's 0.6 cutoff), else "": the hint of every
    unknown-name error."""
    close = difflib.get_close_matches(name, list(known), n=1)
    return f"did you mean {close[0]!r}? " if close else ""


def where(path: object, line: int | None = None, key: str | None = None) -> str:
    """Formats the location prefix used by every input error: `file:line: key:`."""
    out = str(path)
    if line is not None:
        out += f":{line}"
    if key:
        out += f": {key}"
    return out

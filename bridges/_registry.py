"""Name -> implementation registries with lazy imports.

Framework bridges, model kinds and dataset importers are registry entries. Built-in entries are
declared as ``"module:attr"`` strings so that `benchbridge --help` imports no framework; third-party
code registers with the decorator, or, for a registry with an entry-point group (frameworks:
``benchbridge.frameworks``), from its package's metadata, so an installed package needs no import:

    [project.entry-points."benchbridge.frameworks"]
    my_framework = "my_package.bridge:MyBridge"
"""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Callable
from typing import Generic, TypeVar, cast

from bridges._errors import BenchbridgeError, did_you_mean

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, what: str, entry_points: str | None = None) -> None:
        self.what = what
        self.entry_points = entry_points  # the entry-point group installed packages register in
        self._scanned = entry_points is None
        self._lazy: dict[str, str] = {}
        self._loaded: dict[str, T] = {}

    def _scan(self) -> None:
        """Installed packages' entry points, read once on first use (imported only when asked for);
        a name registered in code, built-ins included, wins."""
        if self._scanned:
            return
        self._scanned = True
        for ep in importlib.metadata.entry_points(group=str(self.entry_points)):
            if ep.name not in self._lazy and ep.name not in self._loaded:
                self._lazy[ep.name] = ep.value

    def add_lazy(self, name: str, target: str) -> None:
        """Registers `name` as `module:attr`, imported on first `get`."""
        self._lazy[name] = target

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@registry.register("name")``."""

        def deco(obj: T) -> T:
            self._loaded[name] = obj
            return obj

        return deco

    def names(self) -> list[str]:
        self._scan()
        return sorted(set(self._lazy) | set(self._loaded))

    def __contains__(self, name: str) -> bool:
        self._scan()
        return name in self._lazy or name in self._loaded

    def get(self, name: str, *, key: str | None = None) -> T:
        self._scan()
        if name not in self._loaded:
            target = self._lazy.get(name)
            if target is None:
                at = f"{key}: " if key else ""
                hint = did_you_mean(str(name), self.names())
                raise BenchbridgeError(
                    f"{at}unknown {self.what} {name!r}; {hint}known: {', '.join(self.names()) or '(none)'}"
                )
            # A lazy entry is a "module:attr" the registry's owner declared as a T; imports are untyped.
            self._loaded[name] = cast(T, import_target(target))
        return self._loaded[name]


def import_target(target: str) -> object:
    """Imports ``package.module:attr`` (attr may be dotted)."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise BenchbridgeError(f"{target!r} is not of the form 'package.module:attr'")
    try:
        obj: object = importlib.import_module(module_name)
    except ImportError as exc:
        raise BenchbridgeError(f"cannot import {module_name!r} for {target!r}: {exc}") from exc
    except SyntaxError as exc:
        at = f"{exc.filename}:{exc.lineno}: " if exc.filename else ""
        raise BenchbridgeError(f"cannot import {module_name!r} for {target!r}: {at}{exc.msg}") from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise BenchbridgeError(f"{module_name!r} has no attribute {attr!r} (from {target!r})") from exc
    return obj

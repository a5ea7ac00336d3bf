"""The verbs every framework bridge has: prepare native artifacts, run, collect records."""

from __future__ import annotations

import importlib.metadata
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from bridges._config import LoadedConfig
from bridges._registry import Registry
from bridges.records import Record


@dataclass
class RunContext:
    """What a bridge gets: the loaded config, this run's id and hash, and a progress callback."""

    config: LoadedConfig
    run_id: str
    config_hash: str
    progress: Callable[[str], None] = lambda message: None
    force: bool = False  # rerun work the framework would skip as already done


class NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Bridge(ABC):
    """One framework. Subclasses set `name`, `distribution` and `Options`."""

    name: ClassVar[str]
    distribution: ClassVar[str]  # the PyPI distribution whose version records carry
    Options: ClassVar[type[BaseModel]] = NoOptions

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.config = ctx.config
        self.options = ctx.config.framework_options(self.name, self.Options)

    @classmethod
    def version(cls) -> str:
        try:
            return importlib.metadata.version(cls.distribution)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    @abstractmethod
    def prepare(self, out_dir: Path) -> list[Path]:
        """Writes the framework's native artifacts (runnable by hand) and returns their paths."""

    @abstractmethod
    def run(self, out_dir: Path) -> list[Record]:
        """Prepares if needed, runs the framework, and returns `collect(out_dir)`."""

    @abstractmethod
    def collect(self, out_dir: Path) -> list[Record]:
        """Reads the framework's native reports under `out_dir` into records."""

    def record(self, **fields: Any) -> Record:
        """A record of this bridge's run: `fields` are the Record fields beyond run, framework and config hash."""
        base = {
            "run_id": self.ctx.run_id,
            "framework": self.name,
            "framework_version": self.version(),
            "config_hash": self.ctx.config_hash,
        }
        return Record(**{**base, **fields})


FRAMEWORKS: Registry[type[Bridge]] = Registry("framework")


def framework(name: str):  # noqa: ANN201 - decorator
    """Registers a third-party bridge: ``@framework("my_framework")``."""
    return FRAMEWORKS.register(name)

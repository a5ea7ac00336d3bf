"""The verbs every framework bridge has, and the one flow a run takes through them.

`Bridge.run` is a template: validate -> (models served, `during_run`) prepare -> execute -> collect.
A framework writes `prepare` (its native artifacts), `execute` (start the framework on them, through
`bridges.frameworks.processes`) and `collect` (its native reports -> records); `validate` and
`prepare_run` only when it has run-time checks or a run prepares differently from `prepare`.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from bridges._config import LoadedConfig
from bridges._errors import BenchbridgeError
from bridges._registry import Registry
from bridges.models import ModelSpec
from bridges.records import Record, Sample, failure
from bridges.secrets import scrub_tree, spec_secret_names


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
    """One framework. Subclasses set `name`, `distribution`, `kinds` and `Options`."""

    name: ClassVar[str]
    distribution: ClassVar[str]  # the PyPI distribution whose version records carry
    kinds: ClassVar[frozenset[str]] = frozenset()  # the dataset kinds it can take ("mcq", "qa", "open")
    Options: ClassVar[type[BaseModel]] = NoOptions

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.config = ctx.config
        self._check_assigned_kinds()
        self.options = ctx.config.framework_options(self.name, self.Options)

    def _check_assigned_kinds(self) -> None:
        """A dataset assigned to this framework by name (`datasets[i].frameworks`) must be of a kind it
        takes: silently leaving it out would publish a board without it."""
        for i, ds in enumerate(self.config.datasets):
            allowed = self.config.dataset_frameworks.get(ds.name) or []
            if self.name in allowed and ds.kind not in self.kinds:
                j = allowed.index(self.name)
                raise BenchbridgeError(
                    f"{self.config.where('datasets', i, 'frameworks', j)}: datasets[{i}].frameworks[{j}]: "
                    f"{self.name} cannot take dataset {ds.name} of kind {ds.kind!r} (it takes "
                    f"{', '.join(sorted(self.kinds)) or 'none'}); remove {self.name} from the list"
                )

    @classmethod
    def version(cls) -> str:
        try:
            return importlib.metadata.version(cls.distribution)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    @abstractmethod
    def prepare(self, out_dir: Path) -> list[Path]:
        """Writes the framework's native artifacts (runnable by hand) and returns their paths."""

    def run(self, out_dir: Path) -> list[Record]:
        """The one flow of every framework's run; returns `collect(out_dir)`.

        Whatever the framework wrote is scrubbed of secrets before anything reads it (a log may quote a
        key: an upstream's 401 echoing the header), even when `execute` raised.
        """
        out_dir = Path(out_dir).resolve()
        self.validate()
        with self.during_run():
            try:
                self.prepare_run(out_dir)
                self.execute(out_dir)
            finally:
                if out_dir.exists():
                    scrub_tree(out_dir, self.secret_names())
        return self.collect(out_dir)

    def validate(self) -> None:  # noqa: B027 - an optional hook: most bridges check all in __init__
        """Run-time checks before anything is written (an executable present, a key set)."""

    def during_run(self) -> contextlib.AbstractContextManager[None]:
        """Open while the run prepares and executes: models served to the framework, say."""
        return contextlib.nullcontext()

    def prepare_run(self, out_dir: Path) -> None:
        """The artifacts a run executes: `prepare`'s, unless a framework reuses earlier work."""
        self.prepare(out_dir)

    @abstractmethod
    def execute(self, out_dir: Path) -> None:
        """Runs the framework on the prepared `out_dir`; its native reports go there."""

    def secret_names(self) -> list[str]:
        """Environment names whose values are masked in what the framework wrote."""
        return spec_secret_names(self.config.models)

    @abstractmethod
    def collect(self, out_dir: Path) -> list[Record]:
        """Reads the framework's native reports under `out_dir` into records."""

    def collect_samples(self, out_dir: Path) -> list[Sample]:
        """Reads the framework's own per-sample output under `out_dir` into samples, each scored by
        the metric names its records use. Separate from `collect` so a bridge without per-sample
        output needs nothing (this default: none) and callers of `collect` are unchanged."""
        return []

    def record(self, **fields: Any) -> Record:
        """A record of this bridge's run: `fields` are the Record fields beyond run, framework and config hash."""
        base = {
            "run_id": self.ctx.run_id,
            "framework": self.name,
            "framework_version": self.version(),
            "config_hash": self.ctx.config_hash,
        }
        return Record(**{**base, **fields})

    def failed_everywhere(self, error: str, models: Iterable[ModelSpec]) -> list[Record]:
        """One failed record per model standing for the whole framework (benchmark `*`): the framework
        (or the unit running it) failed before it could say which benchmarks it would have scored."""
        return [
            failure(
                run_id=self.ctx.run_id,
                model=m.name,
                framework=self.name,
                framework_version=self.version(),
                benchmark="*",
                error=error,
                config_hash=self.ctx.config_hash,
            )
            for m in models
        ]


# Third-party bridges: `@framework("name")`, or an entry point in the group "benchbridge.frameworks".
FRAMEWORKS: Registry[type[Bridge]] = Registry("framework", entry_points="benchbridge.frameworks")


def framework(name: str):  # noqa: ANN201 - decorator
    """Registers a third-party bridge: ``@framework("my_framework")``."""
    return FRAMEWORKS.register(name)

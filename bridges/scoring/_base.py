"""What every scorer is: a registry entry that turns stored responses into per-sample scores.

A scorer never asks the evaluated model: it gets `Item`s (the question, the references, the model's
answers as stored) and returns one `Score` per item. So the same code scores a fresh run (the `scoring`
framework generates, then scores) and `benchbridge rescore` (stored answers, no evaluated-model call).
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from bridges._config import LoadedConfig
from bridges._errors import BenchbridgeError
from bridges._registry import Registry


@dataclass
class Item:
    """One dataset sample and what the evaluated model answered (several answers for pass@k)."""

    sample_id: str
    kind: str  # "gen" or "code"
    messages: list[dict[str, str]]
    outputs: list[str]
    references: list[str] = field(default_factory=list)
    task: str = "default"
    language: str = "en"
    code: dict[str, Any] | None = None  # code kind: prompt, entry_point, tests, setup

    @property
    def question(self) -> str:
        return self.messages[-1]["content"] if self.messages else ""


@dataclass
class Score:
    """A scorer's verdict on one item: raw values by metric (None: not scorable, e.g. an invalid verdict)."""

    values: dict[str, float | None]
    invalid: bool = False
    verdict: str | None = None  # a judge's parsed choice/score
    reasoning: str | None = None  # a judge's own text
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Metric:
    """A board column: its name, full scale (values / scale = 0-1), direction and whether it is shown by default."""

    name: str
    scale: float = 1.0
    higher_is_better: bool = True
    primary: bool = True


class NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Scorer(ABC):
    """Subclasses set `name`, `version` (bump when scores change), `kinds` and `Options`."""

    name: ClassVar[str]
    version: ClassVar[str] = "1"
    kinds: ClassVar[frozenset[str]] = frozenset({"gen"})
    Options: ClassVar[type[BaseModel]] = NoOptions

    def __init__(self, options: BaseModel, config: LoadedConfig, loc: tuple[Any, ...]) -> None:
        self.options = options
        self.config = config
        self.key = ".".join(str(p) for p in loc)  # where its options are in the config, for error messages
        self.at = config.where(*loc) if config is not None else self.key  # `file:line` of those options

    def error_at(self, option: str, message: str) -> BenchbridgeError:
        """A bad option of this scorer: one line naming the config's file, line and key."""
        return BenchbridgeError(f"{self.at}: {self.key}.{option}: {message}")

    @abstractmethod
    def metrics(self) -> list[Metric]: ...

    @abstractmethod
    def score(self, items: list[Item]) -> list[Score]: ...

    def judge(self) -> str | None:
        """The model that judged (a judge scorer), shown in the column label."""
        return None

    def fingerprint_parts(self) -> dict[str, Any]:
        """What, beyond the options, decides the scores (a rubric file's text, a model folder's files)."""
        return {}

    def identity(self) -> str:
        """`name/version+hash`: marks on the board which scorer setup produced a value."""
        blob = json.dumps(
            {"options": self.options.model_dump(mode="json"), **self.fingerprint_parts()}, sort_keys=True, default=str
        )
        return f"{self.name}/{self.version}+{hashlib.sha256(blob.encode()).hexdigest()[:8]}"


# Third-party scorers: `@scorer("name")` on a Scorer subclass, or an entry point in "benchbridge.scorers".
SCORERS: Registry[type[Scorer]] = Registry("scorer", entry_points="benchbridge.scorers")


def scorer(name: str):  # noqa: ANN201 - decorator
    """Registers a scorer class: ``@scorer("my_metric")``."""

    def deco(cls: type[Scorer]) -> type[Scorer]:
        cls.name = name
        return SCORERS.register(name)(cls)

    return deco

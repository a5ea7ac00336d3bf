"""Where `benchbridge run`'s units run: `local` (threads on this machine, the default) or `ray` (tasks on a
Ray cluster). Chosen by the run config's `executor:` (`{kind: local | ray, address: auto | ray://host:port,
...}`) or `--executor` on the command line; third-party executors register in `EXECUTORS`.

Whatever the executor, the driver (the `benchbridge run` process) alone writes the results store and the
run folder: an executor hands back each unit's `FrameworkOutcome` after its records are stored.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from bridges._registry import Registry

if TYPE_CHECKING:
    from bridges._runner import FrameworkOutcome
    from bridges.frameworks import Bridge
    from leaderboards.store import ResultsStore


class ExecutorSettings(BaseModel):
    """The run config's `executor:` mapping."""

    model_config = ConfigDict(extra="forbid")
    kind: str = "local"
    # ray: `auto` (the cluster this machine's `ray start` joined, or $RAY_ADDRESS), `host:port` of a head's
    # GCS, or `ray://host:port` (Ray Client); `local` starts a private one-node Ray for the run.
    address: str = "auto"
    max_retries: int = Field(3, ge=0, description="ray: a unit lost with its node or worker runs again up to this")
    num_cpus: float = Field(1.0, gt=0, description="ray: CPUs a unit asks for, unless its model's resources say")
    namespace: str = "benchbridge"


class Executor(ABC):
    """Runs a run's framework bridges, each as one or more units, and stores each unit's outcome."""

    def __init__(self, settings: ExecutorSettings) -> None:
        self.settings = settings

    @abstractmethod
    def run(
        self,
        bridges: Sequence[Bridge],
        store: ResultsStore,
        run_dir: Path,
        progress: Callable[[str], None],
        max_parallel: int,
    ) -> list[FrameworkOutcome]:
        """Every bridge's records stored (by this, the driver's, process); the outcomes in config order."""


class LocalExecutor(Executor):
    """One unit per framework, up to `max_parallel` at once on this machine's threads."""

    def run(
        self,
        bridges: Sequence[Bridge],
        store: ResultsStore,
        run_dir: Path,
        progress: Callable[[str], None],
        max_parallel: int,
    ) -> list[FrameworkOutcome]:
        from bridges._parallel import run_units
        from bridges._runner import run_framework

        return run_units(bridges, lambda b: run_framework(b, store, run_dir, progress), max_parallel)


EXECUTORS: Registry[type[Executor]] = Registry("executor")
EXECUTORS.register("local")(LocalExecutor)
EXECUTORS.add_lazy("ray", "bridges.executors.ray:RayExecutor")  # imports ray only when chosen


def executor_settings(raw: Any, key: str) -> ExecutorSettings:
    """`--executor` text (`ray`, `ray@auto`, `ray@127.0.0.1:6379`) or the config's mapping, checked."""
    from pydantic import ValidationError

    from bridges._errors import BenchbridgeError
    from bridges._files import loc_text

    from_cli = isinstance(raw, str)
    if isinstance(raw, str):
        kind, _, address = raw.partition("@")
        raw = {"kind": kind, **({"address": address} if address else {})}
    try:
        settings = ExecutorSettings.model_validate(raw or {})
    except ValidationError as exc:
        err = exc.errors()[0]
        raise BenchbridgeError(f"{key}: {loc_text(err['loc']) or 'executor'}: {err['msg']}") from None
    EXECUTORS.get(settings.kind, key=key if from_cli else f"{key}.kind")
    return settings


def make_executor(settings: ExecutorSettings) -> Executor:
    return EXECUTORS.get(settings.kind)(settings)

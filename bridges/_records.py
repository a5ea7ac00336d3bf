"""Normalized result records: what every bridge's `collect` returns and the board reads."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Record(BaseModel):
    """One number (or one failure) for a model on a benchmark in a framework."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    run_id: str
    model: str
    framework: str
    framework_version: str
    benchmark: str
    subset: str = ""  # e.g. a C-Eval subject; "" is the whole benchmark
    metric: str
    value: float | None = None
    stderr: float | None = None
    scale: float = Field(1.0, description="the value's full scale as the framework wrote it: 1 or 100")
    higher_is_better: bool = True
    primary: bool = False  # the metric a board column shows for this benchmark
    n_samples: int | None = None
    judge: str | None = None
    config_hash: str = ""
    time: str = Field(default_factory=now_iso)
    status: Literal["ok", "failed"] = "ok"
    error: str | None = None
    details_path: str | None = None  # the framework's own per-sample file, for provenance
    extra: dict[str, Any] = Field(default_factory=dict)

    @property
    def value_100(self) -> float | None:
        return None if self.value is None else self.value * 100.0 / self.scale


def failure(
    *, run_id: str, model: str, framework: str, framework_version: str, benchmark: str, error: str, **kw: Any
) -> Record:
    """A failed cell: visible on the board with its reason, never a 0 score."""
    return Record(
        run_id=run_id,
        model=model,
        framework=framework,
        framework_version=framework_version,
        benchmark=benchmark,
        metric=kw.pop("metric", "accuracy"),
        status="failed",
        error=error[-2000:],
        primary=True,
        **kw,
    )

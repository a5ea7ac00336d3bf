"""Normalized result records: what every bridge's `collect` returns and the board reads."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

ERROR_CHARS = 4000  # a failed record's error: its reason, then the end of the log (where the error is)


def clip_error(error: str, limit: int = ERROR_CHARS) -> str:
    """`error` whole, or its first line (the reason) and its end (a log's last lines) within `limit`:
    cutting either end alone loses the reason or the traceback's last line."""
    if len(error) <= limit:
        return error
    reason, _, rest = error.partition("\n")
    reason = reason[: limit // 4]
    gap = "\n[...]\n"
    return reason + gap + rest[-(limit - len(reason) - len(gap)) :]


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
        error=clip_error(error),
        primary=True,
        **kw,
    )


class Judgement(BaseModel):
    """What a judge model said about one sample (AlpacaEval's preference, evals' model-graded choice)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str
    verdict: str | None = None  # e.g. "1"/"2" (AlpacaEval preference) or the choice evals parsed ("Y", "__invalid__")
    reasoning: str | None = None  # the judge's own text, as it answered


class Sample(BaseModel):
    """One sample of one framework run for one model: what was asked, answered, extracted and scored.

    It fits each framework's own per-sample output: OpenCompass `predictions/` + `results/` details
    (`origin_prompt`, `prediction`, `gold`, `pred`/`correct`), OpenAI evals record JSONL (`sampling`
    prompt and completion, `match`/`metrics` events), AlpacaEval annotations (`instruction`,
    `output_1`/`output_2`, `preference`, the judge's raw completion) and lm-eval `log_samples`
    (`arguments`, `resps`/`filtered_resps`, `target`, per-metric values). `scores` holds every
    per-sample metric by the name the framework's `Record.metric` uses, so a board cell's samples are
    those with the cell's `run_id`/model/framework/benchmark/subset, scored by `scores[metric]`.
    """

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    run_id: str
    model: str
    framework: str
    benchmark: str
    subset: str = ""
    sample_id: str  # the canonical dataset's id where the dataset is ours, else the framework's index
    prompt: str | None = None  # the rendered prompt string exactly as sent (few-shot included)
    messages: list[dict[str, Any]] | None = None  # the chat messages exactly as sent, when it sent messages
    output: str | None = None  # the model's raw output
    extracted: str | None = None  # the answer the framework scored, after its extraction/filters
    references: list[str] = Field(default_factory=list)
    choices: list[str] | None = None  # multiple-choice options, when there are some
    scores: dict[str, float | None] = Field(default_factory=dict)  # metric -> per-sample score (None: not scored)
    invalid: bool = False  # the answer or the judge's grade could not be parsed
    judge: Judgement | None = None
    group: str | None = None  # cluster key for clustered standard errors (e.g. the subject)
    extra: dict[str, Any] = Field(default_factory=dict)

    @property
    def input_text(self) -> str:
        """The input as one string: the prompt, else the messages as `role: content` lines."""
        if self.prompt is not None:
            return self.prompt
        return "\n".join(f"{m.get('role', '')}: {m.get('content', '')}" for m in self.messages or [])

"""Merge: every framework's records into one board of models x columns.

A column is framework / benchmark / metric, plus the judge for judged metrics, showing the
benchmark's primary metric scaled to 0-100 (`Record.value_100`) with its direction. Subsets (e.g.
C-Eval subjects) are folded into their benchmark's cell by default: the framework's own
whole-benchmark record when it wrote one, else the sample-weighted mean of the subsets' latest
records (`subsets=True` gives every subset its own column instead).

Each cell shows the latest successful record; a cell whose every attempt failed shows `failed`
with the reason, and one nobody ran shows `missing`. A judged score whose every grade was invalid
(OpenAI evals' `__invalid__`) shows `invalid (n/n)`: evals scores it as the lowest choice, which is
no measurement, so it is neither averaged nor ranked; a partly invalid score shows the count beside
its value (`87.50 (1 invalid)`). A model that was only a judge, grader or reference is no
contestant: it gets no row unless it was also evaluated, and where it was (e.g. AlpacaEval's
reference) its cell says so and that column leaves the default average, so that the board reads the
same from `--db` as from the config. A failed record with benchmark `*` (a
framework that failed as a whole) counts against every column of that framework. The average is
over chosen columns (default: every column with a valid score in which every row's model could have
one, so a column nobody could run, or one where a row's model was the judge or reference, is shown
but does not take every rank away), a lower-is-better column entering as 100 - value; only rows
with a result in every chosen column get a rank, so a model cannot climb by failing its hard tasks.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import gc
import os
from collections.abc import Container, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from bridges import BenchbridgeError
from bridges.records import Record
from leaderboards.stats import (
    Z95,
    Interval,
    Paired,
    RankRange,
    paired,
    rank_ranges,
    sample_interval,
    stderr_interval,
    stratified_interval,
)
from leaderboards.store import ResultsStore, SampleScores, latest_per_cell

if TYPE_CHECKING:
    import pandas as pd
    from rich.table import Table

    from bridges import LoadedConfig

RANK_RANGE = "rank range"
VERSUS_NEXT = "vs next"
CI_SUFFIX = "95% CI"
ALL_BENCHMARKS = "*"  # benchmark of the failure record the runner writes when a framework fails as a whole
CellStatus = Literal["ok", "failed", "missing", "invalid"]
NO_VALUE = "—"
# A model judge's AlpacaEval template, as a reader should see it: the stored name
# `weighted_alpaca_eval_gpt4_turbo@smollm2` would say GPT-4 Turbo judged.
TEMPLATE_LABELS = {"weighted_alpaca_eval_gpt4_turbo": "weighted_alpaca_eval"}


def fmt(value: float | None) -> str:
    """The one way a 0-100 number is written on every output (terminal, CSV, Markdown, HTML, xlsx)."""
    return NO_VALUE if value is None else f"{value:.2f}"


def scored_text(value_100: float | None, n_invalid: int = 0, all_of: int | None = None) -> str:
    """A score as every output writes it: `87.50`, `87.50 (1 invalid)`, or `invalid (8/8)` when
    every one of `all_of` grades was invalid."""
    if all_of is not None:
        return f"invalid ({n_invalid}/{all_of})"
    return fmt(value_100) + (f" ({n_invalid} invalid)" if n_invalid else "")


def record_text(record: Record) -> str:
    """One record's value as the board would show it (0-100, invalid grades marked)."""
    counts = invalid_counts(record) or (0, None)
    return scored_text(record.value_100, counts[0], counts[1] if all_invalid(record) else None)


def one_line(error: str | None, limit: int = 160) -> str:
    """The first non-empty line of an error excerpt (the runner puts the framework's message first)."""
    for line in (error or "").splitlines():
        if line.strip():
            text = line.strip()
            return text if len(text) <= limit else text[: limit - 1] + "…"
    return "failed without a message"


@dataclass(frozen=True)
class Column:
    framework: str
    benchmark: str
    metric: str
    judge: str | None = None
    subset: str = ""
    higher_is_better: bool = True

    @functools.cached_property  # noqa: B019 - a frozen dataclass's own derived value
    def id(self) -> str:
        bench = f"{self.benchmark}:{self.subset}" if self.subset else self.benchmark
        return f"{self.framework}/{bench}/{self.metric}" + (f"@{self.judge}" if self.judge else "")

    @property
    def benchmark_label(self) -> str:
        if self.benchmark == ALL_BENCHMARKS:
            return "(all benchmarks)"
        return f"{self.benchmark}:{self.subset}" if self.subset else self.benchmark

    @property
    def arrow(self) -> str:
        return "↑" if self.higher_is_better else "↓"

    @property
    def metric_label(self) -> str:
        judged = f" (judge: {self.judge})" if self.judge else ""
        return f"{self.metric}{judged} {self.arrow}"

    def covers(self, failed: Record) -> bool:
        """Whether a failed record stands for this column (same framework and benchmark, or all of them)."""
        return (
            failed.framework == self.framework
            and failed.benchmark in (self.benchmark, ALL_BENCHMARKS)
            and (not failed.subset or not self.subset or failed.subset == self.subset)
        )


@dataclass
class Cell:
    model: str
    column: Column
    status: CellStatus
    value_100: float | None = None
    record: Record | None = None  # the record shown; for folded subsets the latest of `parts`
    parts: list[Record] = field(default_factory=list)  # subset records folded into this cell
    # A group's whole-benchmark record (OpenCompass's C-Eval average): its subsets' records of the same run,
    # whose samples stand behind it when it has none of its own.
    members: list[Record] = field(default_factory=list)
    reason: str | None = None  # one line: why failed or missing
    error: str | None = None  # the stored error excerpt of a failed cell
    attempts: int = 0  # records ever stored for this cell
    newer_failure: Record | None = None  # an attempt that failed after the success shown
    n_invalid: int = 0  # grades the judge gave that matched no choice (or judgements not parsed)
    n_graded: int | None = None  # grades given in all, when known
    role: str | None = None  # "judge" / "reference": why a model that was no contestant here has no value
    interval: Interval | None = None  # the 95% interval (0-1), from the framework's stderr or the samples
    scores: dict[str, float] = field(default_factory=dict, repr=False)  # sample id -> 0-1 score, when stored
    groups: dict[str, str | None] = field(default_factory=dict, repr=False)  # sample id -> cluster key

    @property
    def n(self) -> int | None:
        """Samples behind the value: stored samples, else the count the framework reported."""
        return len(self.scores) if self.scores else self.n_samples

    @property
    def ci_text(self) -> str:
        """`[31.23, 68.77] n=8` (the 95% interval on 0-100), `n=8` without one, empty when nothing is known."""
        if self.status != "ok":
            return ""
        n = f"n={self.n}" if self.n else ""
        if self.interval is None:
            return n
        low, high = self.interval.scaled()
        return f"[{fmt(low)}, {fmt(high)}] {n}".strip()

    @property
    def text(self) -> str:
        if self.status in ("ok", "invalid"):
            return scored_text(self.value_100, self.n_invalid, self.n_graded if self.status == "invalid" else None)
        return self.role if self.role and self.status == "missing" else self.status

    @property
    def invalid_text(self) -> str:
        """The invalid grades as `n_invalid/n_graded` (empty when none), for a separate CSV column."""
        if not self.n_invalid:
            return ""
        return f"{self.n_invalid}/{self.n_graded}" if self.n_graded else str(self.n_invalid)

    @property
    def n_samples(self) -> int | None:
        if self.parts:
            return sum(p.n_samples or 0 for p in self.parts) or None
        return self.record.n_samples if self.record else None

    @property
    def goodness(self) -> float | None:
        """The value on a higher-is-better 0-100 scale, as it enters the average."""
        if self.value_100 is None:
            return None
        return self.value_100 if self.column.higher_is_better else 100.0 - self.value_100


@dataclass
class Row:
    model: str
    cells: dict[str, Cell]  # by column id
    average: float | None
    covered: int  # averaged columns with a result
    expected: int  # averaged columns
    rank: int | None = None
    rank_range: RankRange | None = None  # where the row cannot be told apart from its neighbours at 95%
    versus_next: str = ""  # the comparison with the next ranked row, and how many samples it rests on

    @property
    def rank_range_text(self) -> str:
        return self.rank_range.text if self.rank_range else self.rank_text

    @property
    def complete(self) -> bool:
        return self.covered == self.expected

    @property
    def coverage(self) -> str:
        return f"{self.covered}/{self.expected}"

    @property
    def rank_text(self) -> str:
        return NO_VALUE if self.rank is None else str(self.rank)


@dataclass
class Board:
    title: str
    columns: list[Column]
    rows: list[Row]
    average_over: list[str]  # column ids in the average
    records: list[Record]  # every record the board was built from (the history)
    runs: list[dict[str, Any]] = field(default_factory=list)  # run manifests, when read from a store
    store_dir: Path | None = None  # the results store's folder: published paths are named relative to it
    store: ResultsStore | None = None  # the store it was read from: the samples behind its cells
    _manifests: dict[tuple[Any, Any], dict[str, Any]] = field(default_factory=dict, repr=False)

    def column(self, column_id: str) -> Column:
        for c in self.columns:
            if c.id == column_id:
                return c
        raise KeyError(column_id)

    def row(self, model: str) -> Row:
        for r in self.rows:
            if r.model == model:
                return r
        raise KeyError(model)

    def cell(self, model: str, column_id: str) -> Cell:
        return self.row(model).cells[column_id]

    @property
    def frameworks(self) -> list[str]:
        return sorted({c.framework for c in self.columns})

    @property
    def benchmarks(self) -> list[str]:
        return sorted({c.benchmark for c in self.columns})

    def manifest(self, record: Record | None) -> dict[str, Any] | None:
        """The run manifest a record was stored with (None for records given directly)."""
        if record is None:
            return None
        if len(self._manifests) != len(self.runs):  # built once (a scan per cell was quadratic)
            self._manifests.clear()
            for m in self.runs:
                self._manifests.setdefault((m.get("run_id"), m.get("framework")), m)
        return self._manifests.get((record.run_id, record.framework))

    def cells(self) -> Iterable[Cell]:
        for row in self.rows:
            for column in self.columns:
                yield row.cells[column.id]

    def header(self) -> list[str]:
        return [
            "rank",
            "model",
            "average",
            "coverage",
            *(c.id for c in self.columns),
            RANK_RANGE,
            VERSUS_NEXT,
            *(f"{c.id} {CI_SUFFIX}" for c in self.columns),
        ]

    def table(self) -> list[list[str]]:
        """The board as text rows under `header()`: exactly what every output shows. After the columns'
        values: the rank range, the comparison with the next row, and each value's 95% interval and n."""
        return [
            [
                row.rank_text,
                row.model,
                fmt(row.average),
                row.coverage,
                *(row.cells[c.id].text for c in self.columns),
                row.rank_range_text,
                row.versus_next,
                *(row.cells[c.id].ci_text for c in self.columns),
            ]
            for row in self.rows
        ]

    def to_frame(self, long: bool = False) -> pd.DataFrame:
        """Wide: one row per model (rank, average, coverage, then one float column per board column,
        NaN where failed or missing). Long: one row per cell with its status, reason and provenance."""
        import pandas as pd

        if long:
            return pd.DataFrame([self.provenance(cell) for cell in self.cells()])
        data = {
            "rank": pd.array([r.rank for r in self.rows], dtype="Int64"),
            "average": [r.average for r in self.rows],
            "coverage": [r.coverage for r in self.rows],
        }
        for c in self.columns:
            data[c.id] = [r.cells[c.id].value_100 if r.cells[c.id].status == "ok" else None for r in self.rows]
        frame = pd.DataFrame(data, index=pd.Index([r.model for r in self.rows], name="model"))
        return frame.astype({c.id: "float64" for c in self.columns})

    def provenance(self, cell: Cell) -> dict[str, Any]:
        """Where a cell's number came from: one flat dict (the long frame's row, the page's tooltip)."""
        r = cell.record
        m = self.manifest(r) or {}
        return {
            "model": cell.model,
            "column": cell.column.id,
            "framework": cell.column.framework,
            "framework_version": r.framework_version if r else None,
            "benchmark": cell.column.benchmark,
            "subset": cell.column.subset,
            "metric": cell.column.metric,
            "judge": cell.column.judge,
            "higher_is_better": cell.column.higher_is_better,
            "status": cell.status,
            "text": cell.text,
            "invalid": cell.invalid_text,
            "value_100": cell.value_100,
            "value": r.value if r and not cell.parts else None,
            "scale": r.scale if r else None,
            "stderr": r.stderr if r and not cell.parts else None,
            "n_samples": cell.n,
            "ci_low": round(cell.interval.scaled()[0], 4) if cell.interval else None,
            "ci_high": round(cell.interval.scaled()[1], 4) if cell.interval else None,
            "ci_method": cell.interval.method if cell.interval else None,
            "subsets": ", ".join(p.subset for p in cell.parts) or None,
            "reason": cell.reason,
            "run_id": r.run_id if r else None,
            "time": r.time if r else None,
            "started": m.get("started"),
            "finished": m.get("finished"),
            "config_hash": r.config_hash if r else None,
            "git_commit": m.get("git_commit"),
            "seed": m.get("seed"),
            # parity: the same conversation per sample in every framework; native: the framework's own prompt
            "prompt_mode": (r.extra or {}).get("prompt_mode") if r else None,
            "details_path": r.details_path if r else None,
            "attempts": cell.attempts,
            "newer_failure": one_line(cell.newer_failure.error) if cell.newer_failure else None,
            "in_average": cell.column.id in self.average_over,
        }


def _column_of(record: Record, subsets: bool) -> Column:
    return _column(
        record.framework,
        record.benchmark,
        record.metric,
        record.judge,
        record.subset if subsets else "",
        record.higher_is_better,
    )


@functools.lru_cache(maxsize=100_000)  # one Column (and its id, computed once) per distinct column
def _column(framework: str, benchmark: str, metric: str, judge: str | None, subset: str, hib: bool) -> Column:
    return Column(framework, benchmark, metric, judge, subset, hib)


def _latest(records: Iterable[Record]) -> Record | None:
    chosen = latest_per_cell(records)
    return max(chosen.values(), key=lambda r: r.time) if chosen else None


def _fold(model: str, column: Column, parts: list[Record], failures: list[Record], attempts: int) -> Cell:
    """One cell from subset records: the latest per subset; any failed subset fails the cell."""
    chosen = list(latest_per_cell([*parts, *(f for f in failures if f.subset)]).values())
    failed = [r for r in chosen if r.status == "failed"]
    latest = max(chosen, key=lambda r: r.time)
    if failed:
        names = ", ".join(sorted(r.subset for r in failed))
        reason = f"{len(failed)} of {len(chosen)} subsets failed ({names}): {one_line(failed[0].error)}"
        return Cell(model, column, "failed", record=latest, reason=reason, error=failed[0].error, attempts=attempts)
    weights = [r.n_samples or 0 for r in chosen]
    if not all(weights):
        weights = [1] * len(chosen)  # a subset without a sample count: an unweighted mean, like OpenCompass's
    value = sum(w * (r.value_100 or 0.0) for w, r in zip(weights, chosen, strict=True)) / sum(weights)
    return Cell(
        model, column, "ok", value, record=latest, parts=sorted(chosen, key=lambda r: r.subset), attempts=attempts
    )


def _cell(model: str, column: Column, ok: list[Record], failures: list[Record], subsets: bool) -> Cell:
    attempts = len(ok) + len(failures)
    whole = [r for r in ok if subsets or not r.subset]
    best = _latest(whole)
    if best is None and ok:
        best_cell = _fold(model, column, ok, failures, attempts)
    elif best is not None:
        best_cell = Cell(model, column, "ok", best.value_100, record=best, attempts=attempts)
        if not best.subset:
            members = latest_per_cell(r for r in ok if r.subset and r.run_id == best.run_id)
            best_cell.members = sorted(members.values(), key=lambda r: r.subset)
        counts = invalid_counts(best)
        if counts:
            best_cell.n_invalid, best_cell.n_graded = counts
            if all_invalid(best):
                best_cell.status, best_cell.value_100 = "invalid", None
                best_cell.reason = (
                    f"all {counts[1]} grades by {column.judge or 'the judge'} were invalid (no choice matched): "
                    "no score, not ranked"
                )
    elif failures:
        last = max(failures, key=lambda r: r.time)
        return Cell(
            model, column, "failed", record=last, reason=one_line(last.error), error=last.error, attempts=attempts
        )
    else:
        return Cell(model, column, "missing", reason="no result: not run for this model", attempts=0)
    shown = best_cell.record
    newer = [f for f in failures if shown is not None and f.time > shown.time]
    best_cell.newer_failure = max(newer, key=lambda r: r.time) if newer else None
    return best_cell


def invalid_counts(record: Record) -> tuple[int, int | None] | None:
    """(invalid grades, grades given) of a judged record, from what its bridge put in `extra`:
    `n_invalid`/`n_graded` (OpenAI evals' `counts/__invalid__` and all counts), or AlpacaEval's
    `n_unparsed` (judgements it could not parse, left out of the win rate). None: nothing invalid known."""
    extra = record.extra or {}
    invalid = extra.get("n_invalid", extra.get("n_unparsed"))
    if not isinstance(invalid, int) or isinstance(invalid, bool) or invalid <= 0:
        return None
    graded = extra.get("n_graded")
    return invalid, graded if isinstance(graded, int) and not isinstance(graded, bool) and graded > 0 else None


def all_invalid(record: Record) -> bool:
    """Whether every grade behind a judged record was invalid: its number measures nothing."""
    counts = invalid_counts(record)
    return counts is not None and counts[1] is not None and counts[0] >= counts[1]


def judge_label(framework: str, judge: str | None) -> str | None:
    """The judge as a reader should see it: the model that judged, then the template it was asked
    with (AlpacaEval stores a model judge as `<template>@<model>`; other judges are model names)."""
    if judge and framework == "alpaca_eval" and "@" in judge:
        template, model = judge.split("@", 1)
        return f"{model} ({TEMPLATE_LABELS.get(template, template)} template)"
    return judge


def _judge_model(framework: str, judge: str) -> str:
    return judge.split("@", 1)[1] if framework == "alpaca_eval" and "@" in judge else judge


def normalise(records: Iterable[Record]) -> list[Record]:
    """Records as the board shows them: judge labels that name the judging model, and invalid-grade
    counts filled in from the `<method>_count_invalid` record evals' bridge writes beside a model-
    graded score (stores written before the bridge carried the counts in the score's `extra`)."""
    records = list(records)
    counts: dict[tuple[str, ...], Record] = {}
    for r in records:
        if r.status == "ok" and r.metric.endswith("_count_invalid") and r.judge:
            method = r.metric.removesuffix("_count_invalid")
            counts[(r.run_id, r.model, r.framework, r.benchmark, r.subset, r.judge, method)] = r
    out = []
    for r in records:
        update: dict[str, Any] = {}
        extra = dict(r.extra or {})
        if r.judge and "n_invalid" not in extra and r.metric.endswith("_score"):
            method = r.metric.removesuffix("_score")
            sibling = counts.get((r.run_id, r.model, r.framework, r.benchmark, r.subset, r.judge, method))
            if sibling is not None and sibling.value is not None:
                extra.update(n_invalid=round(sibling.value), n_graded=round(sibling.scale))
                update["extra"] = extra
        label = judge_label(r.framework, r.judge)
        if label != r.judge and r.judge:
            update["extra"] = {**extra, "judge_model": _judge_model(r.framework, r.judge), "judge_name": r.judge}
            update["judge"] = label
        out.append(r.model_copy(update=update) if update else r)
    return out


def roles(records: Iterable[Record]) -> dict[str, dict[str, str]]:
    """framework -> {model: "judge" | "reference"}: the models a framework used to judge or compare
    against, learnt from its records (a record's `judge`, AlpacaEval's `extra.reference`)."""
    found: dict[str, dict[str, str]] = {}
    for r in records:
        name = (r.extra or {}).get("judge_model") or r.judge
        if name:
            found.setdefault(r.framework, {}).setdefault(str(name), "judge")
        reference = (r.extra or {}).get("reference")
        if isinstance(reference, str) and reference:
            found.setdefault(r.framework, {})[reference] = "reference"
    return found


def _covered(columns: list[Column], failed: Record) -> list[Column]:
    """The columns a failed record stands for: every column of its framework for benchmark `*` (the
    runner's record of a framework that failed as a whole), else its own metric's column (none: it
    gets a column of its own, so that no failure is hidden behind another metric's success)."""
    broad = [c for c in columns if c.covers(failed)]
    if failed.benchmark == ALL_BENCHMARKS:
        return broad
    return [c for c in broad if (c.metric, c.judge) == (failed.metric, failed.judge)]


def _resolve_average(columns: list[Column], scored: set[str], patterns: Sequence[str] | None, key: str) -> list[str]:
    """Column ids matching the patterns (default: the `scored` ones, with a success for some model).

    A pattern for a framework that has not run yet matches nothing without complaint (a board built
    part way through a run); one naming no framework at all is a typo, and an error."""
    from bridges.frameworks import FRAMEWORKS

    ids = [c.id for c in columns]
    if not patterns:  # every column something succeeded in: one nobody could run would leave no rank at all
        return [c.id for c in columns if c.id in scored]
    known = set(FRAMEWORKS.names()) | {c.framework for c in columns}
    chosen: list[str] = []
    for pattern in patterns:
        hits = [i for i in ids if fnmatch.fnmatchcase(i, pattern)]
        framework = pattern.split("/", 1)[0]
        if not hits and not any(fnmatch.fnmatchcase(k, framework) for k in known):
            raise BenchbridgeError(
                f"{key}: {pattern!r} matches no column (frameworks: {', '.join(sorted(known))}; "
                f"columns: {', '.join(ids) or 'none yet'})"
            )
        chosen += [h for h in hits if h not in chosen]
    return chosen


def _rank(rows: list[Row]) -> list[Row]:
    complete = sorted((r for r in rows if r.complete and r.average is not None), key=lambda r: -(r.average or 0.0))
    previous: tuple[float, int] | None = None
    for position, row in enumerate(complete, start=1):
        avg = round(row.average or 0.0, 9)
        row.rank = previous[1] if previous and previous[0] == avg else position  # ties share the better rank
        previous = (avg, row.rank)
    rest = sorted((r for r in rows if r.rank is None), key=lambda r: (r.average is None, -(r.average or 0.0), r.model))
    return sorted(complete, key=lambda r: (r.rank, r.model)) + rest


def build_board(
    records: Iterable[Record],
    *,
    runs: Iterable[dict[str, Any]] = (),
    models: Sequence[str] = (),
    average_over: Sequence[str] | None = None,
    subsets: bool = False,
    all_metrics: bool = False,
    title: str = "benchbridge leaderboard",
    average_key: str = "average_over",
    samples: Iterable[SampleScores] = (),
) -> Board:
    """Models x columns from records (any order; history included: the latest success per cell wins).

    `models` adds rows for models with no record yet (a model that only judged or was the reference
    gets none); `average_over` takes column ids or fnmatch patterns (`opencompass/*`), default every
    column with a score in which every row's model could have one; `all_metrics` makes a column of
    every metric, not only primary ones.
    """
    records = normalise(records)
    shown = [r for r in records if r.status == "ok" and r.value is not None and (r.primary or all_metrics)]
    failures = [r for r in records if r.status == "failed"]
    by_id: dict[str, Column] = {}
    for record in sorted(shown, key=lambda r: r.time):  # the latest record's direction wins
        column = _column_of(record, subsets)
        by_id[column.id] = column
    for record in failures:  # a failure nothing else covers gets a column of its own, so it is seen
        if not _covered(list(by_id.values()), record):
            column = _column_of(record, subsets)
            by_id.setdefault(column.id, column)
    columns = sorted(by_id.values(), key=lambda c: (c.framework, c.benchmark == ALL_BENCHMARKS, c.benchmark, c.id))
    contestants = {r.model for r in records}
    role_of = roles(records)
    helpers = {m for by_model in role_of.values() for m in by_model}
    names = list(dict.fromkeys([*(m for m in models if m in contestants or m not in helpers), *sorted(contestants)]))
    # Grouped once, looked up per cell: scanning every record for every cell made a board of 500
    # models x 40 columns take 76 s (quadratic in the records).
    ok_by_cell: dict[tuple[str, str], list[Record]] = {}
    for r in shown:
        ok_by_cell.setdefault((r.model, _column_of(r, subsets).id), []).append(r)
    of_framework: dict[str, list[Column]] = {}
    for c in columns:
        of_framework.setdefault(c.framework, []).append(c)
    failed_by_cell: dict[tuple[str, str], list[Record]] = {}
    for f in failures:
        for c in _covered(of_framework.get(f.framework, []), f):
            failed_by_cell.setdefault((f.model, c.id), []).append(f)
    table: dict[str, dict[str, Cell]] = {}
    for model in names:
        cells = {}
        for column in columns:
            ok = ok_by_cell.get((model, column.id), [])
            failed = failed_by_cell.get((model, column.id), [])
            cell = cells[column.id] = _cell(model, column, ok, failed, subsets)
            role = role_of.get(column.framework, {}).get(model)
            if role and cell.status == "missing":
                cell.role = role
                cell.reason = f"{model} was {column.framework}'s {role} here, not a contestant"
        table[model] = cells
    # A column where some row's model was the judge or reference cannot rank that model: the default
    # average leaves it out rather than leave the model unranked (it is still shown).
    unfair = {c for cells in table.values() for c, cell in cells.items() if cell.role}
    scored = {_column_of(r, subsets).id for r in shown if not all_invalid(r)} - unfair
    averaged = _resolve_average(columns, scored, average_over, average_key)
    rows = []
    for model, cells in table.items():
        values = [g for g in (cells[i].goodness for i in averaged if cells[i].status == "ok") if g is not None]
        average = sum(values) / len(values) if values else None
        rows.append(Row(model, cells, average, len(values), len(averaged)))
    board = Board(title, columns, _rank(rows), averaged, records, list(runs))
    add_statistics(board, samples)
    return board


SampleKey = tuple[str, str, str, str, str]  # run_id, model, framework, benchmark, subset


def sample_key(record: Record) -> SampleKey:
    return (record.run_id, record.model, record.framework, record.benchmark, record.subset)


def shown_records(cell: Cell, sampled: Container[SampleKey] | None = None) -> list[Record]:
    """The records whose samples stand behind a cell's value (the folded subsets' records, or its one; a
    group's record without samples in `sampled`, the keys with samples, its members)."""
    if cell.status != "ok" or cell.record is None:
        return []
    if cell.parts:
        return list(cell.parts)
    if cell.members and (sampled is None or sample_key(cell.record) not in sampled):
        return list(cell.members)
    return [cell.record]


def add_statistics(board: Board, samples: Iterable[SampleScores] = ()) -> None:
    """Each ok cell's samples (those of the run that wrote its value), n and 95% interval; each ranked
    row's rank range and its comparison with the next row (see `leaderboards.stats`)."""
    by_key: dict[SampleKey, list[SampleScores]] = {}
    for s in samples:
        by_key.setdefault((s.run_id, s.model, s.framework, s.benchmark, s.subset), []).append(s)
    for cell in board.cells():
        records = shown_records(cell, by_key)
        by_subset = not cell.column.subset and any(r.subset for r in records)  # folded subsets or a group's
        strata: dict[str, str] = {}  # sample id -> its record's subset, beside cell.scores (same keys, same order)
        for record in records:
            for s in by_key.get(sample_key(record), ()):
                value = s.scores.get(cell.column.metric)
                if value is not None:
                    sid = f"{record.subset}/{s.sample_id}" if by_subset else s.sample_id
                    strata[sid] = record.subset
                    cell.scores[sid] = float(value)
                    cell.groups[sid] = s.group or (record.subset or None if by_subset else None)
        rec = cell.record
        # The framework's stderr, unless it is a degenerate 0 that the samples can do better than (lm-eval
        # reports stderr 0 for 0 of 8 right: a [0, 0] interval would claim certainty n=8 cannot give).
        framework_se = rec is not None and rec.stderr is not None and (rec.stderr > 0 or not cell.scores)
        if records and not cell.parts and rec is not None and framework_se and rec.value is not None:
            assert rec.stderr is not None
            cell.interval = stderr_interval(rec.value / rec.scale, rec.stderr / rec.scale, cell.n)
        elif cell.scores:
            cell.interval = sample_interval(list(cell.scores.values()), list(cell.groups.values()))
            if by_subset and rec is not None and rec.value is not None and cell.interval is not None:
                # A group's value is its framework's unweighted mean of subset means: with subsets of unequal
                # size the pooled samples' mean is another number, so the interval is the stratified one.
                stratified = stratified_interval(list(cell.scores.values()), list(strata.values()))
                shown = rec.value / rec.scale
                if stratified is not None and abs(stratified.mean - shown) < abs(cell.interval.mean - shown):
                    cell.interval = stratified
    _rank_ranges(board)


def _goodness_se(cell: Cell) -> float | None:
    return None if cell.interval is None or cell.interval.se is None else cell.interval.se * 100.0


def compare(board: Board, a: Row, b: Row) -> tuple[float, float, int, Paired | None] | None:
    """a's average minus b's (0-100, higher-is-better), its standard error and the samples the paired
    parts rest on; None when no averaged cell has an uncertainty known. A cell without one (e.g. a
    framework's group average with no samples of its own) counts as known exactly, so one such column does
    not hide what the others say. With one averaged column, the column's paired comparison too (for its
    exact McNemar test)."""
    if a.average is None or b.average is None or not board.average_over:
        return None
    total = 0.0
    shared = 0
    known = 0
    only: Paired | None = None
    for column_id in board.average_over:
        x, y = a.cells[column_id], b.cells[column_id]
        pair = paired(x.scores, y.scores, x.groups) if x.scores and y.scores else None
        if pair is not None:
            total += (pair.se * 100.0) ** 2
            shared += pair.n_shared
            only = pair
            known += 1
            continue
        se_x, se_y = _goodness_se(x), _goodness_se(y)
        if se_x is None and se_y is None:
            continue
        known += 1
        total += (se_x or 0.0) ** 2 + (se_y or 0.0) ** 2
    if not known:
        return None
    k = len(board.average_over)
    return a.average - b.average, total**0.5 / k, shared, only if k == 1 else None


def _better(board: Board, a: Row, b: Row) -> bool | None:
    found = compare(board, a, b)
    if found is None:
        return None
    diff, se, _, pair = found
    if pair is not None and pair.p_mcnemar is not None:
        return diff > 0 and pair.p_mcnemar < 0.05
    return diff > Z95 * se


def _rank_ranges(board: Board) -> None:
    ranked = [r for r in board.rows if r.rank is not None]
    by_model = {r.model: r for r in ranked}
    memo: dict[tuple[str, str], bool | None] = {}

    def better(x: str, y: str) -> bool | None:
        if (x, y) not in memo:
            memo[(x, y)] = _better(board, by_model[x], by_model[y])
        return memo[(x, y)]

    for model, found in rank_ranges([r.model for r in ranked], better).items():
        by_model[model].rank_range = found
    for row, below in zip(ranked, ranked[1:], strict=False):
        comparison = compare(board, row, below)
        if comparison is None:
            continue
        diff, se, shared, pair = comparison
        text = f"vs {below.model}: {diff:+.2f} ± {Z95 * se:.2f}"
        text += f", {shared} shared samples" if shared else ", unpaired"
        if pair is not None and pair.p_mcnemar is not None:
            text += f", McNemar p={pair.p_mcnemar:.3g}"
        row.versus_next = text


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """Python's cycle collector off for a while, as it was after. Building a board or publishing one
    makes hundreds of thousands of small acyclic objects while as many live: the collector's passes
    over them were a quarter to a third of the time (a 40,000-record board: 0.69 -> 0.53 s CPU)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def open_board(
    source: str | os.PathLike[str] | ResultsStore | Iterable[Record],
    *,
    config_name: str | None = None,
    **options: Any,
) -> Board:
    """A board from a results database (path or store; only `config_name`'s runs if given) or records."""
    with paused_gc():
        return _open_board(source, config_name=config_name, **options)


def _open_board(
    source: str | os.PathLike[str] | ResultsStore | Iterable[Record], *, config_name: str | None, **options: Any
) -> Board:
    if isinstance(source, str | os.PathLike | ResultsStore):
        store = source if isinstance(source, ResultsStore) else ResultsStore(Path(source))
        store.require()
        board = build_board(store.records(config_name), runs=store.runs(config_name=config_name), **options)
        run_ids = {r.run_id for cell in board.cells() for r in shown_records(cell)}
        add_statistics(board, store.sample_scores(run_ids))  # only the samples of the values shown
        board.store_dir = store.path.resolve().parent
        board.store = store
        return board
    return build_board(source, **options)


def board_for_config(config: LoadedConfig, **options: Any) -> Board:
    """The board of one run config: its runs in its results database, its models as rows, its publish settings."""
    settings = config.cfg.publish
    options.setdefault("title", settings.title or config.name)
    options.setdefault("average_over", settings.average_over)
    options.setdefault("average_key", f"{config.path}: publish.average_over")
    # Rows for models not run yet, but not for the ones the config names as judge, grader or reference
    # (the records say so too once those frameworks ran; a model evaluated anywhere gets its row then).
    helpers = config_helpers(config)
    options.setdefault("models", [m.name for m in config.models if m.name not in helpers])
    return open_board(ResultsStore(config.results_db), config_name=config.name, **options)


def config_helpers(config: LoadedConfig) -> set[str]:
    """Config models named as AlpacaEval's reference or judge, or OpenAI evals' grader."""
    frameworks = config.cfg.frameworks
    alpaca = frameworks.get("alpaca_eval") or {}
    names = [
        (alpaca.get("reference") or {}).get("model"),
        (alpaca.get("judge") or {}).get("model"),
        (frameworks.get("openai_evals") or {}).get("grader"),
    ]
    return {n for n in names if isinstance(n, str)}  # an inline model spec (a mapping) is no config model


def board_from_cli(config_path: str | None, db: str | None, **options: Any) -> tuple[Board, LoadedConfig | None]:
    """The board for `benchbridge board|publish [CONFIG | --db PATH]`; options left None keep their defaults."""
    if (config_path is None) == (db is None):
        raise BenchbridgeError("give a run config or --db PATH (exactly one of them)")
    options = {k: v for k, v in options.items() if v is not None}
    if config_path is not None:
        from bridges import load_config

        config = load_config(config_path)
        return board_for_config(config, **options), config
    options.setdefault("average_key", "--average-over")
    return open_board(Path(str(db)), **options), None


def load(
    source: str | os.PathLike[str] | ResultsStore | Iterable[Record],
    *,
    config_name: str | None = None,
    long: bool = False,
    **options: Any,
) -> pd.DataFrame:
    """The board as a pandas DataFrame (see `Board.to_frame`); options as for `build_board`."""
    return open_board(source, config_name=config_name, **options).to_frame(long=long)


STYLES = {"ok": "", "failed": "bold red", "missing": "dim", "invalid": "yellow"}
# A terminal shows the first this many rows (the best ranked): drawing 5,000 models took rich 10 s and
# is read by no one; the published board and `leaderboards.load()` have every row.
TERMINAL_ROWS = 200


def _header_lines(board: Board, column: Column) -> list[str]:
    marker = "" if column.id in board.average_over else " (not averaged)"
    # Which scorer setup made the values (bridges.scoring: `judge/1+<hash of options, rubric, judge>`), as the
    # page's and the CSV's version column say: a rescore with an edited rubric shows here as a new identity.
    scorers = sorted(
        {
            str(cell.record.extra["scorer"])
            for row in board.rows
            if (cell := row.cells[column.id]).status == "ok" and cell.record and cell.record.extra.get("scorer")
        }
    )
    return [column.framework, column.benchmark_label, f"{column.metric_label}{marker}"] + (
        [f"scorer {', '.join(scorers)}"] if scorers else []
    )


def rich_table(board: Board, width: int = 120) -> Table:
    """The board for the terminal: models as rows, or as columns when that is too wide for `width`.
    Failed and missing cells are coloured; `failure_notes` gives the reasons."""
    from rich.table import Table
    from rich.text import Text

    hidden = len(board.rows) - TERMINAL_ROWS
    if hidden > 0:
        from dataclasses import replace

        board = replace(board, rows=board.rows[:TERMINAL_ROWS])
    texts = board.table()
    wide = sum(
        3 + max([len(h), *(len(t[i]) for t in texts)])  # no rows (a run with `models: []`): the header
        for i, h in enumerate(["rank", "model", "average", "cov"] + [""] * len(board.columns))
    ) + sum(max(len(line) for line in _header_lines(board, c)) for c in board.columns)

    def shown(cell: Cell) -> Text:
        """The value, and under it its 95% interval and n (dim)."""
        text = Text(cell.text, style=STYLES[cell.status])
        if cell.ci_text:
            text.append("\n" + cell.ci_text, style="dim")
        return text

    caption = "rank range: the ranks the 95% intervals allow; under each value its 95% CI and n"
    if hidden > 0:
        caption += f"; the first {TERMINAL_ROWS} models of {TERMINAL_ROWS + hidden} (every one: `benchbridge publish`)"
    table = Table(title=Text(board.title), caption=caption)
    if wide <= width or not board.rows:
        for name in ("rank", "range", "model", "average", "cov"):
            table.add_column(name, justify="left" if name == "model" else "right")
        for c in board.columns:
            table.add_column(Text("\n".join(_header_lines(board, c))), justify="right")
        for row in board.rows:
            cells = [shown(row.cells[c.id]) for c in board.columns]
            table.add_row(row.rank_text, row.rank_range_text, Text(row.model), fmt(row.average), row.coverage, *cells)
        return table
    table.add_column("column")
    for row in board.rows:
        table.add_column(Text(row.model), justify="right")
    table.add_row("rank", *(row.rank_text for row in board.rows))
    table.add_row("rank range (95%)", *(row.rank_range_text for row in board.rows))
    table.add_row(f"average ({len(board.average_over)} columns)", *(fmt(row.average) for row in board.rows))
    table.add_row("coverage", *(row.coverage for row in board.rows), end_section=True)
    for c in board.columns:
        cells = [shown(row.cells[c.id]) for row in board.rows]
        table.add_row(Text(" ".join(_header_lines(board, c))), *cells)
    return table


def failure_notes(board: Board) -> list[str]:
    """One line per failed cell: model, column and reason."""
    return [f"{cell.model} × {cell.column.id}: {cell.reason}" for cell in board.cells() if cell.status == "failed"]

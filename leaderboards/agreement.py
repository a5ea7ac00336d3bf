"""Cross-framework agreement: the same dataset and model scored by several frameworks, side by side.

For every (benchmark, subset, model) that two or more frameworks scored, one row: each framework's
primary metric on a 0-100 scale (`Record.value_100`) and the largest difference between them. A
zero says the frameworks agree; a gap points at prompt formats, answer extraction or scoring.

Only successful primary records count, the latest per board cell (as the board picks them). A
framework that writes several primary metrics for one benchmark (e.g. OpenAI evals' match and
includes methods) gets one column per metric, ``framework:metric``; otherwise the column is the
framework and the row's ``metrics`` column names the metric each framework used.

    table = agreement_table(ResultsStore(db).records())
    print(agreement_markdown(table))
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from bridges.records import Record
from leaderboards.scoring_rules import prompts_of, same_rule_diff
from leaderboards.store import latest_per_cell

if TYPE_CHECKING:
    import pandas as pd

INDEX = ["benchmark", "subset", "model"]
MAX_DIFF = "max_diff"
METRICS = "metrics"
SAMPLES = "n_samples"
# Issue 17: whether the frameworks sent the same input (prompt modes), the largest gap between cells that
# apply the same scoring rule, and each cell's rule in words (leaderboards/scoring_rules.py).
PROMPTS = "prompts"
SAME_RULE_DIFF = "same_rule_diff"
RULES = "rules"
TEXT_COLUMNS = (MAX_DIFF, SAMPLES, METRICS, PROMPTS, SAME_RULE_DIFF, RULES)


def _metric_label(record: Record) -> str:
    return record.metric + (f"@{record.judge}" if record.judge else "")


def _scored(records: Iterable[Record]) -> list[Record]:
    """The latest successful primary record of every cell that has one (a score whose every grade
    was invalid is no measurement, and is left out as the board leaves it out of its average)."""
    from leaderboards.board import all_invalid, normalise

    latest = latest_per_cell(normalise(records)).values()
    return [r for r in latest if r.status == "ok" and r.primary and r.value_100 is not None and not all_invalid(r)]


def agreement_table(records: Iterable[Record], *, min_frameworks: int = 2) -> pd.DataFrame:
    """Rows (benchmark, subset, model) scored by >= `min_frameworks` frameworks; values 0-100.

    Columns: one per framework (``framework:metric`` where a framework has several primary metrics
    for one benchmark), then ``max_diff`` (largest minus smallest value in the row, in points),
    ``n_samples`` (the distinct sample counts, e.g. ``"8"``; two counts mean the frameworks did not
    score the same samples) and ``metrics`` (``framework=metric; ...``). Sorted by benchmark, subset,
    model. Empty (with those columns) when no dataset was scored by enough frameworks.
    """
    import pandas as pd

    frameworks, data = agreement_rows(records, min_frameworks=min_frameworks)
    table = pd.DataFrame(data, columns=[*INDEX, *frameworks, *TEXT_COLUMNS])
    return table.set_index(INDEX)


def agreement_rows(records: Iterable[Record], *, min_frameworks: int = 2) -> tuple[list[str], list[dict[str, object]]]:
    """`agreement_table` without pandas (publish needs no DataFrame, and importing pandas took it
    0.5 s): its value columns, and its rows as dicts (a framework that did not score a row has no
    key), sorted by benchmark, subset, model."""
    by_row: dict[tuple[str, str, str], list[Record]] = defaultdict(list)
    for r in _scored(records):
        by_row[(r.benchmark, r.subset, r.model)].append(r)
    split = {  # frameworks with several primary metrics for one row get a column per metric
        r.framework for rows in by_row.values() for r in rows if sum(1 for o in rows if o.framework == r.framework) > 1
    }

    def column(r: Record) -> str:
        return f"{r.framework}:{_metric_label(r)}" if r.framework in split else r.framework

    data: list[dict[str, object]] = []
    for (benchmark, subset, model), rows in by_row.items():
        if len({r.framework for r in rows}) < min_frameworks:
            continue
        values = {column(r): r.value_100 for r in rows if r.value_100 is not None}  # all: _scored has values
        sizes = sorted({r.n_samples for r in rows if r.n_samples is not None})
        rule_gap, rules = same_rule_diff(rows, column)
        data.append(
            {
                "benchmark": benchmark,
                "subset": subset,
                "model": model,
                **values,
                MAX_DIFF: max(values.values()) - min(values.values()),
                SAMPLES: "/".join(str(n) for n in sizes),
                METRICS: "; ".join(f"{column(r)}={_metric_label(r)}" for r in sorted(rows, key=column)),
                PROMPTS: prompts_of(rows),
                SAME_RULE_DIFF: rule_gap,
                RULES: rules,
            }
        )
    frameworks = sorted({k for row in data for k in row} - {*INDEX, *TEXT_COLUMNS})
    data.sort(key=lambda row: (str(row["benchmark"]), str(row["subset"]), str(row["model"])))  # stable, like pandas
    return frameworks, data


EXTRA_HEADER = ["prompts", "same-rule diff", "scoring rules"]
AGREEMENT_NOTE = (
    "`prompts`: parity when every framework sent the model the same conversation per sample (then a gap "
    "is the scoring rule's), native when each used its own prompt (a gap may be the input); `same-rule diff`: "
    "the largest gap between cells that apply the same scoring rule, named in `scoring rules`."
)


def framework_columns(table: pd.DataFrame) -> list[str]:
    """The value columns of an agreement table (frameworks, or framework:metric)."""
    return [c for c in table.columns if c not in TEXT_COLUMNS]


def _number(value: Any) -> str:  # a pandas cell: a float, NaN, None or a numpy number
    from leaderboards.board import fmt

    return fmt(None if value is None or value != value else float(value))  # NaN: not scored there


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def agreement_markdown(table: pd.DataFrame, *, title: str | None = "Cross-framework agreement") -> str:
    """A GitHub-flavoured Markdown table: benchmark, model, one column per framework, max difference."""
    values = framework_columns(table)
    lines = [f"## {title}", ""] if title else []
    if table.empty:
        return "\n".join([*lines, "No dataset was scored by two or more frameworks with the same model.", ""])
    lines += [
        "Primary metric per framework on a 0-100 scale; `max diff` is the largest gap between frameworks "
        f"(0.00: they agree). {AGREEMENT_NOTE}",
        "",
        "| " + " | ".join(["benchmark", "model", *values, "max diff", "samples", "metrics", *EXTRA_HEADER]) + " |",
        "|" + "---|---|" + "---:|" * (len(values) + 1) + "---|---|---|---:|---|",
    ]
    for (benchmark, subset, model), row in table.iterrows():
        name = f"{benchmark}:{subset}" if subset else benchmark
        cells = [_cell(name), _cell(model), *(_number(row[c]) for c in values), _number(row[MAX_DIFF])]
        cells += [_cell(str(row[SAMPLES])), _cell(str(row[METRICS])), _cell(str(row[PROMPTS]))]
        lines.append("| " + " | ".join([*cells, _number(row[SAME_RULE_DIFF]), _cell(str(row[RULES]))]) + " |")
    return "\n".join([*lines, ""])

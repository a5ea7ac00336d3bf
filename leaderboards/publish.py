"""Publish a board: one folder with the same numbers in every format people use.

    leaderboard.csv           the board as text (the page's table is exactly this)
    leaderboard.md            the board, its columns, failures and cross-framework agreement
    index.html                one self-contained static page: sortable, filterable table, every
                              number opening into its provenance and samples, charts per benchmark
                              and per model (a board over HTML_CELLS cells carries its rows as JSON
                              that the page draws, PAGE_ROWS at a time)
    cells/c<j>.js             column j's provenance and samples, loaded by the page when a cell of
                              that column is opened (a script, not JSON: Chromium refuses fetch() of
                              file:// URLs, and the page must open from disk)
    leaderboard.xlsx          the board, provenance, columns and runs as sheets
    README_OPENCOMPASS.md     OpenCompass's dataset-site format (YAML front matter from the cards)
    provenance.csv            one row per cell: where its number came from
    every_eval_ever/*.json    one Every Eval Ever document per evaluation run, schema-validated,
                              and `*.samples.jsonl` beside it: the run's samples, instance-level

Everything is written into a temporary folder next to `out` and renamed into place, so a failure
leaves the previous board (or nothing) and never half a board; the temporary folders of a publish
that was killed are removed by the next one. Every text written is escaped for its format (CSV and
Markdown cells that a spreadsheet would run as a formula start with `'`, as OWASP recommends),
secret values from the environment are masked in all of it (the store masked what it knew when it
stored; a key set since is masked here), and paths are named relative to the results store's folder
(the home folder as `~`), so a board can be shared as it is.
"""

from __future__ import annotations

import base64
import csv
import functools
import hashlib
import io
import json
import os
import re
import secrets as _random
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import yaml

from bridges import BenchbridgeError
from bridges.records import now_iso
from leaderboards import charts
from leaderboards._secrets import key_env_names, redact, secret_values
from leaderboards.board import (
    CI_SUFFIX,
    RANK_RANGE,
    VERSUS_NEXT,
    Board,
    Cell,
    board_for_config,
    board_from_cli,
    fmt,
    paused_gc,
    sample_key,
    shown_records,
)

if TYPE_CHECKING:
    from bridges import LoadedConfig, PublishSettings
    from bridges.datasets import Dataset

MARKER = ".benchbridge-board"  # marks a folder `publish` made, so it may replace it
EEE_DIR = "every_eval_ever"
CELLS_DIR = "cells"
# Boards up to this many cells carry each cell's provenance as a tooltip; bigger ones (a tooltip per
# cell made a 500 x 40 page several MB) show it when the cell is opened.
TIP_CELLS = 2000
# Boards up to this many cells write their table as HTML rows, readable without JavaScript; bigger
# ones carry it as JSON drawn by the page's script (see `index_html`).
HTML_CELLS = 2000
# Of such a board the page lays out the first this many rows (in the order shown, filtered) and the
# rest when asked: Chromium laid out 500 models x 86 cells in 0.6-0.9 s, 50 of them in a tenth of it.
PAGE_ROWS = 50
# Boards up to this many cells repeat provenance.csv as an xlsx sheet; writing 20,000 rows x 28 columns
# into xlsx took 4-8 s (openpyxl), so bigger boards' sheet points at provenance.csv instead.
XLSX_PROVENANCE_CELLS = 5000
# A temporary folder of a publish whose process is gone is stale at once; one without a process id
# (written before they carried one) or whose id may have been reused, after these many seconds.
STALE_SECONDS = 10 * 60
STALE_WITH_LIVE_PID_SECONDS = 60 * 60
# What a publish folder holds: a stale-looking folder holding anything else is not ours, and stays.
PUBLISHED_NAMES = frozenset(
    {"leaderboard.csv", "provenance.csv", "leaderboard.md", "index.html", "README_OPENCOMPASS.md", "leaderboard.xlsx"}
    | {EEE_DIR, CELLS_DIR, MARKER}
)
TEMPLATES = Path(__file__).parent / "templates"
# OpenCompass's dataset site files a benchmark under one of these dimensions.
OPENCOMPASS_DIMENSIONS = (
    "examination",
    "language",
    "knowledge",
    "understanding",
    "reasoning",
    "long-context",
    "safety",
    "code",
)
DIMENSION_BY_KIND = {"mcq": "examination", "qa": "knowledge", "open": "language"}
OPENCOMPASS_LANGUAGE = {"zh": "cn"}  # the site writes Chinese as "cn"
PROVENANCE_COLUMNS = {
    "model": "model",
    "column": "column",
    "text": "shown",
    "status": "status",
    "invalid": "invalid grades",
    "reason": "reason",
    "value": "value as written",
    "scale": "scale",
    "stderr": "stderr",
    "n_samples": "samples",
    "ci_low": "95% CI low",
    "ci_high": "95% CI high",
    "ci_method": "interval from",
    "subsets": "subsets",
    "framework": "framework",
    "framework_version": "version",
    "judge": "judge",
    "run_id": "run id",
    "time": "recorded",
    "started": "run started",
    "finished": "run finished",
    "config_hash": "config hash",
    "git_commit": "git commit",
    "seed": "seed",
    "prompt_mode": "prompt mode",
    "details_path": "details",
    "attempts": "attempts",
    "newer_failure": "later failed attempt",
    "in_average": "in average",
}


@dataclass
class DatasetInfo:
    name: str
    kind: str = ""
    language: str = ""
    description: str = ""
    license: str = ""
    source: str = ""
    tags: list[str] = field(default_factory=list)
    content_hash: str = ""
    samples: int | None = None
    example: dict[str, Any] | None = None


@dataclass
class Published:
    out: Path
    files: list[Path]
    board: Board

    @property
    def index_html(self) -> Path:
        return self.out / "index.html"


def _benchbridge_version() -> str:
    try:
        return version("benchbridge")
    except PackageNotFoundError:
        return "unknown"


def _text(value: object) -> str:
    return "" if value is None else str(value)


def dataset_infos(board: Board, datasets: Sequence[Dataset] = ()) -> list[DatasetInfo]:
    """Dataset cards and content hashes from the run manifests, completed by loaded datasets."""
    infos: dict[str, DatasetInfo] = {}
    for manifest in board.runs:
        hashes = manifest.get("datasets") or {}
        for name, card in (manifest.get("dataset_cards") or {}).items():
            fields = {k: card[k] for k in ("kind", "language", "description", "license", "source", "tags") if k in card}
            infos[name] = DatasetInfo(name=name, content_hash=hashes.get(name, ""), **fields)
    for ds in datasets:
        example = ds.samples[0].model_dump(mode="json") if ds.samples else None
        card = ds.card.model_dump(exclude={"name"})
        infos[ds.name] = DatasetInfo(
            name=ds.name, content_hash=ds.content_hash, samples=len(ds.samples), example=example, **card
        )
    return sorted(infos.values(), key=lambda d: d.name)


# ---- CSV -------------------------------------------------------------------------------------

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def neutralise(text: str) -> str:
    """A cell a spreadsheet shows as text, never runs: one starting with = + - @ tab or CR gets a
    leading `'` (OWASP's CSV injection advice). A number such as -1.50 stays a number."""
    if text.startswith(FORMULA_STARTS) and not _NUMBER.fullmatch(text):
        return "'" + text
    return text


def _csv(rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    # RFC 4180's CRLF: Python's writer quotes only cells holding a character of the line terminator,
    # so with "\n" alone a CR inside a name went out unquoted and split the row for every reader.
    csv.writer(buffer, lineterminator="\r\n").writerows([[neutralise(cell) for cell in row] for row in rows])
    return buffer.getvalue()


def _table(board: Board) -> list[list[str]]:
    """`board.table()`, made once per board (the CSV, the Markdown and the workbook write it)."""
    if "_table" not in board.__dict__:
        board.__dict__["_table"] = board.table()
    return board.__dict__["_table"]


def leaderboard_csv(board: Board) -> str:
    return _csv([board.header(), *_table(board)])


def _provenance_rows(board: Board) -> list[dict[str, Any]]:
    return [board.provenance(cell) for cell in board.cells()]


def _provenance_texts(board: Board) -> dict[tuple[str, str], list[str]]:
    """Each cell's provenance as the provenance table writes it, by (model, column id), in the board's
    order; made once per board (provenance.csv and the cell files both carry it)."""
    if "_provenance_texts" not in board.__dict__:
        board.__dict__["_provenance_texts"] = {
            (cell.model, cell.column.id): ["" if p[k] is None else str(p[k]) for k in PROVENANCE_COLUMNS]
            for cell, p in zip(board.cells(), _provenance_rows(board), strict=True)
        }
    return board.__dict__["_provenance_texts"]


def provenance_csv(board: Board) -> str:
    return _csv([list(PROVENANCE_COLUMNS.values()), *_provenance_texts(board).values()])


# ---- Markdown --------------------------------------------------------------------------------


_MD_SPECIAL = re.compile(r"[&<>\r\n\\`*\[\]|~_]")


def md(value: object) -> str:
    """Text that Markdown (and the HTML it may contain) shows literally, on one table line."""
    text = _text(value)
    if not _MD_SPECIAL.search(text):
        return text  # nothing to escape: most cells of a big board (numbers, names), one search each
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = re.sub(r"[\r\n]+", " ", text)
    text = re.sub(r"([\\`*\[\]|~])", r"\\\1", text)
    return re.sub(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])", r"\\_", text)


def md_table(header: Sequence[str], rows: Sequence[Sequence[object]], right: Sequence[int] = ()) -> str:
    """A GitHub table; the columns at the `right` positions are right-aligned (numbers)."""
    align = ["---:" if i in right else "---" for i in range(len(header))]
    lines = ["| " + " | ".join(md(neutralise(_text(h))) for h in header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(md(neutralise(_text(v))) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _board_md(board: Board) -> str:
    """The board as a Markdown table, made once per board (leaderboard.md and the OpenCompass README)."""
    if "_board_md" not in board.__dict__:
        header = board.header()
        board.__dict__["_board_md"] = md_table(header, _table(board), right=[0, *range(2, len(header))])
    return board.__dict__["_board_md"]


def _columns_md(board: Board) -> str:
    rows = [
        [
            c.id,
            c.framework,
            ", ".join(_versions(board, c.id)),
            c.benchmark_label,
            c.metric,
            c.judge or "",
            "higher is better" if c.higher_is_better else "lower is better",
            "yes" if c.id in board.average_over else "no",
        ]
        for c in board.columns
    ]
    header = ["column", "framework", "version", "benchmark", "metric", "judge", "direction", "in average"]
    return md_table(header, rows)


def _failures(board: Board) -> list[Cell]:
    return [cell for cell in board.cells() if cell.status == "failed"]


def _agreement(board: Board) -> tuple[list[str], list[list[str]]] | None:
    """The cross-framework agreement table as text (None when no dataset was scored twice); computed
    once per board (the Markdown and the page both show it)."""
    if "_agreement" not in board.__dict__:
        board.__dict__["_agreement"] = _agreement_table(board)
    return board.__dict__["_agreement"]


def _agreement_table(board: Board) -> tuple[list[str], list[list[str]]] | None:
    from leaderboards.agreement import (
        EXTRA_HEADER,
        MAX_DIFF,
        METRICS,
        PROMPTS,
        RULES,
        SAME_RULE_DIFF,
        SAMPLES,
        agreement_rows,
    )

    values, data = agreement_rows(board.records)
    if not data:
        return None
    header = ["benchmark", "model", *values, "max diff", "samples", "metrics", *EXTRA_HEADER]
    rows = []
    for row in data:
        benchmark, subset = str(row["benchmark"]), str(row["subset"])
        numbers = [fmt(cast("float | None", row.get(c))) for c in [*values, MAX_DIFF]]  # none: not scored there
        name = f"{benchmark}:{subset}" if subset else benchmark
        rule_gap = fmt(cast("float | None", row[SAME_RULE_DIFF]))
        rows.append(
            [name, str(row["model"]), *numbers, str(row[SAMPLES]), str(row[METRICS]), str(row[PROMPTS]), rule_gap]
            + [str(row[RULES])]
        )
    return header, rows


def leaderboard_md(board: Board, generated: str) -> str:
    from leaderboards.scoring_rules import prompt_modes_line

    parts = [
        f"# {md(board.title)}",
        "",
        f"Generated {md(generated)} by benchbridge {md(_benchbridge_version())}. Each column is one framework's "
        "primary metric for one benchmark on a 0-100 scale; a cell shows the latest successful run, `failed` "
        "that every attempt failed (reasons below), `missing` that it never ran, `invalid (n/n)` that every "
        "grade the judge gave was invalid (no score; `87.50 (1 invalid)`: one of the grades was), `judge` or "
        "`reference` that the model had that role there instead of being evaluated. The average is over "
        f"{len(board.average_over)} of {len(board.columns)} columns (a lower-is-better column enters as "
        "100 - value); only models with a result in every averaged column get a rank. Provenance of every "
        "number: `provenance.csv` and `index.html`.",
        "",
        _board_md(board),
        "",
        *([md(modes), ""] if (modes := prompt_modes_line(board.records)) else []),  # issue 17
        "## Columns",
        "",
        _columns_md(board),
        "",
    ]
    failures = _failures(board)
    if failures:
        parts += ["## Failed cells", ""]
        parts += [f"- **{md(c.model)}** × {md(c.column.id)}: {md(c.reason)}" for c in failures]
        parts.append("")
    agreement = _agreement(board)
    if agreement:
        from leaderboards.agreement import AGREEMENT_NOTE

        width = len(agreement[0])  # values and max diff right-aligned, then samples, metrics, prompts, rule gap, rules
        table = md_table(*agreement, right=[*range(2, width - 5), width - 2])
        parts += ["## Cross-framework agreement", "", AGREEMENT_NOTE, "", table, ""]  # our Markdown, not escaped
    return "\n".join(parts)


# ---- OpenCompass dataset site ----------------------------------------------------------------


def _fence(text: str) -> str:
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def opencompass_readme(board: Board, infos: list[DatasetInfo], settings: PublishSettings | None, day: str) -> str:
    """README_OPENCOMPASS.md: the front matter OpenCompass's dataset site reads, then introduction,
    meta data, leaderboard, examples and citation."""
    tags = sorted({t for d in infos for t in d.tags} | {d.kind for d in infos if d.kind})
    dimensions = sorted(
        {t for t in tags if t in OPENCOMPASS_DIMENSIONS}
        or {DIMENSION_BY_KIND[d.kind] for d in infos if d.kind in DIMENSION_BY_KIND}
    )
    frameworks = ", ".join(board.frameworks) or "no framework yet"
    desc = (settings.description if settings else None) or (
        f"{len(infos)} datasets ({', '.join(d.name for d in infos) or 'none'}) scored by {frameworks} "
        "through benchbridge, merged into one leaderboard."
    )
    front = {
        "name": board.title,
        "desc": desc,
        "language": sorted({OPENCOMPASS_LANGUAGE.get(d.language, d.language) for d in infos if d.language}),
        "dimension": dimensions,
        "sub_dimension": [t for t in tags if t not in OPENCOMPASS_DIMENSIONS and t not in DIMENSION_BY_KIND],
        "website": (settings.website if settings else None) or "",
        "github": (settings.github if settings else None) or "",
        "paper": (settings.paper if settings else None) or "",
        "release_date": day,
        "tag": tags,
        "download_url": (settings.download_url if settings else None) or "",
    }
    parts = [
        "---",
        yaml.safe_dump(front, allow_unicode=True, sort_keys=False, width=1000).rstrip(),
        "---",
        "## Introduction",
        "",
        md(desc),
        "",
        f"Models: {md(', '.join(r.model for r in board.rows))}. Frameworks: {md(frameworks)}. Each leaderboard "
        "column is one framework's primary metric for one dataset, 0-100; `leaderboard.xlsx` and `index.html` "
        "carry the provenance of every number.",
        "",
        "## Meta Data",
        "",
        md_table(
            ["dataset", "kind", "language", "samples", "license", "source", "content sha256"],
            [[d.name, d.kind, d.language, _text(d.samples), d.license, d.source, d.content_hash] for d in infos],
        ),
        "",
        "## Leaderboard",
        "",
        _board_md(board),
        "",
    ]
    examples = [d for d in infos if d.example]
    if examples:
        parts += ["## Example", ""]
        for d in examples:
            body = json.dumps(d.example, ensure_ascii=False, indent=2)
            parts += [f"### {md(d.name)}", "", _fence(body) + "json", body, _fence(body), ""]
    cite = (settings.paper or settings.github or settings.website) if settings else None
    parts += ["## Citation", "", f"Please cite {md(cite)}." if cite else "No paper; please cite this page.", ""]
    return "\n".join(parts)


# ---- HTML ------------------------------------------------------------------------------------


def _versions(board: Board, column_id: str) -> list[str]:
    return sorted(
        {
            cell.record.framework_version
            for row in board.rows
            if (cell := row.cells[column_id]).record is not None and cell.status == "ok"
        }
    )


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode() + "'"


def _tip(provenance: dict[str, Any]) -> str:
    p = provenance
    parts = [f"{p['framework']} {p['framework_version'] or ''}".strip()]
    if p["judge"]:
        parts.append(f"judge {p['judge']}")
    if p["run_id"]:
        parts.append(f"run {p['run_id']}")
    if p["started"] or p["time"]:
        parts.append(str(p["started"] or p["time"]))
    if p["n_samples"]:
        parts.append(f"n={p['n_samples']}")
    if p.get("prompt_mode"):
        parts.append(f"prompts: {p['prompt_mode']}")
    if p["reason"]:
        parts.append(str(p["reason"]))
    if p["newer_failure"]:
        parts.append(f"a later attempt failed: {p['newer_failure']}")
    return " · ".join(parts)


def board_rows(board: Board) -> dict[str, Any]:
    """The page's table body as compact data: per row [model, rank, rank sort key, average, its sort
    key, coverage, rank range, its sort key, vs next, cells, intervals], a cell [status, text, sort
    key] (and its provenance tooltip on boards up to TIP_CELLS cells); per column its framework and
    whether it is averaged. The template writes it as HTML rows, or the page's script draws it."""
    tips = len(board.rows) * len(board.columns) <= TIP_CELLS
    averaged = set(board.average_over)
    rows = []
    for row in board.rows:
        cells = []
        for column in board.columns:
            cell = row.cells[column.id]
            sort = "" if cell.value_100 is None or cell.status != "ok" else f"{cell.value_100:.6g}"
            entry = [cell.status, cell.text, sort]
            if tips:
                entry.append(_tip(board.provenance(cell)))
            cells.append(entry)
        rows.append(
            [
                row.model,
                row.rank_text,
                "" if row.rank is None else str(row.rank),
                fmt(row.average),
                "" if row.average is None else repr(row.average),
                row.coverage,
                row.rank_range_text,
                "" if row.rank_range is None else str(row.rank_range.best),
                row.versus_next,
                cells,
                [row.cells[c.id].ci_text for c in board.columns],
            ]
        )
    return {"rows": rows, "fw": [c.framework for c in board.columns], "avg": [c.id in averaged for c in board.columns]}


def script_json(data: object) -> str:
    """JSON to put inside a `<script type="application/json">` block: `<`, `>` and `&` as \\u escapes,
    so that no text in it (a model named `</script>...`) can end the block or open a comment."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def index_html(
    board: Board,
    infos: list[DatasetInfo],
    generated: str,
    description: str | None = None,
    published: Sequence[Sequence[str]] = (),
) -> str:
    from jinja2 import Environment, FileSystemLoader, StrictUndefined
    from markupsafe import Markup

    from leaderboards.scoring_rules import prompt_modes_line

    css = (TEMPLATES / "page.css").read_text(encoding="utf-8")
    js = (TEMPLATES / "page.js").read_text(encoding="utf-8")
    # 'strict-dynamic': the page's own script (by its hash) may add the `cells/c<j>.js` scripts it
    # loads on demand; nothing else runs (no inline handler, no script in the page's text).
    csp = (
        f"default-src 'none'; style-src {_csp_hash(css)}; script-src {_csp_hash(js)} 'strict-dynamic'; "
        "img-src data:; base-uri 'none'; form-action 'none'; object-src 'none'"
    )
    colours = charts.framework_colours(board)
    data = board_rows(board)
    # A board up to HTML_CELLS cells is written as HTML rows (readable without JavaScript); a bigger
    # one's rows are a JSON block that the page's script draws: Chromium took 0.65 s to parse a
    # 500 x 40 board's 43,000 cells as HTML, far less to draw them from JSON.
    as_html = len(board.rows) * len(board.columns) <= HTML_CELLS
    agreement = _agreement(board)
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True, undefined=StrictUndefined)
    return env.get_template("index.html.j2").render(
        title=board.title,
        description=description,
        version=_benchbridge_version(),
        generated=generated,
        csp=csp,
        css=Markup(css),
        js=Markup(js),
        frameworks=[
            {"name": fw, "colour": colours[fw], "versions": ", ".join(_fw_versions(board, fw))}
            for fw in board.frameworks
        ],
        averaged_count=len(board.average_over),
        columns=[
            {
                "id": c.id,
                "ci_key": f"{c.id} {CI_SUFFIX}",
                "bench": f"{c.benchmark}:{c.subset}" if c.subset else c.benchmark,
                "framework": c.framework,
                "versions": ", ".join(_versions(board, c.id)),
                "benchmark_label": c.benchmark_label,
                "metric": c.metric,
                "judge": c.judge,
                "arrow": c.arrow,
                "first": "descending" if c.higher_is_better else "ascending",
                "averaged": c.id in board.average_over,
            }
            for c in board.columns
        ],
        rows=data["rows"] if as_html else [],
        row_count=len(board.rows),
        fws=data["fw"],
        averaged_columns=data["avg"],
        board_json=None if as_html else Markup(script_json({**data, "page": PAGE_ROWS})),
        failures=[{"model": c.model, "column": c.column.id, "reason": c.reason} for c in _failures(board)],
        legend=Markup(charts.legend(board)),
        benchmark_charts=[Markup(charts.benchmark_chart(board, b)) for b in board.benchmarks],
        profile_charts=[Markup(charts.profile_chart(board, r.model)) for r in board.rows[: charts.CHART_ROWS]],
        chart_rows=charts.CHART_ROWS,
        agreement={"header": agreement[0], "rows": agreement[1]} if agreement else None,
        prompt_modes=prompt_modes_line(board.records),
        rank_range_key=RANK_RANGE,
        versus_key=VERSUS_NEXT,
        runs=[{k: _text(m.get(k)) for k in _RUN_FIELDS} for m in board.runs],
        datasets=[{**d.__dict__, "samples": _text(d.samples)} for d in infos],
        # publish.reference_leaderboards (leaderboards/references.py): header row, then the rows
        published={"header": published[0], "rows": published[1:]} if published else None,
    )


_RUN_FIELDS = (
    "run_id",
    "framework",
    "framework_version",
    "status",
    "started",
    "finished",
    "n_records",
    "config_name",
    "config_hash",
    "git_commit",
    "seed",
    "prompt_mode",
    "error",
)


def _fw_versions(board: Board, framework: str) -> list[str]:
    return sorted({r.framework_version for r in board.records if r.framework == framework})


# ---- per-column detail files ------------------------------------------------------------------


def _samples_of_shown(
    board: Board, by_run: dict[tuple[str, str, str], list[dict[str, Any]]] | None = None
) -> dict[tuple[str, str, str, str, str], list[dict[str, Any]]]:
    """The stored samples behind the board's values (of the runs shown), by (run, model, framework,
    benchmark, subset); none for a board built from records. `by_run`: the store's samples by (run,
    framework, model) when the caller read them already (`every_eval_ever.samples_by_run`)."""
    found: dict[tuple[str, str, str, str, str], list[dict[str, Any]]] = {}
    if board.store is None:
        return found
    run_ids = {r.run_id for cell in board.cells() for r in shown_records(cell)}
    if by_run is None:
        chosen: Iterable[dict[str, Any]] = board.store.sample_dicts(run_ids)
    else:
        chosen = (s for (run_id, _, _), samples in by_run.items() if run_id in run_ids for s in samples)
    for s in chosen:
        key = (s["run_id"], s["model"], s["framework"], s["benchmark"], s.get("subset", ""))
        found.setdefault(key, []).append(s)
    return found


def _judge_text(judge: dict[str, Any] | None) -> str:
    if not judge:
        return ""
    verdict = f"{judge.get('model', '')}: {judge.get('verdict') or ''}".strip()
    return f"{verdict} — {judge['reasoning']}" if judge.get("reasoning") else verdict


def cell_files(board: Board, by_run: dict[tuple[str, str, str], list[dict[str, Any]]] | None = None) -> dict[str, str]:
    """`cells/c<j>.js` per board column j: `bbCell({...})` with each row's provenance (as the
    provenance table has it), interval and samples (input texts shared across models, by index).
    `by_run`: the store's samples, when read already (see `_samples_of_shown`)."""
    from leaderboards.evidence import status

    samples = _samples_of_shown(board, by_run)
    provenance = _provenance_texts(board)
    names = list(PROVENANCE_COLUMNS.values())
    files = {}
    for j, column in enumerate(board.columns):
        inputs: dict[str, int] = {}
        rows: dict[str, Any] = {}
        for row in board.rows:
            cell = row.cells[column.id]
            p = provenance[(row.model, column.id)]
            found = []
            records = shown_records(cell, samples)
            by_subset = not column.subset and any(r.subset for r in records)  # folded subsets or a group's
            for record in records:
                for s in samples.get(sample_key(record), ()):
                    raw = s.get("prompt")
                    if raw is None:
                        raw = "\n".join(f"{m.get('role', '')}: {m.get('content', '')}" for m in s.get("messages") or [])
                    score = (s.get("scores") or {}).get(column.metric)
                    found.append(
                        [
                            f"{record.subset}/{s['sample_id']}" if by_subset else s["sample_id"],
                            status(s, column.metric),
                            score,
                            inputs.setdefault(raw, len(inputs)),
                            s.get("output") or "",
                            s.get("extracted") or "",
                            " | ".join(str(r) for r in s.get("references") or []),
                            _judge_text(s.get("judge")),
                            s.get("group") or (record.subset if by_subset else "") or "",
                        ]
                    )
            rows[row.model] = {
                "p": p,
                "ci": cell.ci_text,
                "v": cell.value_100 if cell.status == "ok" else None,
                "s": found,
            }
        data = {
            "j": j,
            "id": column.id,
            "framework": column.framework,
            "bench": f"{column.benchmark}:{column.subset}" if column.subset else column.benchmark,
            "metric": column.metric,
            "names": names,
            "inputs": list(inputs),
            "rows": rows,
        }
        files[f"{CELLS_DIR}/c{j}.js"] = "bbCell(" + json.dumps(data, ensure_ascii=False, separators=(",", ":")) + ");\n"
    return files


# ---- xlsx ------------------------------------------------------------------------------------


def leaderboard_xlsx(board: Board, path: Path, clean: Any) -> None:
    """Sheets: leaderboard (numbers as numbers, statuses as text, provenance as cell comments),
    provenance, columns, runs. `clean` masks secrets in every string. Written row by row (openpyxl's
    write-only workbook: a 500 x 86 sheet of cell objects, then saved, took twice the time)."""
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
    from openpyxl.comments import Comment
    from openpyxl.styles import Font

    bold = Font(bold=True)
    wb = Workbook(write_only=True)

    def put(ws: Any, value: object) -> Any:
        if isinstance(value, bool) or value is None:
            return WriteOnlyCell(ws, _text(value) if value is not None else None)
        if isinstance(value, int | float):
            return WriteOnlyCell(ws, value)
        cell = WriteOnlyCell(ws, ILLEGAL_CHARACTERS_RE.sub("", clean(str(value))))
        cell.data_type = "s"  # never a formula, even for text starting with "="
        return cell

    def header_row(ws: Any, header: Sequence[str]) -> None:
        ws.freeze_panes = "C2"  # before the first row: a write-only sheet writes its view first
        cells = [put(ws, h) for h in header]
        for cell in cells:
            cell.font = bold
        ws.append(cells)

    def sheet(title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
        ws = wb.create_sheet(title)
        header_row(ws, header)
        for values in rows:
            ws.append([put(ws, v) for v in values])

    ws = wb.create_sheet("leaderboard")
    texts = _table(board)
    tips = len(board.rows) * len(board.columns) <= TIP_CELLS  # 20,000 comments took seconds to write
    header_row(ws, board.header())
    for row, text in zip(board.rows, texts, strict=True):
        values: list[object] = [row.rank if row.rank is not None else text[0], row.model]
        values.append(float(text[2]) if row.average is not None else text[2])
        values.append(row.coverage)
        cells = [put(ws, v) for v in values]
        for column in board.columns:
            cell = row.cells[column.id]
            target = put(ws, float(fmt(cell.value_100)) if cell.status == "ok" else cell.text)
            if cell.status == "ok" and cell.n_invalid:  # still a number, shown like the CSV's text
                target.number_format = f'0.00" ({cell.n_invalid} invalid)"'
            if tips:
                target.comment = Comment(clean(_tip(board.provenance(cell))), "benchbridge")
            cells.append(target)
        # rank range, comparison with the next row, each value's interval
        cells += [put(ws, value) for value in text[4 + len(board.columns) :]]
        ws.append(cells)
    if len(board.rows) * len(board.columns) <= XLSX_PROVENANCE_CELLS:
        prov = _provenance_rows(board)
        sheet("provenance", list(PROVENANCE_COLUMNS.values()), [[p[k] for k in PROVENANCE_COLUMNS] for p in prov])
    else:
        sheet("provenance", ["provenance"], [["one row per cell: provenance.csv, beside this file"]])
    sheet(
        "columns",
        ["column", "framework", "version", "benchmark", "subset", "metric", "judge", "higher_is_better", "in_average"],
        [
            [
                c.id,
                c.framework,
                ", ".join(_versions(board, c.id)),
                c.benchmark,
                c.subset,
                c.metric,
                c.judge,
                c.higher_is_better,
                c.id in board.average_over,
            ]
            for c in board.columns
        ],
    )
    sheet("runs", list(_RUN_FIELDS), [[_text(m.get(k)) for k in _RUN_FIELDS] for m in board.runs])
    wb.save(path)


# ---- the folder ------------------------------------------------------------------------------


def _check_target(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise BenchbridgeError(f"{out}: exists and is not a folder; choose another --out")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise BenchbridgeError(
            f"{out}: a folder that benchbridge did not publish (no {MARKER}); choose an empty or new --out"
        )


def publish(
    board: Board,
    out: str | os.PathLike[str],
    *,
    datasets: Sequence[Dataset] = (),
    settings: PublishSettings | None = None,
) -> Published:
    """Writes every format of `board` into `out` (replacing a board published there before)."""
    with paused_gc():
        return _publish(board, Path(out).resolve(), datasets, settings)


def _publish(board: Board, out: Path, datasets: Sequence[Dataset], settings: PublishSettings | None) -> Published:
    _check_target(out)
    generated = now_iso()
    infos = dataset_infos(board, datasets)
    clean = cleaner(
        secret_values(key_env_names(m for run in board.runs for m in run.get("models") or [])),
        _path_names(board.store_dir),
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=out.parent))
    written: list[str] = []
    folders = {tmp}

    def write(name: str, text: str) -> None:
        # Each file is written as soon as it is made: a store's 400,000 samples are hundreds of MB of
        # JSONL, which held all at once (and a masked copy of each) made publish slow and large.
        path = tmp / name
        if path.parent not in folders:
            path.parent.mkdir(parents=True, exist_ok=True)
            folders.add(path.parent)
        path.write_bytes(clean(text).encode("utf-8"))  # as written: CSV keeps its CRLF
        written.append(name)

    from leaderboards.references import reference_csv_rows, reference_md, reference_rows

    published = reference_rows(settings.reference_leaderboards) if settings else []
    try:
        write("leaderboard.csv", leaderboard_csv(board))
        write("provenance.csv", provenance_csv(board))
        write("leaderboard.md", "\n".join([leaderboard_md(board, generated), *reference_md(published)]))
        published_table = reference_csv_rows(published) if published else []
        if published_table:  # apart from leaderboard.csv: never ranked with our rows
            write("published_references.csv", _csv(published_table))
        description = settings.description if settings else None
        write("index.html", index_html(board, infos, generated, description, published_table))
        write("README_OPENCOMPASS.md", opencompass_readme(board, infos, settings, generated[:10]))
        from leaderboards.every_eval_ever import JSON, documents, instance_files, samples_by_run

        samples = samples_by_run(board)  # read once: the page's cell files and the instance-level export
        for name, text in cell_files(board, samples).items():
            write(name, text)
        organization = settings.organization if settings else "benchbridge"
        docs = documents(board, organization)
        for name, document in docs:
            # no indent: json's C encoder (an indented dump is pure Python, 6 s for 4,000 documents)
            write(f"{EEE_DIR}/{name}", JSON.encode(document) + "\n")
        for name, text in instance_files(board, docs, samples):
            write(f"{EEE_DIR}/{name}", text)
        del samples
        # the workbook's cells repeat their names, versions, run ids and dates: each is masked once
        leaderboard_xlsx(board, tmp / "leaderboard.xlsx", functools.lru_cache(maxsize=100_000)(clean))
        marker = {"generated": generated, "title": board.title, "files": sorted([*written, "leaderboard.xlsx"])}
        (tmp / MARKER).write_text(clean(json.dumps(marker, ensure_ascii=False, indent=2)), encoding="utf-8")
        # mkdtemp made it private; a board is for reading
        for folder in folders:
            folder.chmod(0o755)
        for name in [*written, "leaderboard.xlsx", MARKER]:
            (tmp / name).chmod(0o644)
        _swap(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    files = sorted(p for p in out.rglob("*") if p.is_file() and p.name != MARKER)
    return Published(out, files, board)


def cleaner(masked: Sequence[str], paths: Sequence[tuple[str, str]]) -> Callable[[str], str]:
    """The function every published text goes through: `redact` with the `masked` values, then the
    absolute `paths` made portable. `redact`'s two regular expressions cost 30 ms per MB (a 4,000
    record store's samples are 330 MB of JSONL), so they run only on a text that holds something they
    could match: `sk-`, `bearer` in any case, or one of the values (substring tests, in C)."""

    def clean(text: str) -> str:
        if "sk-" in text or any(value in text for value in masked) or "bearer" in text.lower():
            text = redact(text, masked)
        for absolute, portable in paths:
            if absolute in text:
                text = text.replace(absolute, portable)
        return text

    return clean


def _path_names(store_dir: Path | None) -> list[tuple[str, str]]:
    """(absolute, portable) prefixes, most specific first: the results store's folder becomes
    relative (a run folder reads `<run id>/...`), the home folder `~` (e.g. `~/.cache/...`)."""
    pairs: list[tuple[str, str]] = []
    folders = [(store_dir, "")] if store_dir is not None else []
    home = Path.home()
    if home != Path(home.anchor):  # a home of `/` would turn every path into `~`
        folders.append((home, "~/"))
    for folder, name in folders:
        for form in dict.fromkeys([str(folder), str(folder.resolve())]):
            pairs.append((form.rstrip(os.sep) + os.sep, name))
    return sorted(pairs, key=lambda pair: -len(pair[0]))


def _stale_pattern(name: str) -> re.Pattern[str]:
    # mkdtemp's 8 random characters; `tmp-<pid>-` and `old-<pid>-` name the publish that made it
    return re.compile(rf"\.{re.escape(name)}\.(?:(?:tmp|old)-(?P<pid>\d+)-)?(?:old-)?[a-z0-9_]{{8}}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    return True


def remove_stale_temporaries(out: Path) -> list[Path]:
    """Removes the temporary folders a killed `publish` of `out` left beside it: those whose process
    is gone, or older than `STALE_SECONDS` (an hour when the process id lives: it may be reused)."""
    if not out.parent.is_dir():
        return []
    pattern = _stale_pattern(out.name)
    now = time.time()
    removed = []
    for path in out.parent.iterdir():
        match = pattern.fullmatch(path.name)
        if match is None or not path.is_dir() or path.is_symlink():
            continue
        try:
            age = now - path.stat().st_mtime
            ours = {p.name for p in path.iterdir()} <= PUBLISHED_NAMES
        except FileNotFoundError:  # another publish just renamed or removed it
            continue
        if not ours:
            continue
        pid = int(match["pid"]) if match["pid"] else None
        if pid == os.getpid():
            continue
        if pid is not None and _alive(pid):
            stale = age > STALE_WITH_LIVE_PID_SECONDS
        else:
            stale = pid is not None or age > STALE_SECONDS
        if stale:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _swap(tmp: Path, out: Path) -> None:
    """Puts `tmp` at `out`; a board already there is moved aside first and removed after."""
    if not out.exists():
        os.replace(tmp, out)
        return
    old = out.parent / f".{out.name}.old-{os.getpid()}-{_random.token_hex(4)}"
    os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        os.replace(old, out)
        raise
    shutil.rmtree(old)


def default_out(config: LoadedConfig) -> Path:
    """Where a config's board goes: `publish.out` (relative to the config), else `<work_dir>/leaderboard`."""
    out = config.cfg.publish.out
    return config.resolve(out) if out else config.work_dir / "leaderboard"


def publish_config(config: LoadedConfig, out: str | os.PathLike[str] | None = None, **options: Any) -> Published:
    """Builds the config's board (see `board_for_config`) and publishes it with its datasets' cards,
    into `out`, else `publish.out`, else `<work_dir>/leaderboard`."""
    return _publish_config_board(config, board_for_config(config, **options), out)


def _publish_config_board(config: LoadedConfig, board: Board, out: str | os.PathLike[str] | None) -> Published:
    target = Path(out) if out is not None else default_out(config)
    return publish(board, target, datasets=config.datasets, settings=config.cfg.publish)


def publish_from_cli(config_path: str | None, db: str | None, out: str | None, **options: Any) -> Published:
    """`benchbridge publish [CONFIG | --db PATH] [--out DIR]`."""
    board, config = board_from_cli(config_path, db, **options)
    if config is not None:
        return _publish_config_board(config, board, out)
    if out is None:
        raise BenchbridgeError("--out: required with --db (a config may set publish.out instead)")
    return publish(board, out)

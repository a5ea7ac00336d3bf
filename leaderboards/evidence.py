"""The samples behind a board cell, and why frameworks disagree on the same model and dataset.

A cell's samples are those of the run whose record the board shows (the latest success; for folded
subsets, each subset's). A sample is `right` when its score is the full 1, `wrong` at 0, `partial`
between (e.g. an AlpacaEval tie), `invalid` when the framework could not parse the answer or grade.

The framework diff lines up, by sample id, each framework's samples of one model on one dataset and
keeps the samples whose scores differ, with a one-line cause where the evidence tells it:
the same extracted answer scored differently is the metric or its normalisation; the same output
extracted differently is answer extraction; different input text is a different prompt.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from bridges import BenchbridgeError
from bridges.frameworks.openai_evals.samples import INVALID_CHOICE
from bridges.records import Record, Sample
from leaderboards.store import ResultsStore, latest_per_cell

Status = Literal["right", "wrong", "partial", "invalid", "unscored"]
CAUSE_METRIC = "normalisation/metric"
CAUSE_EXTRACTION = "answer extraction"
CAUSE_PROMPT = "different prompt"
CAUSE_OUTPUT = "different output to the same prompt"
# One framework logged the rendered prompt text (lm-eval with an hf chat model: the chat template applied), another
# the chat messages: the two cannot be compared literally, so "different prompt" would be a guess.
CAUSE_UNCOMPARABLE = "different output; inputs not comparable (rendered text vs chat messages)"


def status(sample: Sample | dict[str, Any], metric: str) -> Status:
    data = sample.model_dump() if isinstance(sample, Sample) else sample
    score = (data.get("scores") or {}).get(metric)
    if data.get("invalid") and _invalid_for(data, metric):
        return "invalid"
    if score is None:
        return "unscored"
    return "right" if score >= 1.0 else "wrong" if score <= 0.0 else "partial"


def _invalid_for(data: dict[str, Any], metric: str) -> bool:
    """Whether a sample's invalid flag belongs to `metric`. OpenAI evals' samples hold every scoring method of
    one dataset (`extra.methods`, metrics named `<method>_<key>`) and are invalid when any method's grade
    was: a judge's unparsed grade (fact) is no invalid answer in match, which scored the same output."""
    methods = (data.get("extra") or {}).get("methods")
    if not isinstance(methods, dict) or len(methods) < 2:
        return True
    owner = max((m for m in methods if metric.startswith(f"{m}_")), key=len, default=None)
    if owner is None or not isinstance(methods[owner], dict):
        return True
    return methods[owner].get("choice") == INVALID_CHOICE


@dataclass
class CellSamples:
    model: str
    framework: str
    benchmark: str
    metric: str
    records: list[Record]  # the records shown (one, or one per subset)
    samples: list[Sample]


def primary_metrics(records: Iterable[Record]) -> list[str]:
    """The metrics of a cell's records the board makes columns of (several for OpenAI evals' scoring methods
    of one dataset: match, includes, fuzzy_match), else every metric they have."""
    records = list(records)
    return sorted({r.metric for r in records if r.primary}) or sorted({r.metric for r in records})


def shown_records(store: ResultsStore, model: str, framework: str, benchmark: str, metric: str | None) -> list[Record]:
    """The records whose samples stand behind a cell (its primary metric unless `metric`): the latest
    successful record per subset. A whole-benchmark record without samples of its own (a group's average,
    such as OpenCompass's C-Eval over its subjects) stands for its subsets' records of the same run."""
    found = store.history(model=model, framework=framework, benchmark=benchmark, status="ok")
    if not found:
        _unknown(store, model, framework, benchmark)
    metrics = sorted({r.metric for r in found})
    if metric is None:
        primary = primary_metrics(found)
        if len(primary) > 1:  # one column each on the board: opening "the" cell would pick one silently
            raise BenchbridgeError(
                f"--metric: {framework} shows {len(primary)} columns for {model} on {benchmark}; "
                f"name one of {', '.join(primary)}"
            )
        metric = primary[0]
    elif metric not in metrics:
        raise BenchbridgeError(
            f"--metric: {framework} wrote no {metric!r} for {model} on {benchmark} ({', '.join(metrics)})"
        )
    of_metric = [r for r in found if r.metric == metric]
    chosen = [r for r in latest_per_cell(of_metric).values() if r.status == "ok"]
    whole = [r for r in chosen if not r.subset]
    if len(whole) == 1 and not store.samples(
        model=model, framework=framework, benchmark=benchmark, subset="", run_id=whole[0].run_id
    ):
        members = latest_per_cell(r for r in of_metric if r.subset and r.run_id == whole[0].run_id)
        if members:
            return sorted(members.values(), key=lambda r: r.subset)
    return whole or sorted(chosen, key=lambda r: r.subset)


def _unknown(store: ResultsStore, model: str, framework: str, benchmark: str) -> None:
    records = [r for r in store.records() if r.status == "ok"]
    for label, value, known in (
        ("--model", model, {r.model for r in records}),
        ("--framework", framework, {r.framework for r in records if r.model == model}),
        ("--benchmark", benchmark, {r.benchmark for r in records if r.model == model and r.framework == framework}),
    ):
        if value not in known:
            names = ", ".join(sorted(known)) or "none"
            raise BenchbridgeError(f"{label}: no successful record for {value!r} (known: {names})")
    raise BenchbridgeError(f"no successful record for {model} / {framework} / {benchmark}")


def cell_samples(
    store: ResultsStore, model: str, framework: str, benchmark: str, metric: str | None = None
) -> CellSamples:
    records = shown_records(store, model, framework, benchmark, metric)
    samples = [
        s
        for r in records
        for s in store.samples(model=model, framework=framework, benchmark=benchmark, subset=r.subset, run_id=r.run_id)
    ]
    return CellSamples(model, framework, benchmark, records[0].metric, records, samples)


def select(cell: CellSamples, *, wrong: bool = False, invalid: bool = False) -> list[Sample]:
    """The cell's samples, only the wrong (not right) and/or the invalid ones when asked."""
    if not (wrong or invalid):
        return list(cell.samples)
    keep = set()
    if wrong:
        keep |= {"wrong", "partial", "unscored", "invalid"}
    if invalid:
        keep |= {"invalid"}
    return [s for s in cell.samples if status(s, cell.metric) in keep]


def _same(a: str | None, b: str | None) -> bool:
    return (a or "").strip() == (b or "").strip()


def input_kind(sample: Sample) -> str:
    """``prompt`` when the framework logged one rendered text, ``messages`` when it logged chat turns."""
    return "prompt" if sample.prompt is not None else "messages"


def cause(entries: Sequence[tuple[str | None, str | None, str | None]], kinds: Sequence[str] = ()) -> str:
    """Why scores differ, from each framework's (input text, output, extracted answer); `kinds` (each
    input's `input_kind`) keeps a rendered prompt and chat messages from being called different prompts."""
    inputs, outputs, extracted = zip(*entries, strict=True)
    if all(_same(e, extracted[0]) for e in extracted):
        return CAUSE_METRIC
    if all(_same(o, outputs[0]) for o in outputs):
        return CAUSE_EXTRACTION
    if len(set(kinds)) > 1:
        return CAUSE_UNCOMPARABLE
    if not all(i == inputs[0] for i in inputs):
        return CAUSE_PROMPT
    return CAUSE_OUTPUT


@dataclass
class Disagreement:
    sample_id: str
    cause: str
    by_framework: dict[str, tuple[Sample, str, float | None]]  # framework -> (sample, metric, score)

    def as_dict(self) -> dict[str, Any]:
        return {
            "sample_id": self.sample_id,
            "cause": self.cause,
            "frameworks": {
                fw: {
                    "metric": metric,
                    "score": score,
                    "input": s.input_text,
                    "output": s.output,
                    "extracted": s.extracted,
                    "references": s.references,
                }
                for fw, (s, metric, score) in self.by_framework.items()
            },
        }


def disagreements(cells: Iterable[CellSamples]) -> list[Disagreement]:
    """The samples (by id) that two or more frameworks' cells scored differently."""
    by_id: dict[str, dict[str, tuple[Sample, str, float | None]]] = {}
    for cell in cells:
        for s in cell.samples:
            key = f"{s.subset}/{s.sample_id}" if s.subset else s.sample_id
            by_id.setdefault(key, {})[cell.framework] = (s, cell.metric, s.scores.get(cell.metric))
    out = []
    for sample_id, found in by_id.items():
        if len(found) < 2 or len({score for _, _, score in found.values()}) < 2:
            continue
        entries = [(s.input_text, s.output, s.extracted) for s, _, _ in found.values()]
        kinds = [input_kind(s) for s, _, _ in found.values()]
        out.append(Disagreement(sample_id, cause(entries, kinds), dict(sorted(found.items()))))
    return out


def framework_cells(store: ResultsStore, model: str, benchmark: str) -> list[CellSamples]:
    """Every framework's cell of one model on one dataset that has samples."""
    frameworks = sorted({r.framework for r in store.history(model=model, benchmark=benchmark, status="ok")})
    if not frameworks:
        _unknown(store, model, next(iter(frameworks), ""), benchmark)
    # A framework showing several columns here (OpenAI evals' methods) is lined up by its first metric.
    cells = [
        cell_samples(
            store,
            model,
            fw,
            benchmark,
            primary_metrics(store.history(model=model, framework=fw, benchmark=benchmark, status="ok"))[0],
        )
        for fw in frameworks
    ]
    return [c for c in cells if c.samples]


def store_from_cli(config_path: str | None, db: str | None) -> ResultsStore:
    """The results store of `benchbridge samples [CONFIG | --db PATH]`."""
    if (config_path is None) == (db is None):
        raise BenchbridgeError("give a run config or --db PATH (exactly one of them)")
    if config_path is not None:
        from bridges import load_config

        return ResultsStore(load_config(config_path).results_db).require()
    return ResultsStore(str(db)).require()


def _clip(text: str | None, limit: int = 400) -> str:
    text = text or ""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def sample_json(sample: Sample, metric: str) -> dict[str, Any]:
    return {**sample.model_dump(exclude_defaults=True), "status": status(sample, metric), "input": sample.input_text}


def samples_table(cell: CellSamples, samples: list[Sample]) -> Any:
    """A rich table of samples (texts as plain text: markup in a model's output is shown, not run)."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=Text(f"{cell.model} · {cell.framework} · {cell.benchmark} · {cell.metric}"), show_lines=True)
    for name in ("sample", "status", "score", "input", "output", "extracted", "reference"):
        table.add_column(name, overflow="fold")
    for s in samples:
        score = s.scores.get(cell.metric)
        table.add_row(
            Text(f"{s.subset}/{s.sample_id}" if s.subset else s.sample_id),  # a group's samples: by subject
            Text(status(s, cell.metric)),
            Text("" if score is None else f"{score:g}"),
            Text(_clip(s.input_text)),
            Text(_clip(s.output)),
            Text(_clip(s.extracted)),
            Text(_clip(" | ".join(s.references))),
        )
    return table


def diff_table(model: str, benchmark: str, found: list[Disagreement], frameworks: list[str]) -> Any:
    from rich.table import Table
    from rich.text import Text

    table = Table(title=Text(f"{model} · {benchmark}: samples the frameworks scored differently"), show_lines=True)
    table.add_column("sample")
    table.add_column("cause")
    for fw in frameworks:
        table.add_column(fw, overflow="fold")
    for d in found:
        cells = []
        for fw in frameworks:
            if fw not in d.by_framework:
                cells.append(Text("—"))
                continue
            s, metric, score = d.by_framework[fw]
            cells.append(
                Text(
                    f"{metric} = {'' if score is None else f'{score:g}'}\n"
                    f"input: {_clip(s.input_text, 200)}\noutput: {_clip(s.output, 200)}\n"
                    f"extracted: {_clip(s.extracted, 100)}"
                )
            )
        table.add_row(Text(d.sample_id), Text(d.cause), *cells)
    return table

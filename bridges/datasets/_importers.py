"""Importers: other formats -> canonical datasets. Each is a registry entry.

An importer is ``fn(source: Path, name: str, **options) -> Dataset``; register one with
``@importer("name")``.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from bridges._errors import BenchbridgeError, where
from bridges._files import MAX_NAME, path_kind, read_text
from bridges._registry import Registry
from bridges.datasets._format import (
    LETTERS,
    Dataset,
    DatasetCard,
    McqSample,
    Message,
    OpenSample,
    QaSample,
    Sample,
    first_error,
    read_jsonl_objects,
)

# One dataset, or a list for a source holding a collection (an OpenAI evals registry folder).
Importer = Callable[..., Dataset | list[Dataset]]
IMPORTERS: Registry[Importer] = Registry("dataset importer")


def importer(name: str) -> Callable[[Importer], Importer]:
    return IMPORTERS.register(name)


def import_source(fmt: str, source: str | Path, name: str | None = None, **options: Any) -> Dataset | list[Dataset]:
    """What the importer makes of `source`: one dataset, or a list for a source holding a collection
    (an OpenAI evals registry folder). `name` defaults to the source's file or folder name."""
    source = Path(source)
    if path_kind(source) is None:
        raise BenchbridgeError(f"{source}: not found (the {fmt} importer reads it)")
    name = name or re.sub(r"[^A-Za-z0-9_.-]+", "_", source.stem).strip("_.-")[:MAX_NAME] or "dataset"
    return IMPORTERS.get(fmt, key="--from")(source, name, **options)


def import_dataset(fmt: str, source: str | Path, name: str | None = None, **options: Any) -> Dataset:
    result = import_source(fmt, source, name, **options)
    if isinstance(result, list):
        names = ", ".join(ds.name for ds in result)
        raise BenchbridgeError(f"{source}: holds {len(result)} datasets ({names}); import it with import_source")
    return result


def _card(name: str, kind: str, source: Path, **options: Any) -> DatasetCard:
    fields = {k: v for k, v in options.items() if k in DatasetCard.model_fields and v is not None}
    fields.setdefault("source", f"imported from {source.name}")
    try:
        return DatasetCard(name=name, kind=kind, **fields)
    except ValidationError as exc:
        raise BenchbridgeError(f"dataset card: {first_error(exc)}") from None


def _validated(model: type[BaseModel], raw: dict[str, Any], path: Path, line: int) -> Any:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise BenchbridgeError(f"{where(path, line)}: {first_error(exc)}") from None


def _read_csv(path: Path) -> list[tuple[int, dict[str, str]]]:
    text = read_text(path, "CSV file")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        rows = [(reader.line_num, row) for row in reader]
    except csv.Error as exc:
        raise BenchbridgeError(f"{where(path, reader.line_num)}: invalid CSV: {exc}") from None
    for line, row in rows:
        if None in row:  # DictReader files surplus cells under the key None
            raise BenchbridgeError(
                f"{where(path, line)}: {len(row) - 1 + len(row[None])} cells but the header names {len(row) - 1}"
            )
    return rows


def _choice_columns(header: list[str]) -> list[str]:
    cols = []
    for letter in LETTERS:
        if letter not in header:
            break
        cols.append(letter)
    return cols


@importer("ceval")
def import_ceval(source: Path, name: str, split: str = "val", **options: Any) -> Dataset:
    """C-Eval folders: ``{dev,val,test}/<subject>_<split>.csv`` with id,question,A,B,C,D,answer."""
    split_dir = source / split
    if not split_dir.is_dir():
        raise BenchbridgeError(
            f"{split_dir}: C-Eval split folder not found (expected {source}/{{dev,val,test}}/<subject>_<split>.csv)"
        )
    files = sorted(split_dir.glob(f"*_{split}.csv"))
    if not files:
        raise BenchbridgeError(f"{split_dir}: no <subject>_{split}.csv files")

    def rows(path: Path, subject: str) -> list[Sample]:
        out: list[Sample] = []
        for line, row in _read_csv(path):
            if "answer" not in row or not row.get("answer"):
                raise BenchbridgeError(f"{where(path, line)}: answer: missing (test splits have no answers)")
            raw = {
                "id": f"{subject}-{row.get('id', line)}",
                "question": row.get("question", ""),
                "choices": [row.get(c, "") for c in "ABCD"],
                "answer": (row["answer"] or "").strip(),
                "subject": subject,
            }
            if row.get("explanation"):
                raw["explanation"] = row["explanation"]
            out.append(_validated(McqSample, raw, path, line))
        return out

    samples: list[Sample] = []
    fewshot: list[Sample] = []
    for f in files:
        subject = f.name[: -len(f"_{split}.csv")]
        samples += rows(f, subject)
        dev = source / "dev" / f"{subject}_dev.csv"
        if split != "dev" and dev.exists():
            fewshot += rows(dev, subject)
    options.setdefault("language", "zh")
    card = _card(name, "mcq", source, **options)
    return Dataset(card, samples, fewshot=fewshot)


@importer("openai-evals")
def import_openai_evals(source: Path, name: str, **options: Any) -> Dataset | list[Dataset]:
    """An evals ``samples.jsonl``, or a registry folder: then every samples file its evals use becomes
    a dataset of its own, its card naming the evals and eval sets that used it."""
    if source.is_dir():
        from bridges.datasets._openai_evals_registry import import_registry

        return import_registry(source, import_openai_evals_samples, **options)
    return import_openai_evals_samples(source, name, **options)


# evals writes few-shot turns as role "system" with these names.
_EVALS_EXAMPLE_ROLES = {"example_user": "user", "example_assistant": "assistant"}


def import_openai_evals_samples(source: Path, name: str, **options: Any) -> Dataset:
    """An evals ``samples.jsonl``: ``{"input": [messages] | "text", "ideal": str | [str]}``."""
    samples: list[Sample] = []
    seen: dict[str, int] = {}
    for line, raw in read_jsonl_objects(source):
        if "ideal" not in raw:
            raise BenchbridgeError(f"{where(source, line)}: ideal: missing")
        if "input" not in raw:
            raise BenchbridgeError(f"{where(source, line)}: input: missing")
        prompt = raw["input"]
        if isinstance(prompt, str):
            messages: Any = [{"role": "user", "content": prompt}]
        elif isinstance(prompt, list) and all(isinstance(m, dict) for m in prompt):
            messages = [
                {"role": _EVALS_EXAMPLE_ROLES.get(m.get("name", ""), m.get("role")), "content": m.get("content")}
                for m in prompt
            ]
        else:
            raise BenchbridgeError(f"{where(source, line)}: input: expected chat messages or a string")
        ideal = raw["ideal"]
        answers = ideal if isinstance(ideal, list) else [ideal]
        sid = str(raw.get("id", line))
        if sid in seen:
            raise BenchbridgeError(f"{where(source, line)}: id: duplicate id {sid!r} (first on line {seen[sid]})")
        seen[sid] = line
        sample = {"id": sid, "messages": messages, "answers": [str(a) for a in answers]}
        samples.append(_validated(QaSample, sample, source, line))
    if not samples:
        raise BenchbridgeError(f"{source}: no samples")
    if "language" not in options:
        text = "".join(s.question for s in samples if isinstance(s, QaSample))
        cjk = sum(1 for c in text if "\u4e00" <= c <= "\u9fff")
        options["language"] = "zh" if cjk * 3 > len(text) else "en"
    return Dataset(_card(name, "qa", source, **options), samples)


@importer("alpaca-eval")
def import_alpaca_eval(source: Path, name: str, **options: Any) -> Dataset:
    """AlpacaEval JSON: a list of ``{"instruction", "input"?, "output"?}``."""
    try:
        data = json.loads(read_text(source, "AlpacaEval JSON file"))
    except json.JSONDecodeError as exc:
        raise BenchbridgeError(f"{where(source, exc.lineno)}: invalid JSON: {exc.msg}") from None
    if not isinstance(data, list):
        raise BenchbridgeError(f"{source}: expected a JSON list of {{instruction, input, output}}")
    samples: list[Sample] = []
    for i, row in enumerate(data):
        if not isinstance(row, dict) or not str(row.get("instruction", "")).strip():
            raise BenchbridgeError(f"{source}: item {i}: instruction: missing or empty")
        raw = {"id": str(row.get("id", i)), "instruction": row["instruction"], "input": row.get("input") or ""}
        samples.append(_validated(OpenSample, raw, source, i))
    return Dataset(_card(name, "open", source, **options), samples)


@importer("text")
def import_text(source: Path, name: str, **options: Any) -> Dataset:
    """Plain text, one instruction per line. Empty lines and duplicates are errors, not skipped."""
    samples: list[Sample] = []
    seen: dict[str, int] = {}
    lines = read_text(source, "text file").splitlines()  # a byte-order mark is dropped, not kept in line 1
    while lines and not lines[-1].strip():
        lines.pop()  # blank lines at the very end are an editor's habit, not a missing instruction
    for line, text in enumerate(lines, start=1):
        if not text.strip():
            raise BenchbridgeError(f"{where(source, line)}: empty line (one instruction per line)")
        if text in seen:
            raise BenchbridgeError(f"{where(source, line)}: duplicate of line {seen[text]}")
        seen[text] = line
        samples.append(OpenSample(id=str(line), instruction=text))
    if not samples:
        raise BenchbridgeError(f"{source}: no instructions")
    return Dataset(_card(name, "open", source, **options), samples)


@importer("csv")
def import_csv(source: Path, name: str, **options: Any) -> Dataset:
    """CSV as OpenCompass reads custom data: columns A,B,.. make it mcq, else question/answer qa."""
    rows = _read_csv(source)
    if not rows:
        raise BenchbridgeError(f"{source}: no rows")
    header = list(rows[0][1].keys())
    for col in ("question", "answer"):
        if col not in header:
            raise BenchbridgeError(f"{source}: column {col!r} missing (have {', '.join(header)})")
    choice_cols = _choice_columns(header)
    samples: list[Sample] = []
    for line, row in rows:
        sid = row.get("id") or str(line - 1)
        raw: dict[str, Any]
        if choice_cols:
            raw = {
                "id": sid,
                "question": row["question"],
                "choices": [row[c] for c in choice_cols],
                "answer": (row["answer"] or "").strip(),
            }
            samples.append(_validated(McqSample, raw, source, line))
        else:
            raw = {"id": sid, "messages": [Message(role="user", content=row["question"])], "answers": [row["answer"]]}
            samples.append(_validated(QaSample, raw, source, line))
    kind = "mcq" if choice_cols else "qa"
    return Dataset(_card(name, kind, source, **options), samples)

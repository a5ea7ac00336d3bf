"""The canonical dataset format: a folder with `card.yaml` and `samples.jsonl`.

Three kinds, one JSON object per line:

- ``mcq``:  ``{"id", "question", "choices": [..], "answer": "B", "subject"?, "explanation"?}``
- ``qa``:   ``{"id", "messages": [{"role", "content"}, ..], "answers": ["..", ..]}``
- ``open``: ``{"id", "instruction", "input"?}`` (judged pairwise, e.g. by AlpacaEval)
- ``gen``:  ``{"id", "messages": [..], "references": [".."], "task"?}`` (generation scored against references)
- ``code``: ``{"id", "prompt", "entry_point", "tests": ["assert ..", ..]}`` (Python, executed: pass@k)

The card (name, kind, language, description, license, source, tags) travels with the results to
the published board.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import string
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bridges._errors import BenchbridgeError, where
from bridges._files import MAX_NAME, check_dir_writable, loc_text, path_kind, read_text, read_yaml

Kind = Literal["mcq", "qa", "open", "gen", "code"]
LETTERS = string.ascii_uppercase
SAMPLES_FILE = "samples.jsonl"
CARD_FILE = "card.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class Message(_Strict):
    role: Literal["system", "user", "assistant"]
    content: str


class McqSample(_Strict):
    id: str
    question: Annotated[str, Field(min_length=1)]
    choices: Annotated[list[str], Field(min_length=2, max_length=26)]
    answer: str
    subject: str | None = None
    explanation: str | None = None

    @model_validator(mode="after")
    def _answer_is_a_choice(self) -> McqSample:
        allowed = LETTERS[: len(self.choices)]
        if len(self.answer) != 1 or self.answer not in allowed:
            raise ValueError(f"answer {self.answer!r} must be one of {', '.join(allowed)}")
        return self

    @property
    def letters(self) -> str:
        return LETTERS[: len(self.choices)]


class QaSample(_Strict):
    id: str
    messages: Annotated[list[Message], Field(min_length=1)]
    answers: Annotated[list[str], Field(min_length=1)]

    @field_validator("messages")
    @classmethod
    def _ends_with_user(cls, messages: list[Message]) -> list[Message]:
        if messages[-1].role != "user":
            raise ValueError("the last message must have role 'user'")
        return messages

    @property
    def question(self) -> str:
        """The last user turn: what a framework without chat input shows as the question."""
        return self.messages[-1].content

    @property
    def system(self) -> str | None:
        return next((m.content for m in self.messages if m.role == "system"), None)

    def prompt_text(self) -> str:
        """All non-system turns as one text, for frameworks whose datasets have one question column."""
        turns = [m for m in self.messages if m.role != "system"]
        if len(turns) == 1:
            return turns[0].content
        return "\n\n".join(f"{m.role.capitalize()}: {m.content}" for m in turns)


class OpenSample(_Strict):
    id: str
    instruction: Annotated[str, Field(min_length=1)]
    input: str = ""


class GenSample(_Strict):
    """A generation item: chat messages and one or more reference answers; `task` picks a judge rubric."""

    id: str
    messages: Annotated[list[Message], Field(min_length=1)]
    references: Annotated[list[str], Field(min_length=1)]
    task: Annotated[str, Field(min_length=1)] = "default"

    _ends_with_user = field_validator("messages")(QaSample._ends_with_user.__func__)  # type: ignore[attr-defined]

    @property
    def question(self) -> str:
        return self.messages[-1].content


class CodeSample(_Strict):
    """A Python problem: the model completes `prompt`; each of `tests` (Python statements, e.g. asserts
    calling `entry_point`) is run against the completion in a sandbox."""

    id: str
    prompt: Annotated[str, Field(min_length=1)]
    entry_point: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
    tests: Annotated[list[str], Field(min_length=1)]
    setup: str = ""  # run before each test (imports, helpers)
    solution: str | None = None  # a known-good completion, for checking the tests

    @field_validator("tests")
    @classmethod
    def _tests_parse(cls, tests: list[str]) -> list[str]:
        import ast

        for i, test in enumerate(tests):
            try:
                ast.parse(test)
            except SyntaxError as exc:
                raise ValueError(f"tests[{i}] is not valid Python (line {exc.lineno}: {exc.msg})") from None
        return tests


Sample = McqSample | QaSample | OpenSample | GenSample | CodeSample
SAMPLE_TYPES: dict[str, type[McqSample] | type[QaSample] | type[OpenSample] | type[GenSample] | type[CodeSample]] = {
    "mcq": McqSample,
    "qa": QaSample,
    "open": OpenSample,
    "gen": GenSample,
    "code": CodeSample,
}


class DatasetCard(_Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=MAX_NAME)]
    kind: Kind
    language: str = "en"
    description: str = ""
    license: str = "unknown"
    source: str = ""
    tags: list[str] = Field(default_factory=list)


@dataclass
class Dataset:
    card: DatasetCard
    samples: list[Sample]
    path: Path | None = None
    content_hash: str = ""
    fewshot: list[Sample] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.card.name

    @property
    def kind(self) -> Kind:
        return self.card.kind

    def subjects(self) -> list[str]:
        return sorted({s.subject for s in self.samples if isinstance(s, McqSample) and s.subject})

    def save(self, folder: Path) -> Path:
        """Writes card + samples atomically: into a temp dir, then renamed into place."""
        folder = Path(folder)
        if path_kind(folder, "--out") is not None:
            raise BenchbridgeError(f"{folder}: already exists; choose another --out or remove it")
        check_dir_writable(folder.parent, "--out")
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        try:
            (tmp / CARD_FILE).write_text(
                yaml.safe_dump(self.card.model_dump(), allow_unicode=True, sort_keys=False), "utf-8"
            )
            _write_jsonl(tmp / SAMPLES_FILE, self.samples)
            if self.fewshot:
                _write_jsonl(tmp / "fewshot.jsonl", self.fewshot)
            os.replace(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return folder


def _write_jsonl(path: Path, samples: Iterable[BaseModel]) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for s in samples:
            fh.write(json.dumps(s.model_dump(exclude_none=True), ensure_ascii=False) + "\n")


def first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or "(sample)"
    return f"{loc}: {err['msg']}"


def read_jsonl_objects(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; a bad line raises naming `file:line`."""
    lines = read_text(path, "samples file").splitlines()  # a UTF-8 byte-order mark is dropped
    out = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BenchbridgeError(f"{where(path, lineno)}: invalid JSON: {exc.msg}") from None
        if not isinstance(raw, dict):
            raise BenchbridgeError(f"{where(path, lineno)}: expected a JSON object")
        out.append((lineno, raw))
    return out


def read_samples(path: Path, kind: Kind) -> list[Sample]:
    """Reads and validates a samples JSONL; any bad line raises naming `file:line: key`."""
    model = SAMPLE_TYPES[kind]
    samples: list[Sample] = []
    seen: dict[str, int] = {}
    for lineno, raw in read_jsonl_objects(path):
        try:
            sample = model.model_validate(raw)
        except ValidationError as exc:
            raise BenchbridgeError(f"{where(path, lineno)}: {first_error(exc)}") from None
        if sample.id in seen:
            raise BenchbridgeError(
                f"{where(path, lineno)}: id: duplicate id {sample.id!r} (first on line {seen[sample.id]})"
            )
        seen[sample.id] = lineno
        samples.append(sample)
    if not samples:
        raise BenchbridgeError(f"{path}: no samples")
    return samples


def read_card(path: Path) -> DatasetCard:
    if not path.exists():
        raise BenchbridgeError(
            f"{path}: dataset card not found (a dataset folder holds {CARD_FILE} and {SAMPLES_FILE})"
        )
    doc = read_yaml(path, "dataset card")
    if not isinstance(doc.data, dict):
        raise BenchbridgeError(f"{path}: expected a mapping (name, kind, language, ...)")
    try:
        return DatasetCard.model_validate(doc.data)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise BenchbridgeError(f"{doc.where(err['loc'])}: {loc_text(err['loc']) or '(card)'}: {err['msg']}") from None


def _kind_of(path: Path, first: dict[str, Any]) -> Kind:
    """A bare samples file's kind, from the keys of its first line."""
    keys: tuple[tuple[str, Kind], ...] = (
        ("choices", "mcq"),
        ("references", "gen"),
        ("messages", "qa"),
        ("instruction", "open"),
        ("entry_point", "code"),
    )
    for key, kind in keys:
        if key in first:
            return kind
    raise BenchbridgeError(
        f"{path}: cannot tell the kind from line 1 (no choices, references, messages, instruction or entry_point key); "
        "pass --kind mcq|qa|open|gen|code"
    )


def load_samples_file(path: Path, kind: Kind | None = None) -> Dataset:
    """A bare samples JSONL (no card) as a dataset named after the file, of `kind` or the kind its
    first line shows; validated exactly as a dataset folder's samples are."""
    objects = read_jsonl_objects(path)
    if not objects:
        raise BenchbridgeError(f"{path}: no samples")
    kind = kind or _kind_of(path, objects[0][1])
    samples = read_samples(path, kind)
    stem = path.parent.name if path.stem == "samples" else path.stem  # ds/samples.jsonl is dataset ds
    name = "".join(c if c.isalnum() or c in "_.-" else "_" for c in stem).strip("_.-")[:MAX_NAME] or "samples"
    card = DatasetCard(name=name if name[0].isalnum() else f"d{name}", kind=kind)
    return Dataset(card, samples, path.resolve(), hashlib.sha256(path.read_bytes()).hexdigest())


def load_dataset(folder: str | os.PathLike[str]) -> Dataset:
    """Loads and validates a canonical dataset folder."""
    folder = Path(folder)
    if path_kind(folder) != "dir":
        raise BenchbridgeError(
            f"{folder}: dataset folder not found (expected {CARD_FILE} and {SAMPLES_FILE} in it; "
            "`benchbridge datasets import` makes one)"
        )
    card = read_card(folder / CARD_FILE)
    samples_path = folder / SAMPLES_FILE
    samples = read_samples(samples_path, card.kind)
    fewshot_path = folder / "fewshot.jsonl"
    fewshot = read_samples(fewshot_path, card.kind) if fewshot_path.exists() else []
    digest = hashlib.sha256()
    for p in (folder / CARD_FILE, samples_path, fewshot_path):
        if p.exists():
            digest.update(p.read_bytes())
    return Dataset(card, samples, folder.resolve(), digest.hexdigest(), fewshot)

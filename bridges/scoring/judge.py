"""A judge model with the user's own rubric: a 1-10 score or a pairwise choice per answer, reasons kept.

A rubric file is YAML (task -> {mode, template}) or JSONL (one {"task", "mode", "template"} per line):
one prompt template per task type (a `gen` sample's `task`, else `default`), with the placeholders
`{question}`, `{answer}` (required) and `{reference}` (required for `pairwise`). Only those three are
replaced, so other braces (a JSON example) stay as written. Modes:

- `score`: the judge gives a 1-10 rating, read from `[[7]]`, `Rating: 7`, `评分：7`, `7/10` or a reply that
  is the number alone;
- `pairwise`: answer A (the model's) against B (the reference): `[[A]]` 1, `[[B]]` 0, `[[C]]`/tie 0.5.

A verdict that parses to nothing (or a rating outside 1-10) is invalid: counted apart and left out of
the mean, never a 0; a judge that never gives a parsable verdict makes the cell fail with the reason.
The judge is any model of the config, asked through the model layer (response cache, limits).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from bridges._errors import BenchbridgeError, where
from bridges._files import path_kind, read_yaml
from bridges.scoring._base import Item, Metric, Score, Scorer
from bridges.scoring.text import has_cjk

RUBRICS = Path(__file__).parent / "rubrics"
PLACEHOLDERS = ("{question}", "{answer}", "{reference}")
SCORE_METRIC = "judge_score"
PAIRWISE_METRIC = "judge_win_rate"


@dataclass(frozen=True)
class Template:
    task: str
    mode: Literal["score", "pairwise"]
    template: str

    def render(self, item: Item, answer: str) -> str:
        reference = item.references[0] if item.references else ""
        text = self.template
        for key, value in (("{question}", item.question), ("{answer}", answer), ("{reference}", reference)):
            text = text.replace(key, value)
        return text


@dataclass(frozen=True)
class Rubric:
    source: str  # the file, or "bundled:en"
    templates: dict[str, Template]
    digest: str  # sha256 of the file's bytes: a changed rubric is a new scorer identity

    def for_task(self, task: str) -> Template:
        t = self.templates.get(task) or self.templates.get("default")
        if t is None:
            raise BenchbridgeError(
                f"{self.source}: no template for task {task!r} and no 'default' (have {', '.join(self.templates)})"
            )
        return t


def _check_template(at: str, task: str, mode: Any, template: Any) -> Template:
    if mode not in ("score", "pairwise"):
        raise BenchbridgeError(f"{at}: {task}.mode: {mode!r} is not 'score' or 'pairwise'")
    if not isinstance(template, str) or not template.strip():
        raise BenchbridgeError(f"{at}: {task}.template: missing or empty (a prompt with {{question}} and {{answer}})")
    if "{answer}" not in template:
        raise BenchbridgeError(
            f"{at}: {task}.template: has no {{answer}} placeholder; the judge would not see the answer"
        )
    if mode == "pairwise" and "{reference}" not in template:
        raise BenchbridgeError(f"{at}: {task}.template: a pairwise template needs {{reference}} (answer B)")
    return Template(task, mode, template)


def load_rubric(path: Path) -> Rubric:
    """A rubric file (YAML or JSONL) checked: every template has `{answer}`; errors name file:line: key."""
    if path_kind(path) != "file":
        raise BenchbridgeError(f"{path}: rubric file not found (YAML task -> {{mode, template}}, or JSONL)")
    data = path.read_bytes()
    templates: dict[str, Template] = {}
    if path.suffix == ".jsonl":
        from bridges.datasets import read_jsonl_objects

        for lineno, obj in read_jsonl_objects(path):
            task = obj.get("task", "default")
            extra = set(obj) - {"task", "mode", "template"}
            if extra:
                raise BenchbridgeError(f"{where(path, lineno)}: unknown key(s) {', '.join(sorted(extra))}")
            templates[str(task)] = _check_template(
                where(path, lineno), str(task), obj.get("mode", "score"), obj.get("template")
            )
    else:
        doc = read_yaml(path, "rubric file")
        if not isinstance(doc.data, dict) or not doc.data:
            raise BenchbridgeError(f"{path}: expected a mapping task -> {{mode, template}}")
        for task, spec in doc.data.items():
            at = doc.where((task,))
            if not isinstance(spec, dict):
                raise BenchbridgeError(f"{at}: {task}: expected a mapping with mode and template")
            extra = set(spec) - {"mode", "template"}
            if extra:
                raise BenchbridgeError(f"{at}: {task}: unknown key(s) {', '.join(sorted(extra))}")
            templates[str(task)] = _check_template(at, str(task), spec.get("mode", "score"), spec.get("template"))
    if not templates:
        raise BenchbridgeError(f"{path}: no templates")
    return Rubric(str(path), templates, hashlib.sha256(data).hexdigest())


_SCORE_PATTERNS = (
    re.compile(r"\[\[\s*(\d+(?:\.\d+)?)\s*\]\]"),
    re.compile(r"(?:rating|score|评分|分数|得分)\s*(?:is|为|是)?\s*[:：]?\s*\**\s*(\d+(?:\.\d+)?)", re.IGNORECASE),
    re.compile(r"(\d+(?:\.\d+)?)\s*(?:/|out of|分（满分)\s*10"),
    re.compile(r"^\s*\**\s*(\d{1,2}(?:\.\d+)?)\s*\**\s*[.。!]?\s*$"),  # the whole reply is the number
)
_CHOICE_PATTERNS = (
    re.compile(r"\[\[\s*([ABC])\s*\]\]"),
    re.compile(
        r"(?:verdict|choice|better|winner|选择|结论|更好的是)\s*(?:is|为|是)?\s*[:：]?\s*\**\s*\(?([ABC])\b",
        re.IGNORECASE,
    ),
)


def parse_score(text: str) -> float | None:
    """A 1-10 rating from the judge's text, or None (invalid)."""
    for pattern in _SCORE_PATTERNS:
        m = pattern.search(text)
        if m:
            value = float(m.group(1))
            return value if 1.0 <= value <= 10.0 else None
    return None


def parse_choice(text: str) -> str | None:
    """'A', 'B' or 'C' (tie) from the judge's text, or None (invalid)."""
    for pattern in _CHOICE_PATTERNS:
        m = pattern.search(text)
        if m:
            return m.group(1).upper()
    if re.search(r"\btie\b|平局", text, re.IGNORECASE):
        return "C"
    return None


class JudgeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str  # a model of the config
    # A rubric file (relative to the config), or "en" / "zh" (bundled); "auto": zh for Chinese questions, else en.
    rubric: str = "auto"
    max_new_tokens: int = 256


class Judge(Scorer):
    name: ClassVar[str] = "judge"
    Options: ClassVar[type[BaseModel]] = JudgeOptions

    def __init__(self, options: BaseModel, config: Any, loc: tuple[Any, ...]) -> None:
        super().__init__(options, config, loc)
        opts: JudgeOptions = self.options  # type: ignore[assignment]
        self.spec = config.model(opts.model, f"{self.key}.model")
        self.rubrics: dict[str, Rubric] = {}
        if opts.rubric in ("auto", "en", "zh"):
            for lang in ("en", "zh") if opts.rubric == "auto" else (opts.rubric,):
                self.rubrics[lang] = load_rubric(RUBRICS / f"{lang}.yaml")
        else:
            try:
                self.rubrics["file"] = load_rubric(config.resolve(opts.rubric))
            except BenchbridgeError as exc:
                raise self.error_at("rubric", str(exc)) from None

    def rubric_for(self, item: Item) -> Rubric:
        if "file" in self.rubrics:
            return self.rubrics["file"]
        if "zh" in self.rubrics and ("en" not in self.rubrics or has_cjk(item.question)):
            return self.rubrics["zh"]
        return self.rubrics["en"]

    def judge(self) -> str | None:
        return self.spec.name

    def fingerprint_parts(self) -> dict[str, Any]:
        from bridges.models import answer_identity

        return {
            "rubrics": {k: r.digest for k, r in sorted(self.rubrics.items())},
            "judge": answer_identity(self.spec),
        }

    def metrics(self) -> list[Metric]:
        modes = {t.mode for r in self.rubrics.values() for t in r.templates.values()}
        out = []
        if "score" in modes:
            out.append(Metric(SCORE_METRIC, 10.0, True))
        if "pairwise" in modes:
            out.append(Metric(PAIRWISE_METRIC, 1.0, True))
        return out

    def score(self, items: list[Item]) -> list[Score]:
        from bridges.models import ChatRequest, as_messages, get_model

        opts: JudgeOptions = self.options  # type: ignore[assignment]
        templates = [self.rubric_for(item).for_task(item.task) for item in items]
        prompts = [
            t.render(item, item.outputs[0] if item.outputs else "") for t, item in zip(templates, items, strict=True)
        ]
        requests = [
            ChatRequest(
                as_messages([{"role": "user", "content": p}]), max_new_tokens=opts.max_new_tokens, temperature=0.0
            )
            for p in prompts
        ]
        answers = get_model(self.spec).generate(requests)
        out = []
        for t, resp in zip(templates, answers, strict=True):
            text = resp.text
            if t.mode == "score":
                value = parse_score(text)
                out.append(
                    Score(
                        {SCORE_METRIC: value},
                        invalid=value is None,
                        verdict=None if value is None else f"{value:g}",
                        reasoning=text,
                        extra={"rubric_task": t.task},
                    )
                )
            else:
                choice = parse_choice(text)
                win = {"A": 1.0, "B": 0.0, "C": 0.5}.get(choice or "")
                out.append(
                    Score(
                        {PAIRWISE_METRIC: win},
                        invalid=choice is None,
                        verdict=choice,
                        reasoning=text,
                        extra={"rubric_task": t.task},
                    )
                )
        return out

"""A deterministic model and grader for a team's own evals registry (tests/test_byo_openai_evals.py),
as a benchbridge `python` model and as plain evals completion functions (the by-hand `oaievalset` run
uses these, not benchbridge).

The model answers France -> Paris, Japan -> Tokyo, Italy -> Milan (wrong), Egypt -> Atlantis (wrong).
The grader reads the submission out of a fact prompt (English `[Submission]:` or Chinese `[提交答案]：`):
Paris/Tokyo -> C, Milan -> D, anything else -> a sentence with no choice (evals' __invalid__).
"""

from __future__ import annotations

import re
from typing import Any

ANSWERS = {"France": "Paris", "Japan": "Tokyo", "Italy": "Milan", "Egypt": "Atlantis"}
GRADES = {"Paris": "C", "Tokyo": "C", "Milan": "D"}
_SUBMISSION = re.compile(r"(?:\[Submission\]:|\[提交答案\]：)\s*(.*?)\s*\*{3}", re.S)


def answer(text: str) -> str:
    found = _SUBMISSION.search(text)
    if found:  # a grading prompt
        grade = GRADES.get(found.group(1).strip())
        return f"Compared the facts.\n{grade}\n{grade}" if grade else "I cannot tell which option applies."
    for country, city in ANSWERS.items():
        if country in text:
            return city
    return "OK"


def _text(item: Any) -> str:
    if isinstance(item, str):
        return item
    return "\n".join(str(m.get("content", "")) for m in item)


class Deterministic:
    """A benchbridge `python` model (model and grader alike)."""

    def __call__(self, batch: list[Any]) -> list[str]:
        return [answer(_text(item)) for item in batch]


class _Result:
    def __init__(self, text: str) -> None:
        self.text = text

    def get_completions(self) -> list[str]:
        return [self.text]


class DeterministicFn:
    """The same answers as an evals completion function, for running the registry by hand."""

    def __init__(self, **kwargs: Any) -> None:
        pass

    def __call__(self, prompt: Any, **kwargs: Any) -> _Result:
        if hasattr(prompt, "to_formatted_prompt"):
            prompt = prompt.to_formatted_prompt()
        return _Result(answer(_text(prompt)))

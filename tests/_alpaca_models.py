"""Deterministic `python` models for the AlpacaEval and serve tests (targets `tests._alpaca_models:...`).

The judges read the two outputs out of AlpacaEval's own judge prompts, which present the pair in a
random order, and name the longer one the way the prompt asks: `Output (a)`/`Output (b)` for
`chatgpt_fn`-style prompts, `m`/`M` for the weighted (logprob) prompt.
"""

from __future__ import annotations

import re
from typing import Any

# chatgpt_fn: the last "## Output (a):" block is the real pair (the one before it is the worked example).
_TOOL_PAIR = re.compile(r"## Output \(a\):\n(.*?)\n\n## Output \(b\):\n(.*?)\n\n## Which is best", re.S)
# weighted_alpaca_eval_gpt4_turbo: outputs identified as "m" (first) and "M" (second).
_ID_PAIR = re.compile(
    r'"model_identifier": "m",\s*"output": """(.*?)""".*?"model_identifier": "M",\s*"output": """(.*?)"""', re.S
)


def _text(item: Any) -> str:
    return item if isinstance(item, str) else "\n".join(m["content"] for m in item)


class LongerJudge:
    """Prefers the longer output; answers `undecided` for prompts containing one of `undecided_on`."""

    def __init__(self, undecided_on: list[str] | None = None) -> None:
        self.undecided_on = undecided_on or []

    def judge(self, prompt: str) -> str:
        if any(marker in prompt for marker in self.undecided_on):
            return "I cannot decide between them."
        pairs = _TOOL_PAIR.findall(prompt)
        if pairs:
            first, second = pairs[-1]
            return "Output (a)" if len(first) >= len(second) else "Output (b)"
        ids = _ID_PAIR.findall(prompt)
        if ids:
            first, second = ids[-1]
            return "m" if len(first) >= len(second) else "M"
        return "This prompt holds no pair of outputs."

    def __call__(self, batch: list[Any]) -> list[str]:
        return [self.judge(_text(item)) for item in batch]


class SplitLengthModel:
    """Answers `long_answer` to instructions containing one of `long_on`, else `short_answer`."""

    def __init__(self, long_on: list[str], long_answer: str, short_answer: str) -> None:
        self.long_on = long_on
        self.long_answer = long_answer
        self.short_answer = short_answer

    def __call__(self, batch: list[Any]) -> list[str]:
        return [self.long_answer if any(k in _text(i) for k in self.long_on) else self.short_answer for i in batch]


class EchoModel:
    """Answers with the last message, so endpoint tests can see exactly what reached the model."""

    def __call__(self, batch: list[Any]) -> list[str]:
        return [_text(item).splitlines()[-1] if _text(item) else "" for item in batch]

"""Deterministic `python` models for the scoring tests.

`CodePlanModel(log, plan)`: for a code problem (found by its entry point in the prompt) the i-th answer
(i counted per problem, modulo the plan's length) is the plan's i-th entry: "ok" a correct function,
"wrong" a wrong one, or a sandbox attack ("loop", "alloc", "fork", "write", "socket"). A generation item
is answered by the text in `gen` for its question (else `default`). Every answered prompt
is logged to `log` (one line each), so a test can count the evaluated model's calls.

`RubricJudge(log)`: rates an answer 1-10 by a rule a test can recompute: 8 when the answer contains a
word of the reference, else 3; +1 when the rubric says BONUS; replies without a rating (invalid) when
the answer contains "UNRATABLE".
"""

from __future__ import annotations

import json
import re
from typing import Any

SOLUTIONS = {
    "add": "def add(a, b):\n    return a + b\n",
    "is_even": "def is_even(n):\n    return n % 2 == 0\n",
    "reverse_string": "def reverse_string(s):\n    return s[::-1]\n",
    "max_of_list": "def max_of_list(xs):\n    return max(xs)\n",
}
ATTACKS = {
    "loop": "while True:\n    pass\n",
    "alloc": "_x = bytearray(10 * 1024 ** 3)\n",
    "fork": "import os\nos.fork()\n",
    "write": "open('/tmp/bb-sandbox-escape.txt', 'w').write('x')\n",
    "socket": "import socket\nsocket.create_connection(('127.0.0.1', 9))\n",
}


def _log(log: str, batch: list[Any]) -> None:
    with open(log, "a", encoding="utf-8") as fh:
        fh.write("".join(json.dumps(item, ensure_ascii=False) + "\n" for item in batch))


class CodePlanModel:
    def __init__(
        self, log: str, plan: dict[str, list[str]], gen: dict[str, str] | None = None, default: str = "I do not know."
    ) -> None:
        self.log, self.plan, self.gen, self.default = log, plan, gen or {}, default
        self.seen: dict[str, int] = {}

    def answer(self, conversation: list[dict[str, str]]) -> str:
        text = conversation[-1]["content"]
        m = re.search(r"def (\w+)\(", text)
        if m and "```python" in text:
            ep = m.group(1)
            plan = self.plan.get(ep, ["wrong"])
            i = self.seen.get(ep, 0)
            self.seen[ep] = i + 1
            what = plan[i % len(plan)]
            if what == "ok":
                body = SOLUTIONS[ep]
            elif what == "wrong":
                body = f"def {ep}(*args):\n    return None\n"
            else:
                body = f"def {ep}(*args):\n    return None\n{ATTACKS[what]}"
            return f"Here it is:\n```python\n{body}```"
        return self.gen.get(text, self.default)

    def __call__(self, batch: list[list[dict[str, str]]]) -> list[str]:
        _log(self.log, batch)
        return [self.answer(c) for c in batch]


def judge_rating(prompt: str) -> int | None:
    """The rating RubricJudge gives for a rendered prompt (None: it gives none)."""
    answer = re.search(r"ANSWER<<(.*?)>>", prompt, re.DOTALL)
    reference = re.search(r"REFERENCE<<(.*?)>>", prompt, re.DOTALL)
    a = answer.group(1) if answer else ""
    r = reference.group(1) if reference else ""
    if "UNRATABLE" in a:
        return None
    words = {w.lower() for w in re.findall(r"\w+", r)}
    score = 8 if words & {w.lower() for w in re.findall(r"\w+", a)} else 3
    return score + (1 if "BONUS" in prompt else 0)


class RubricJudge:
    def __init__(self, log: str) -> None:
        self.log = log

    def __call__(self, batch: list[list[dict[str, str]]]) -> list[str]:
        _log(self.log, batch)
        out = []
        for conversation in batch:
            rating = judge_rating(conversation[-1]["content"])
            out.append("I cannot tell." if rating is None else f"Fine answer. Rating: [[{rating}]]")
        return out


def _length_scorer() -> type:
    from bridges.scoring import Metric, Score, Scorer, scorer

    @scorer("answer_chars")
    class AnswerChars(Scorer):
        """A user's scorer: the answer's length in characters (lower is better)."""

        def metrics(self) -> list[Metric]:
            return [Metric("answer_chars", 1.0, higher_is_better=False)]

        def score(self, items: list) -> list[Score]:
            return [Score({"answer_chars": float(len(i.outputs[0]))}) for i in items]

    return AnswerChars


AnswerChars = _length_scorer()

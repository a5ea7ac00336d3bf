"""A deterministic `python` model for the lm-eval normalisation test (target `_lm_eval_models:NoisyKeyModel`)."""

from __future__ import annotations

from typing import Any

from bridges.datasets import McqSample, QaSample
from bridges.testing import AnswerKeyModel


class NoisyKeyModel(AnswerKeyModel):
    """The answer key's answers, dressed the way real models answer.

    qa: the LAST acceptable answer, upper-cased inside spaces and a full stop ("  OTTAWA.  "), or
    followed by an ideographic full stop when not ASCII ("北京。"). mcq: "(B) Mercury" instead of "B".
    Wrong answers (`wrong_ids`) stay wrong.
    """

    def _key(self, s: Any, scored: bool) -> tuple[str, str]:
        question, answer = super()._key(s, scored)
        if isinstance(s, QaSample) and answer in s.answers:
            last = s.answers[-1]
            answer = f"  {last.upper()}.  " if last.isascii() else f"{last}。"
        elif isinstance(s, McqSample):
            answer = f"({answer}) {s.choices[s.letters.index(answer)]}"
        return question, answer

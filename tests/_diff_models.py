"""A `python` model whose answer depends on how the framework asks (target `tests._diff_models:...`)."""

from __future__ import annotations

from typing import Any

from bridges.testing import AnswerKeyModel


class WordyModel(AnswerKeyModel):
    """Answers from the key, bare after a prompt ending in "Answer:" (a completion-style prompt, as
    lm-eval's mcq template writes it), else in a sentence: "The answer is B." / "The answer is Paris."."""

    def __call__(self, batch: list[Any]) -> list[str]:
        out = []
        for item, answer in zip(batch, super().__call__(batch), strict=True):
            last = item if isinstance(item, str) else item[-1]["content"]
            out.append(answer if last.rstrip().endswith("Answer:") or not answer else f"The answer is {answer}.")
        return out

"""A `python` model that answers with a hash of the exact conversation it received (tests/test_parity.py)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from bridges.testing import AnswerKeyModel


def conversation_hash(conversation: Any) -> str:
    """Role and content of every turn, in order (a prompt string is hashed as itself)."""
    return "h" + hashlib.sha256(json.dumps(conversation, ensure_ascii=False).encode()).hexdigest()[:16]


def hash_model(batch: list[Any]) -> list[str]:
    return [conversation_hash(item) for item in batch]


class MixedModel(AnswerKeyModel):
    """Answers from the key (wrong on `wrong_ids`), in a sentence ("The answer is Rome.") when the question
    contains one of `sentence_for`: a deterministic model whose right answers depend on the scoring rule."""

    def __init__(self, datasets: list[str], wrong_ids: list[str], sentence_for: list[str]) -> None:
        super().__init__(datasets, wrong_ids)
        self.sentence_for = sentence_for

    def __call__(self, batch: list[Any]) -> list[str]:
        out = []
        for item, answer in zip(batch, super().__call__(batch), strict=True):
            last = item if isinstance(item, str) else item[-1]["content"]
            out.append(f"The answer is {answer}." if any(w in last for w in self.sentence_for) else answer)
        return out

"""A `python` model that answers a short check prompt but raises on real questions (tests/test_openai_evals.py).

It passes benchbridge's one-prompt check before a run, so its failure happens where a real model's
would: inside the framework, on the samples.
"""

from __future__ import annotations

from typing import Any


class CrashOnQuestions:
    def __call__(self, batch: list[Any]) -> list[str]:
        if any("?" in str(item) for item in batch):
            raise RuntimeError("CrashOnQuestions: this model cannot answer questions")
        return ["OK"] * len(batch)

"""Reference-overlap scorers: ROUGE-1/2/L (rouge-score) and BLEU/chrF (sacrebleu), Chinese-aware.

ROUGE's own tokenizer keeps only `[a-z0-9]` runs, so a Chinese answer would have no tokens at all: text
with CJK characters is cut into words by jieba (lower-cased, punctuation and spaces dropped), other text
by rouge-score's default tokenizer. BLEU/chrF use sacrebleu's sentence scores, with its `zh` tokenizer
when the answer or a reference has CJK characters and `13a` otherwise. With several references, ROUGE
takes the best reference per sample (rouge-score's `score_multi`), BLEU/chrF use them all.
"""

from __future__ import annotations

import functools
import logging
import re
import warnings
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from bridges.scoring._base import Item, Metric, Score, Scorer

_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_WORD = re.compile(r"\w", re.UNICODE)


@functools.cache
def _jieba() -> Any:
    """jieba, quiet: its import warns about pkg_resources and its first cut logs the dictionary build."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import jieba  # type: ignore[import-untyped]
    jieba.setLogLevel(logging.WARNING)
    return jieba


def has_cjk(text: str) -> bool:
    return bool(_CJK.search(text))


class ChineseAwareTokenizer:
    """rouge-score tokenizer: jieba words for text with CJK characters, rouge-score's default otherwise."""

    name = "jieba for CJK text, rouge-score default otherwise"

    def __init__(self) -> None:
        from rouge_score.tokenizers import DefaultTokenizer  # type: ignore[import-untyped]

        self._default = DefaultTokenizer(use_stemmer=False)

    def tokenize(self, text: str) -> list[str]:
        if not has_cjk(text):
            return list(self._default.tokenize(text))
        return [w.lower() for w in _jieba().lcut(text) if _WORD.search(w)]


class RougeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    variants: list[Literal["rouge1", "rouge2", "rougeL"]] = ["rouge1", "rouge2", "rougeL"]


class Rouge(Scorer):
    name: ClassVar[str] = "rouge"
    Options: ClassVar[type[BaseModel]] = RougeOptions

    def metrics(self) -> list[Metric]:
        out = []
        for v in self.options.variants:  # type: ignore[attr-defined]
            for part in ("f", "p", "r"):
                out.append(Metric(f"{v}_{part}", 1.0, True, primary=(v == "rougeL" and part == "f")))
        return out

    def fingerprint_parts(self) -> dict[str, Any]:
        return {"tokenizer": ChineseAwareTokenizer.name, "jieba": _jieba().__version__}

    def score(self, items: list[Item]) -> list[Score]:
        from rouge_score import rouge_scorer  # type: ignore[import-untyped]

        variants = list(self.options.variants)  # type: ignore[attr-defined]
        rs = rouge_scorer.RougeScorer(variants, tokenizer=ChineseAwareTokenizer())
        out = []
        for item in items:
            answer = item.outputs[0] if item.outputs else ""
            got = rs.score_multi(item.references, answer)
            values: dict[str, float | None] = {}
            for v in variants:
                values[f"{v}_f"], values[f"{v}_p"], values[f"{v}_r"] = (
                    got[v].fmeasure,
                    got[v].precision,
                    got[v].recall,
                )
            out.append(
                Score(values, extra={"tokenizer": "jieba" if has_cjk(answer + "".join(item.references)) else "default"})
            )
        return out


def sacrebleu_tokenizer(answer: str, references: list[str]) -> str:
    return "zh" if has_cjk(answer) or any(has_cjk(r) for r in references) else "13a"


class Bleu(Scorer):
    name: ClassVar[str] = "bleu"

    def metrics(self) -> list[Metric]:
        return [Metric("bleu", 100.0, True)]

    def fingerprint_parts(self) -> dict[str, Any]:
        import sacrebleu

        return {"sacrebleu": sacrebleu.__version__}

    def score(self, items: list[Item]) -> list[Score]:
        import sacrebleu

        out = []
        for item in items:
            answer = item.outputs[0] if item.outputs else ""
            tok = sacrebleu_tokenizer(answer, item.references)
            value = sacrebleu.sentence_bleu(answer, item.references, tokenize=tok).score
            out.append(Score({"bleu": value}, extra={"tokenize": tok}))
        return out


class Chrf(Scorer):
    name: ClassVar[str] = "chrf"

    def metrics(self) -> list[Metric]:
        return [Metric("chrf", 100.0, True)]

    def fingerprint_parts(self) -> dict[str, Any]:
        import sacrebleu

        return {"sacrebleu": sacrebleu.__version__}

    def score(self, items: list[Item]) -> list[Score]:
        import sacrebleu

        return [
            Score({"chrf": sacrebleu.sentence_chrf(item.outputs[0] if item.outputs else "", item.references).score})
            for item in items
        ]

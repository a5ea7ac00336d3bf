"""Deterministic and tiny models for tests, benchmarks and demos (no downloads).

- `AnswerKeyModel`: a `python` model that answers from a dataset's own key, so every framework's
  accuracy is known in advance. It finds which sample a prompt asks about by the sample's question
  text (the last one in the prompt, since few-shot prompts carry earlier questions too).
- `build_tiny_model`: a random 2-layer Qwen2 with a byte-level BPE tokenizer, built in seconds.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from bridges.datasets import McqSample, OpenSample, QaSample, load_dataset


class AnswerKeyModel:
    """Answers mcq with the key's letter and qa with the first acceptable answer.

    Samples whose id is in `wrong_ids` get a wrong answer (the next letter / "I don't know"), so a
    test can aim at an exact accuracy such as 3 of 4 -> 75.0. Open instructions get `open_answer`
    repeated `open_length` times. A prompt matching no sample gets "".
    """

    def __init__(
        self,
        datasets: list[str],
        wrong_ids: list[str] | None = None,
        open_answer: str = "An answer.",
        open_length: int = 1,
    ) -> None:
        self.wrong = set(wrong_ids or [])
        self.keys: list[tuple[str, str]] = []  # (question text, answer)
        self.open_answer = (open_answer + " ") * open_length
        for path in datasets:
            ds = load_dataset(path)
            for s in [*ds.samples, *ds.fewshot]:
                self.keys.append(self._key(s, s in ds.samples))
        # Longer questions first so one question that contains another still matches itself.
        self.keys.sort(key=lambda k: -len(k[0]))

    def _key(self, s: Any, scored: bool) -> tuple[str, str]:
        wrong = scored and s.id in self.wrong
        if isinstance(s, McqSample):
            letters = s.letters
            answer = letters[(letters.index(s.answer) + 1) % len(letters)] if wrong else s.answer
            return s.question, answer
        if isinstance(s, QaSample):
            return s.question, "I don't know" if wrong else s.answers[0]
        if isinstance(s, OpenSample):
            return s.instruction, self.open_answer.strip()
        raise TypeError(type(s))

    def answer(self, prompt: str) -> str:
        best: tuple[int, str] | None = None
        for question, answer in self.keys:
            pos = prompt.rfind(question)
            if pos >= 0 and (best is None or pos > best[0]):
                best = (pos, answer)
        return best[1] if best else ""

    def __call__(self, batch: list[Any]) -> list[str]:
        out = []
        for item in batch:
            text = item if isinstance(item, str) else "\n".join(m["content"] for m in item if m["role"] != "system")
            out.append(self.answer(text))
        return out


_CORPUS = (
    "The quick brown fox jumps over the lazy dog. Answer: A B C D. "
    "What is the capital of France? Paris. 中国的首都是北京。 1 2 3 4 5 6 7 8 9 0 "
    "Question: Which option is correct? Options: A. yes B. no C. maybe D. never "
)


def build_tiny_model(out_dir: str | os.PathLike[str], *, vocab_size: int = 400, seed: int = 0) -> Path:
    """Writes a tiny random chat model (Qwen2, hidden 64, 2 layers) to `out_dir`; its answers are noise."""
    os.environ.setdefault("USE_TF", "0")
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    out = Path(out_dir)
    if (out / "config.json").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator([_CORPUS] * 50, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        model_input_names=["input_ids", "attention_mask"],
    )
    fast.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    fast.save_pretrained(out)
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(fast),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        bos_token_id=None,
        tie_word_embeddings=True,
    )
    Qwen2ForCausalLM(config).save_pretrained(out)
    return out


class RuleGrader:
    """A deterministic grader for benchbridge's own OpenAI evals grader specs (`bb_fact`, `bb_fact_zh`,
    `bb_closedqa`, `bb_closedqa_zh`), so a model-graded eval has known choice counts and score.

    It reads the expert/reference answer and the submission out of the grading prompt and answers as
    evals' `cot_classify` asks: a line of reasoning, then the verdict alone on the last line. "Same"
    means the submission equals one acceptable answer, ignoring case, spaces and punctuation: fact
    specs get "C" (same facts) or "D" (disagrees), closed-QA specs "Y" or "N". A prompt without the
    labels, or containing one of `abstain_on`, gets `unparsable` (evals counts it as `__invalid__`).
    """

    # label in the spec's prompt -> (verdict when the submission is the same, verdict when not)
    VERDICTS = {
        "[Expert]:": ("C", "D"),
        "[专家答案]：": ("C", "D"),
        "[Reference]:": ("Y", "N"),
        "[参考答案]：": ("Y", "N"),
    }
    SUBMISSION = ("[Submission]:", "[提交答案]：")

    def __init__(self, unparsable: str = "I cannot tell.", abstain_on: list[str] | None = None) -> None:
        self.unparsable = unparsable
        self.abstain_on = list(abstain_on or [])

    @staticmethod
    def _field(prompt: str, label: str) -> str | None:
        start = prompt.find(label)
        if start < 0:
            return None
        rest = prompt[start + len(label) :]
        end = rest.find("\n***")
        return (rest if end < 0 else rest[:end]).strip()

    @staticmethod
    def _normalize(text: str) -> str:
        import unicodedata

        return "".join(c for c in text.casefold() if not c.isspace() and not unicodedata.category(c).startswith("P"))

    def grade(self, prompt: str) -> str:
        import ast

        if any(text in prompt for text in self.abstain_on):
            return self.unparsable
        submission = next((v for v in (self._field(prompt, s) for s in self.SUBMISSION) if v is not None), None)
        for label, (same, different) in self.VERDICTS.items():
            reference = self._field(prompt, label)
            if reference is None or submission is None:
                continue
            acceptable: Any = reference
            if reference.startswith("[") and reference.endswith("]"):
                try:
                    acceptable = ast.literal_eval(reference)  # evals shows a list of answers as Python's repr
                except (ValueError, SyntaxError):
                    acceptable = reference
            answers = acceptable if isinstance(acceptable, list) else [acceptable]
            matched = self._normalize(submission) in {self._normalize(str(a)) for a in answers}
            verdict = same if matched else different
            reason = "matches" if matched else "does not match"
            return f"The submission {reason} the reference answer.\n{verdict}"
        return self.unparsable

    def __call__(self, batch: list[Any]) -> list[str]:
        out = []
        for item in batch:
            text = item if isinstance(item, str) else "\n".join(m["content"] for m in item if m["role"] == "user")
            out.append(self.grade(text))
        return out

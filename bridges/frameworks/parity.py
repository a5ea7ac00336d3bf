"""Prompt parity: one canonical conversation per sample, sent the same way by every framework.

`prompt_mode: parity` (the default; `frameworks.<fw>.prompt_mode` overrides the run config's key) makes
each framework ask the model exactly `conversation(ds, sample)`:

- the dataset's own system message first (a ``qa`` sample's system turn; ``mcq`` has none);
- then the few-shot rows of the dataset (``fewshot.jsonl``; an mcq sample gets those of its subject
  when the dataset has subjects), each as a user turn and an assistant turn with its answer;
- then the question: a ``qa`` sample's turns (several turns flattened as `QaSample.prompt_text`),
  an ``mcq`` sample as ``question``, one ``X. option`` line per choice and ``Answer:``.

The model's ``system_prompt`` is merged by the model layer, once, for every framework
(`bridges.models.with_system_prompt`: the model's system prompt, a blank line, the dataset's system
message, in one system turn). For that reason, and so that one chat template is applied once, every
model is reached through the model layer in parity mode (``hf`` and ``openai`` included), never
through a framework's own HF/OpenAI class. Scoring stays each framework's own.

``native`` keeps each framework's published prompt conventions (its own templates, its own HF and
OpenAI classes, its own system-prompt handling) for users who want numbers comparable to that
framework's published setup, not to the other frameworks.
"""

from __future__ import annotations

from typing import Any, Literal

from bridges.datasets import Dataset, McqSample, QaSample

PromptMode = Literal["parity", "native"]
PROMPT_MODES: tuple[str, ...] = ("parity", "native")
DEFAULT_PROMPT_MODE: PromptMode = "parity"


def mcq_text(sample: McqSample) -> str:
    """The question, one lettered line per option and ``Answer:`` (lm-eval's generation prompt)."""
    options = "".join(f"{letter}. {choice}\n" for letter, choice in zip(sample.letters, sample.choices, strict=True))
    return f"{sample.question.strip()}\n{options}Answer:"


def user_text(sample: McqSample | QaSample) -> str:
    return mcq_text(sample) if isinstance(sample, McqSample) else sample.prompt_text()


def shot_answer(sample: McqSample | QaSample) -> str:
    return sample.answer if isinstance(sample, McqSample) else sample.answers[0]


def system_text(sample: McqSample | QaSample) -> str:
    return sample.system or "" if isinstance(sample, QaSample) else ""


def shots(ds: Dataset, sample: McqSample | QaSample) -> list[McqSample | QaSample]:
    """The few-shot rows a sample gets: all of the dataset's, in file order; of its own subject when
    the dataset has subjects (as lm-eval groups a subject's rows)."""
    rows = [s for s in ds.fewshot if isinstance(s, McqSample | QaSample)]
    if isinstance(sample, McqSample) and ds.subjects():
        subject = sample.subject or "other"
        rows = [s for s in rows if isinstance(s, McqSample) and (s.subject or "other") == subject]
    return rows


def conversation(ds: Dataset, sample: McqSample | QaSample) -> list[dict[str, str]]:
    """The canonical conversation of one sample, before the model's system prompt is merged."""
    messages: list[dict[str, str]] = []
    if system := system_text(sample):
        messages.append({"role": "system", "content": system})
    for shot in shots(ds, sample):
        messages.append({"role": "user", "content": user_text(shot)})
        messages.append({"role": "assistant", "content": shot_answer(shot)})
    messages.append({"role": "user", "content": user_text(sample)})
    return messages


def same_shot_count(ds: Dataset) -> int:
    """The number of few-shot turns every sample of `ds` gets; frameworks that write one template per
    dataset (OpenCompass) need it to be one number."""
    counts = {len(shots(ds, s)) for s in ds.samples if isinstance(s, McqSample | QaSample)}
    if len(counts) > 1:
        from bridges._errors import BenchbridgeError

        raise BenchbridgeError(
            f"dataset {ds.name}: its subjects have different numbers of few-shot rows ({sorted(counts)}); "
            "prompt_mode parity gives every sample of a dataset the same conversation shape in OpenCompass: "
            "give every subject the same number of rows in fewshot.jsonl, or set prompt_mode: native"
        )
    return counts.pop() if counts else 0


def parity_row(ds: Dataset, sample: McqSample | QaSample, n_shots: int) -> dict[str, Any]:
    """The canonical conversation as flat columns (system, q0, a0, ..., question) for OpenCompass."""
    row: dict[str, Any] = {"id": sample.id, "system": system_text(sample)}
    for i, shot in enumerate(shots(ds, sample)[:n_shots]):
        row[f"q{i}"] = user_text(shot)
        row[f"a{i}"] = shot_answer(shot)
    row["question"] = user_text(sample)
    if isinstance(sample, McqSample):  # OpenCompass's option evaluator compares an answer with the option texts
        row.update(zip(sample.letters, sample.choices, strict=True))
    row["answer"] = sample.answer if isinstance(sample, McqSample) else list(sample.answers)
    return row

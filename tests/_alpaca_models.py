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


def build_m_or_m_model(tiny_model: str, out_dir: str) -> str:
    """A copy of the tiny random model whose next token is nearly always `m` or `M`.

    Its own logits decide between them, so the weighted (logprob) judge gets real, prompt-dependent
    log-probabilities for exactly the two tokens it reads. The output head is untied from the input
    embeddings and both tokens' rows are lifted along the direction the last hidden state points in
    (a 2-layer random model's last state barely depends on the prompt).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "m or M?"}], tokenize=False, add_generation_prompt=True
    )
    with torch.no_grad():
        out = model(**tokenizer(text, return_tensors="pt", add_special_tokens=False), output_hidden_states=True)
    direction = out.hidden_states[-1][0, -1]
    direction = direction / direction.norm()
    head = torch.nn.Linear(model.config.hidden_size, model.config.vocab_size, bias=False)
    head.weight.data = model.get_input_embeddings().weight.data.clone()
    for token in ("m", "M"):
        head.weight.data[tokenizer.convert_tokens_to_ids(token)] += 8 * direction
    model.config.tie_word_embeddings = False
    model.lm_head = head
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir

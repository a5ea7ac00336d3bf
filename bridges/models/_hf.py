"""`hf` models: a local Hugging Face folder (or a hub id that is already cached), on CPU or GPU."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from bridges._errors import BenchbridgeError
from bridges.models._loads import note_load
from bridges.models._spec import HFSpec
from bridges.models._types import ChatRequest, ChatResponse, TokenLogprob, cut_at_stops


def check_local_path(path: str, what: str) -> None:
    """A path-looking model reference that does not exist fails now, not after a hub timeout."""
    looks_local = path.startswith((".", "/", "~")) or os.sep in path.strip("/").split("/", 1)[-1]
    if looks_local and not Path(path).expanduser().exists():
        raise BenchbridgeError(
            f"{what}: {path}: model folder not found (point it at local weights; no hub downloads here)"
        )


def fingerprint(spec: HFSpec) -> str:
    """Names, sizes and modification times of the files in the model, tokenizer and adapter folders.

    New weights at the same path make new cache keys, and the model is not loaded to find out.
    """
    h = hashlib.sha256()
    for ref in (spec.path, spec.tokenizer_path, spec.peft_path):
        if not ref:
            continue
        folder = Path(ref).expanduser()
        h.update(f"{ref}\n".encode())
        if folder.is_dir():
            for f in sorted(folder.iterdir()):
                if f.is_file():
                    st = f.stat()
                    h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


class _Weights:
    """One loaded tokenizer and model, shared by every spec naming the same files (a model under two
    system prompts is one model in memory), with a lock: a fast tokenizer raises "Already borrowed" when
    two threads use it at once, and two forward passes at once only fight over the same cores."""

    def __init__(self, tokenizer: Any, model: Any) -> None:
        self.tokenizer = tokenizer
        self.model = model
        self.lock = threading.Lock()


_WEIGHTS: dict[str, _Weights] = {}
_WEIGHTS_LOCK = threading.Lock()


def weights_key(spec: HFSpec) -> str:
    """What the loaded objects depend on; the name, system prompt and generation settings do not count."""
    # The fingerprint: new weights at the same path are loaded afresh, not served from memory.
    parts = [
        spec.path,
        spec.tokenizer_path,
        spec.peft_path,
        spec.tokenizer_kwargs,
        spec.model_kwargs,
        fingerprint(spec),
    ]
    return json.dumps(parts, sort_keys=True, default=str)


def _load(spec: HFSpec) -> _Weights:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.monotonic()
    threads = os.environ.get("OMP_NUM_THREADS", "")
    if threads.isdigit() and int(threads) > 0:
        torch.set_num_threads(int(threads))  # `benchbridge run` shares the cores out between parallel units
    tok_kwargs = {"padding_side": "left", **spec.tokenizer_kwargs}
    tokenizer = AutoTokenizer.from_pretrained(spec.tokenizer_path or spec.path, **tok_kwargs)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model_kwargs: dict[str, Any] = {"dtype": torch.float32, **spec.model_kwargs}
    # Any: a transformers model or, with an adapter, PEFT's wrapper of it; both generate() alike.
    model: Any = AutoModelForCausalLM.from_pretrained(spec.path, **model_kwargs)
    if spec.peft_path:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, spec.peft_path)
    weights = _Weights(tokenizer, model.eval())
    ref = spec.path + (f" + {spec.peft_path}" if spec.peft_path else "")
    note_load("hf", ref, spec.name, started)
    return weights


def shared_weights(spec: HFSpec) -> _Weights:
    """The spec's tokenizer and model, loaded once per process."""
    key = weights_key(spec)
    with _WEIGHTS_LOCK:  # held while loading: a second spec of the same files waits instead of loading again
        if key not in _WEIGHTS:
            _WEIGHTS[key] = _load(spec)
        return _WEIGHTS[key]


# A JSONL file that gets every prompt an hf model generates from, as rendered (chat template applied) and as
# token ids: what the model actually received, to check prompt parity across frameworks.
PROMPT_LOG_ENV = "BENCHBRIDGE_PROMPT_LOG"
_PROMPT_LOG_LOCK = threading.Lock()


def _log_prompts(path: Path, model: str, prompts: list[str], enc: Any) -> None:
    lines = []
    for i, prompt in enumerate(prompts):
        ids = [int(t) for t, keep in zip(enc["input_ids"][i], enc["attention_mask"][i], strict=True) if int(keep)]
        lines.append(json.dumps({"model": model, "prompt": prompt, "input_ids": ids}, ensure_ascii=False) + "\n")
    with _PROMPT_LOG_LOCK, path.open("a", encoding="utf-8") as fh:
        fh.write("".join(lines))


class HFBackend:
    batched = True
    # Generation runs to max_new_tokens (or EOS) whatever the stops, which only cut the text: the layer asks
    # without them, so requests differing only in their stops (lm-eval's `until`) share one generation.
    stops_after_generation = True

    def __init__(self, spec: HFSpec) -> None:
        os.environ.setdefault("USE_TF", "0")  # evals installs tensorflow; importing it costs ~8 s
        import torch

        check_local_path(spec.path, f"model {spec.name}: path")
        self.spec = spec
        self.torch = torch
        self.weights = shared_weights(spec)
        self.tokenizer = self.weights.tokenizer
        self.model = self.weights.model

    def render(self, req: ChatRequest) -> str:
        messages = req.message_dicts()
        if self.spec.chat and getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return "\n\n".join(m["content"] for m in messages)

    def generate(self, requests: list[ChatRequest]) -> list[ChatResponse]:
        with self.weights.lock:
            return self._generate(requests)

    def _generate(self, requests: list[ChatRequest]) -> list[ChatResponse]:
        torch = self.torch
        prompts = [self.render(r) for r in requests]
        enc = self.tokenizer(
            prompts,
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=self.spec.max_seq_len,
            add_special_tokens=not self.spec.chat,
        )
        first = requests[0]
        want_logprobs = any(r.logprobs for r in requests)
        top_k = max((r.top_logprobs for r in requests), default=0)
        sample = bool(first.temperature and first.temperature > 0)
        if first.seed is not None:
            torch.manual_seed(first.seed)
        with torch.no_grad():
            out = self.model.generate(
                **enc,
                max_new_tokens=max(r.max_new_tokens or 1 for r in requests),
                do_sample=sample,
                temperature=first.temperature if sample else None,
                top_p=None,
                top_k=None,
                pad_token_id=self.tokenizer.pad_token_id,
                output_scores=want_logprobs,
                return_dict_in_generate=True,
            )
        prompt_len = enc["input_ids"].shape[1]
        if log := os.environ.get(PROMPT_LOG_ENV):
            _log_prompts(Path(log), self.spec.name, prompts, enc)
        responses = []
        for i, req in enumerate(requests):
            ids = out.sequences[i, prompt_len:]
            ids = ids[: req.max_new_tokens]
            ids_list = [int(t) for t in ids if int(t) != self.tokenizer.pad_token_id]
            if self.tokenizer.eos_token_id in ids_list:
                ids_list = ids_list[: ids_list.index(self.tokenizer.eos_token_id)]
            text = cut_at_stops(self.tokenizer.decode(ids_list, skip_special_tokens=True), req.stop)
            logprobs = None
            if req.logprobs:
                logprobs = []
                for step, token_id in enumerate(ids_list):
                    lp = torch.log_softmax(out.scores[step][i].float(), dim=-1)
                    top = torch.topk(lp, max(req.top_logprobs, 1)) if top_k else None
                    logprobs.append(
                        TokenLogprob(
                            token=self.tokenizer.decode([token_id]),
                            logprob=float(lp[token_id]),
                            top=[
                                (self.tokenizer.decode([int(t)]), float(v))
                                for v, t in zip(top.values, top.indices, strict=True)
                            ]
                            if top is not None
                            else [],
                        )
                    )
            responses.append(
                ChatResponse(
                    text=text,
                    logprobs=logprobs,
                    prompt_tokens=int(enc["attention_mask"][i].sum()),
                    completion_tokens=len(ids_list),
                )
            )
        return responses

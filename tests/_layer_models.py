"""A `python` model that logs every prompt it answers, and a driver that runs the layer in a subprocess.

`CountingModel` appends one line per answered prompt to `log` (one write per batch, after the
answers are computed), so a test can count model calls across processes. With
`$COUNTING_MODEL_KILL_AT_CALL=k` (an environment variable, so that the spec, and with it the
cache key, is the same as the run that resumes) it SIGKILLs its own process when called the
k-th time, before answering: every earlier batch was answered and (the layer writes each
answer before asking the next batch) cached.

`python -m tests._layer_models SPEC_JSON N OUT [SEED]` asks the spec "question 0".."question N-1"
through `get_model(spec).generate` and writes the answer texts to OUT as JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import time
from typing import Any


class CountingModel:
    def __init__(self, log: str, prefix: str = "") -> None:
        self.log = log
        kill = os.environ.get("COUNTING_MODEL_KILL_AT_CALL")
        self.kill_at_call = int(kill) if kill else None
        self.prefix = prefix
        self.calls = 0

    def __call__(self, batch: list[Any]) -> list[str]:
        self.calls += 1
        if self.kill_at_call is not None and self.calls >= self.kill_at_call:
            os.kill(os.getpid(), signal.SIGKILL)
        prompts = [json.dumps(item, sort_keys=True) for item in batch]
        answers = [self.prefix + hashlib.sha256(p.encode()).hexdigest()[:12] for p in prompts]
        _log_prompts(self.log, batch)
        return answers


def read_log(path: str) -> list[str]:
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return f.read().splitlines()


def main(argv: list[str]) -> None:
    from bridges.models import ChatRequest, get_model, parse_model_spec

    spec = parse_model_spec(json.loads(argv[0]))
    n, out = int(argv[1]), argv[2]
    seed = int(argv[3]) if len(argv) > 3 else None
    answers = get_model(spec).generate([ChatRequest((("user", f"question {i}"),), seed=seed) for i in range(n)])
    with open(out, "w", encoding="utf-8") as f:
        json.dump([a.text for a in answers], f)


if __name__ == "__main__":
    main(sys.argv[1:])


def _log_prompts(log: str, batch: list[Any]) -> None:
    with open(log, "a", encoding="utf-8") as f:
        f.write("".join(json.dumps(item, sort_keys=True) + "\n" for item in batch))


class CountingAnswerKeyModel:
    """`bridges.testing.AnswerKeyModel` that also logs every prompt it answers (benchmarks/model_layer.py).

    `delay_s` per prompt stands in for a remote model's time, so a benchmark shows what a cache hit saves.
    """

    def __init__(self, log: str, delay_s: float = 0.0, **kwargs: Any) -> None:
        from bridges.testing import AnswerKeyModel

        self.log = log
        self.delay_s = delay_s
        self.model = AnswerKeyModel(**kwargs)

    def __call__(self, batch: list[Any]) -> list[str]:
        time.sleep(self.delay_s * len(batch))
        answers = self.model(batch)
        _log_prompts(self.log, batch)
        return answers


class CountingLongerJudge:
    """`tests._alpaca_models.LongerJudge` that also logs every prompt it judges."""

    def __init__(self, log: str, **kwargs: Any) -> None:
        from tests._alpaca_models import LongerJudge

        self.log = log
        self.judge = LongerJudge(**kwargs)

    def __call__(self, batch: list[Any]) -> list[str]:
        answers = self.judge(batch)
        _log_prompts(self.log, batch)
        return answers

"""pass@k: each generated program run against the problem's tests in the sandbox (bridges/scoring/sandbox.py).

n answers per problem (the `scoring` framework's `samples_per_problem`), c of them passing every test;
pass@k = 1 - C(n-c, k) / C(n, k), the unbiased estimator of Chen et al. 2021 ("Evaluating Large
Language Models Trained on Code"), averaged over problems. k > n is refused (it cannot be estimated).
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from math import comb
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from bridges._errors import BenchbridgeError
from bridges.scoring._base import Item, Metric, Score, Scorer
from bridges.scoring.sandbox import Limits, network_isolated, run_test, runs_as_own_uid

_FENCE = re.compile(r"```(?:python|py|Python)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for n samples of which c pass (Chen et al. 2021): 1 - C(n-c, k) / C(n, k), in exact
    integer arithmetic (the paper's product form rounds: 0.3999... for n=5, c=2, k=1)."""
    if k > n:
        raise ValueError(f"k={k} > n={n}")
    return float(1 - Fraction(comb(n - c, k), comb(n, k)))


def program_of(answer: str, prompt: str, entry_point: str) -> str:
    """The code to run: a fenced block if the answer has one; the answer alone when it defines the entry
    point itself; else the answer as the continuation of the prompt (HumanEval-style completion)."""
    m = _FENCE.search(answer)
    code = m.group(1) if m else answer
    if re.search(rf"^\s*def\s+{re.escape(entry_point)}\s*\(", code, re.MULTILINE):
        # The prompt's imports may be needed: keep its lines before the def.
        head = prompt.split(f"def {entry_point}", 1)[0]
        return head + code
    return prompt + code


class PassAtKOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    k: list[int] = Field(default_factory=lambda: [1, 3], min_length=1)
    timeout_s: float = Field(5.0, gt=0)  # per test, wall clock
    memory_mb: int = Field(1024, ge=64)
    output_kb: int = Field(256, ge=1)
    workers: int = Field(2, ge=1)


class PassAtK(Scorer):
    name: ClassVar[str] = "pass_at_k"
    kinds: ClassVar[frozenset[str]] = frozenset({"code"})
    Options: ClassVar[type[BaseModel]] = PassAtKOptions

    def metrics(self) -> list[Metric]:
        return [Metric(f"pass@{k}", 1.0, True) for k in sorted(set(self.options.k))]  # type: ignore[attr-defined]

    def fingerprint_parts(self) -> dict[str, Any]:
        parts: dict[str, Any] = {"network_namespace": network_isolated()}
        if runs_as_own_uid():  # benchbridge is root: tests run as an unprivileged uid (a new sandbox, new identity)
            parts["own_uid"] = True
        return parts

    def score(self, items: list[Item]) -> list[Score]:
        opts: PassAtKOptions = self.options  # type: ignore[assignment]
        limits = Limits(
            timeout_s=opts.timeout_s,
            cpu_s=max(1, int(opts.timeout_s) + 1),
            memory_mb=opts.memory_mb,
            output_kb=opts.output_kb,
        )
        for item in items:
            if max(opts.k) > len(item.outputs):
                raise BenchbridgeError(
                    f"{self.key}.k: pass@{max(opts.k)} needs at least {max(opts.k)} answers per problem, "
                    f"{item.sample_id} has {len(item.outputs)}; raise samples_per_problem or lower k"
                )
        jobs: list[tuple[int, int, int, str]] = []  # item, answer, test, program
        for i, item in enumerate(items):
            code = item.code or {}
            for a, answer in enumerate(item.outputs):
                program = program_of(answer, code["prompt"], code["entry_point"])
                for t, test in enumerate(code["tests"]):
                    jobs.append((i, a, t, f"{program}\n\n{code.get('setup', '')}\n\n{test}\n"))
        with ThreadPoolExecutor(opts.workers) as pool:
            results = list(pool.map(lambda job: run_test(job[3], limits), jobs))
        outcome: dict[tuple[int, int], list[str | None]] = {}
        for (i, a, _t, _), res in zip(jobs, results, strict=True):
            outcome.setdefault((i, a), []).append(None if res.passed else res.reason)
        out = []
        for i, item in enumerate(items):
            per_answer = [outcome.get((i, a), []) for a in range(len(item.outputs))]
            passed = [all(r is None for r in reasons) for reasons in per_answer]
            n, c = len(passed), sum(passed)
            values: dict[str, float | None] = {f"pass@{k}": pass_at_k(n, c, k) for k in sorted(set(opts.k))}
            failures = [next((r for r in reasons if r), "") for reasons in per_answer]
            out.append(Score(values, extra={"n": n, "c": c, "passed": passed, "failures": failures}))
        return out

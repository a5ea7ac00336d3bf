"""A `python` model of fixed latency for the executor tests and benchmark: answers from a dataset's key
(`AnswerKeyModel`) after sleeping `latency_s` per prompt (CPU-light), and appends every prompt it is
asked to `log` (one JSON line each: prompt, process), so a test counts what was asked, and how often.

With `gate` set, a model stops before its answer number `stall_after + 1` until the file `gate` exists: a
test that kills a node while its units are held there knows they were mid-run, however loaded the machine.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from bridges.testing import AnswerKeyModel


class SlowKeyModel(AnswerKeyModel):
    def __init__(
        self,
        datasets: list[str],
        log: str,
        latency_s: float = 0.1,
        tag: str = "",
        gate: str = "",
        stall_after: int = 0,
        **kw: Any,
    ) -> None:
        super().__init__(datasets, **kw)
        self.log = log
        self.tag = tag  # which config model this is: the same question asked of two models is two answers
        self.latency_s = latency_s
        self.gate = gate
        self.stall_after = stall_after
        self.answered = 0

    def __call__(self, batch: list[Any]) -> list[str]:
        out = []
        for item in batch:
            if self.gate and self.answered >= self.stall_after:
                self.wait_for_gate()
            time.sleep(self.latency_s)
            out.extend(super().__call__([item]))
            # One write per line with O_APPEND: lines from processes on every node interleave whole.
            entry = {"tag": self.tag, "prompt": json.dumps(item, sort_keys=True), "pid": os.getpid(), "node": _node()}
            line = json.dumps(entry) + "\n"
            fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)
            self.answered += 1
        return out

    def wait_for_gate(self) -> None:
        deadline = time.monotonic() + 300
        while not os.path.exists(self.gate):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.gate} was not created in 300 s")
            time.sleep(0.05)


def _node() -> str:
    """The Ray node this answer was given on ("" outside a Ray worker)."""
    try:
        import ray
    except ImportError:
        return ""
    return str(ray.get_runtime_context().get_node_id()) if ray.is_initialized() else ""

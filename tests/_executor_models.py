"""A `python` model of fixed latency for the executor tests and benchmark: answers from a dataset's key
(`AnswerKeyModel`) after sleeping `latency_s` per prompt (CPU-light), and appends every prompt it is
asked to `log` (one JSON line each: prompt, process), so a test counts what was asked, and how often."""

from __future__ import annotations

import json
import os
import time
from typing import Any

from bridges.testing import AnswerKeyModel


class SlowKeyModel(AnswerKeyModel):
    def __init__(self, datasets: list[str], log: str, latency_s: float = 0.1, tag: str = "", **kw: Any) -> None:
        super().__init__(datasets, **kw)
        self.log = log
        self.tag = tag  # which config model this is: the same question asked of two models is two answers
        self.latency_s = latency_s

    def __call__(self, batch: list[Any]) -> list[str]:
        out = []
        for item in batch:
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
        return out


def _node() -> str:
    """The Ray node this answer was given on ("" outside a Ray worker)."""
    try:
        import ray
    except ImportError:
        return ""
    return str(ray.get_runtime_context().get_node_id()) if ray.is_initialized() else ""

"""lm-eval's `log_samples` output -> `Sample` rows.

`simple_evaluate(..., log_samples=True)` gives, per task, one JSON line per (document, filter):
``doc_id``, ``doc`` (ours carry the canonical ``id``), ``arguments`` (the requests exactly as sent:
``gen_args_<i>.arg_0`` is the rendered context, few-shot and chat template included; ``arg_1`` the
generation settings or, for loglikelihood, the continuation scored), ``resps`` (raw answers),
``filtered_resps`` (after the task's filter), ``target``, ``filter`` and one value per metric.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from bridges.frameworks._samples import model_messages
from bridges.records import Sample


def record_metric(metric: str, filter_name: str) -> str:
    """The metric name a record (and so a board cell) of lm-eval's `metric,filter` result key carries."""
    return metric if filter_name == "none" else f"{metric},{filter_name}"


def _input(context: Any) -> tuple[str | None, list[dict[str, Any]] | None]:
    """A context our `python` model got as JSON chat messages is sent as those messages; else the text."""
    if isinstance(context, list) and len(context) == 1:  # API models log the chat as a one-item list
        context = context[0]
    if isinstance(context, str) and context.startswith("[{"):
        try:
            messages = json.loads(context)
        except json.JSONDecodeError:
            return context, None
        if isinstance(messages, list) and all(isinstance(m, dict) and "role" in m for m in messages):
            return None, messages
    return (None if context is None else str(context)), None


def _number(value: Any) -> float | None:
    """A logged number: lm-eval writes numpy values through str() ("-12.1", "False") and plain ones as is."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        if value in ("True", "False"):
            return float(value == "True")
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def _references(line: dict[str, Any], choices: list[str] | None) -> list[str]:
    doc = line.get("doc") or {}
    if isinstance(doc.get("answers"), list):  # our qa documents: every acceptable answer
        return [str(a) for a in doc["answers"]]
    target = line.get("target")
    if choices and isinstance(target, int | str) and str(target).isdigit() and int(target) < len(choices):
        return [choices[int(target)]]  # multiple_choice: the target is the key's index (logged as a string)
    if isinstance(target, list):
        return [str(t) for t in target]
    return [] if target is None else [str(target)]


def _one(line: dict[str, Any]) -> dict[str, Any]:
    """The per-document fields of one logged line (what was sent, answered and extracted)."""
    logged = (line.get("arguments") or {}).items()
    # gen_args_<i> in request order (by number: gen_args_10 comes after gen_args_9).
    args = [a for k, a in sorted(logged, key=lambda kv: int(re.sub(r"\D", "", kv[0]) or 0))]
    context = args[0].get("arg_0") if args and isinstance(args[0], dict) else None
    prompt, messages = _input(context)
    resps = line.get("resps") or []
    filtered = line.get("filtered_resps")
    continuations = [a.get("arg_1") for a in args if isinstance(a, dict)]
    if continuations and all(isinstance(c, str) for c in continuations):  # loglikelihood: one request per choice
        choices = [c.strip() for c in continuations if isinstance(c, str)]
        lls = [_number(r[0][0]) if r and isinstance(r[0], list | tuple) and r[0] else None for r in resps]
        numbers = [x for x in lls if x is not None]
        best = lls.index(max(numbers)) if numbers else None  # acc's choice: the likeliest, the first of ties
        return {
            "prompt": prompt,
            "messages": messages,
            "choices": choices,
            "output": json.dumps(lls),
            "extracted": None if best is None else choices[best],
        }
    output = resps[0][0] if resps and isinstance(resps[0], list) and resps[0] else None
    extracted = filtered[0] if isinstance(filtered, list) and filtered else filtered
    return {
        "prompt": prompt,
        "messages": messages,
        "choices": None,
        "output": None if output is None else str(output),
        "extracted": None if extracted is None else str(extracted),
    }


def read_samples(
    path: Path,
    *,
    run_id: str,
    model: str,
    benchmark: str,
    subset: str,
    metrics: list[str],
    layer_system_prompt: str | None = None,
) -> list[Sample]:
    """One task's samples file -> one Sample per document, with each filter's metrics as the record
    metric names (`metric` or `metric,filter`); only the `metrics` lm-eval aggregated are kept."""
    by_doc: dict[Any, dict[str, Any]] = {}
    with path.open(encoding="utf-8") as fh:
        for text in fh:
            if not text.strip():
                continue
            line = json.loads(text)
            entry = by_doc.get(line.get("doc_id"))
            if entry is None:
                entry = by_doc[line.get("doc_id")] = {"line": line, "scores": {}, "filters": {}}
            filter_name = line.get("filter", "none")
            for metric in line.get("metrics") or []:
                name = record_metric(metric, filter_name)
                if name in metrics:
                    entry["scores"][name] = _number(line.get(metric))
            entry["filters"][filter_name] = line.get("filtered_resps")
    samples = []
    for doc_id, entry in by_doc.items():
        line = entry["line"]
        doc = line.get("doc") or {}
        extra: dict[str, Any] = {"doc_id": doc_id, "filter": line.get("filter")}
        sent = _one(line)
        if sent["messages"] is not None and layer_system_prompt:  # our python model: the layer adds it
            extra["lm_eval_messages"] = sent["messages"]
            sent["messages"] = model_messages(sent["messages"], layer_system_prompt)
        if len(entry["filters"]) > 1:
            extra["filtered_resps"] = entry["filters"]
        samples.append(
            Sample(
                run_id=run_id,
                model=model,
                framework="lm_eval",
                benchmark=benchmark,
                subset=subset,
                sample_id=str(doc["id"]) if doc.get("id") is not None else str(doc_id),
                **sent,
                references=_references(line, sent["choices"]),
                scores=entry["scores"],
                group=str(doc.get("subject") or subset) or None,
                extra=extra,
            )
        )
    return samples

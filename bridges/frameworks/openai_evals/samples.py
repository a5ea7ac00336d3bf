"""OpenAI evals record JSONL -> `Sample` rows.

An `oaieval` record file holds, per sample (`sample_id` = `<eval>.<index>`, the index into the eval's
`samples.jsonl`), events in order: `sampling` (the model's prompt as sent and what it sampled; for a
model-graded eval a second `sampling`, the grader's prompt and its answer), then `match` (`correct`,
`expected`, `picked`) and/or `metrics` (FuzzyMatch: `accuracy`, `f1_score`; model-graded: `choice`,
`score`). One eval is one scoring method of a dataset, so the samples of one model on one dataset
gather every method's scores under the record metric names (`<method>_<key>`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from bridges.frameworks._samples import model_messages
from bridges.records import Judgement, Sample

INVALID_CHOICE = "__invalid__"  # evals' choice when the grader's answer matched no choice string


def sample_rows(rows: list[dict[str, Any]]) -> list[tuple[str, list[str]]]:
    """(canonical id, ideal answers) of evals samples (`{"input", "ideal", "id"}`), in their order."""
    out = []
    for i, row in enumerate(rows):
        ideal = row.get("ideal")
        out.append((str(row.get("id", i)), [str(x) for x in ideal] if isinstance(ideal, list) else [str(ideal)]))
    return out


def dataset_rows(samples_jsonl: Path) -> list[tuple[str, list[str]]]:
    """(canonical id, ideal answers) of each row of the evals data file we wrote, in its order (evals
    names samples by their index in it)."""
    with samples_jsonl.open(encoding="utf-8") as fh:
        return sample_rows([json.loads(line) for line in fh if line.strip()])


def metric_name(method: str, key: str) -> str:
    return f"{method}_{re.sub(r'[^A-Za-z0-9_]', '_', key)}"


def _events(path: Path) -> dict[str, list[dict[str, Any]]]:
    """The record's per-sample events by sample id, in the order written (a cut last line is skipped)."""
    by_sample: dict[str, list[dict[str, Any]]] = {}
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a killed process
            if event.get("sample_id") is not None and "type" in event:
                by_sample.setdefault(str(event["sample_id"]), []).append(event)
    for events in by_sample.values():
        events.sort(key=lambda e: e.get("event_id", 0))
    return by_sample


def _text(sampled: Any) -> str | None:
    if isinstance(sampled, list):
        return None if not sampled else str(sampled[0])
    return None if sampled is None else str(sampled)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float) and value == value:  # NaN != NaN
        return float(value)
    return None


def method_samples(path: Path, method: str, grader: str | None) -> dict[int, dict[str, Any]]:
    """One eval's record file -> {sample index: what the model was sent and answered, and the scores}."""
    out: dict[int, dict[str, Any]] = {}
    for sample_id, events in _events(path).items():
        index = sample_id.rsplit(".", 1)[-1]
        if not index.isdigit():
            continue
        samplings = [e["data"] for e in events if e["type"] == "sampling"]
        asked = samplings[0] if samplings else {}
        entry: dict[str, Any] = {"prompt": asked.get("prompt"), "output": _text(asked.get("sampled")), "scores": {}}
        for event in events:
            data = event.get("data") or {}
            if event["type"] == "match":
                entry["scores"].setdefault(metric_name(method, "accuracy"), _number(data.get("correct")))
                entry["picked"] = data.get("picked")
                entry["expected"] = data.get("expected")
            elif event["type"] == "metrics":
                for key, value in data.items():
                    if key == "choice":
                        entry["choice"] = value
                    elif _number(value) is not None or value is None:
                        entry["scores"][metric_name(method, key)] = _number(value)
        if grader is not None and len(samplings) > 1:
            entry["judge"] = Judgement(
                model=grader, verdict=entry.get("choice"), reasoning=_text(samplings[-1].get("sampled"))
            )
            entry["judge_prompt"] = samplings[-1].get("prompt")
        entry["invalid"] = entry.get("choice") == INVALID_CHOICE
        out[int(index)] = entry
    return out


def _prompt(prompt: Any) -> tuple[str | None, list[dict[str, Any]] | None]:
    if isinstance(prompt, list) and all(isinstance(m, dict) for m in prompt):
        return None, prompt
    return (None if prompt is None else str(prompt)), None


def merge(
    per_method: dict[str, dict[int, dict[str, Any]]],
    rows: list[tuple[str, list[str]]],
    *,
    run_id: str,
    model: str,
    benchmark: str,
    system_prompt: str | None = None,
) -> list[Sample]:
    """One Sample per dataset sample, every method's scores together; the first method's exchange is
    the sample's prompt/output, each method's own (output, picked, choice) is kept in `extra`."""
    indices = sorted({i for entries in per_method.values() for i in entries})
    samples = []
    for i in indices:
        found = {m: entries[i] for m, entries in per_method.items() if i in entries}
        first = next(iter(found.values()))
        prompt, sent = _prompt(first["prompt"])
        messages = None if sent is None else model_messages(sent, system_prompt)
        scores: dict[str, float | None] = {}
        for entry in found.values():
            scores.update(entry["scores"])
        judged = [e for e in found.values() if e.get("judge") is not None]
        sample_id, references = rows[i] if i < len(rows) else (str(i), [])
        samples.append(
            Sample(
                run_id=run_id,
                model=model,
                framework="openai_evals",
                benchmark=benchmark,
                sample_id=sample_id,
                prompt=prompt,
                messages=messages,
                output=first["output"],
                # evals extracts nothing: Match/Includes/FuzzyMatch compare the sampled text as is.
                extracted=first["output"],
                references=references,
                scores=scores,
                invalid=any(e["invalid"] for e in found.values()),
                judge=judged[0]["judge"] if judged else None,
                extra={
                    "evals_index": i,
                    **({"evals_prompt": sent} if messages != sent else {}),  # as evals passed it, before the layer
                    "methods": {
                        m: {
                            k: v.model_dump() if k == "judge" else v
                            for k, v in e.items()
                            if k not in ("prompt", "scores", "invalid") and not (k == "output" and v == first["output"])
                        }
                        for m, e in found.items()
                    },
                },
            )
        )
    return samples

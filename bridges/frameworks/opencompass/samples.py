"""OpenCompass's own per-sample output -> `Sample` rows.

Per (model, dataset abbr) OpenCompass writes `predictions/<model>/<abbr>.json` (``{"0": {origin_prompt,
prediction, gold}, ...}``: what was sent and answered) and `results/<model>/<abbr>.json` (the metric and
``details``: per sample the evaluator's ``pred`` (EMEvaluator: after its normalisation), ``parsed``
where a postprocessor extracted an answer, ``answer``/``refr`` and ``correct``). Both are in the
dataset's order, so index i is row i of the dataset file (our `data/<abbr>.jsonl` carries the
canonical ids; a built-in dataset's samples are named by their index).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bridges.frameworks._samples import model_messages
from bridges.records import Sample

# OpenCompass's meta-template roles -> the chat roles a chat model receives them as.
ROLES = {"SYSTEM": "system", "HUMAN": "user", "BOT": "assistant"}


def _numbered(data: Any) -> list[Any]:
    """OpenCompass writes per-sample entries as a list, or as a dict of numbered keys (plus e.g. 'type')."""
    if isinstance(data, list):
        return data
    if isinstance(data, dict):
        return [data[k] for k in sorted((k for k in data if str(k).isdigit()), key=int)]
    return []


def _first(value: Any) -> Any:
    """Per-sample fields hold one entry per repeat (n=1: a one-item list); the first is the one scored."""
    return value[0] if isinstance(value, list) and value else value


def _texts(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        return [t for v in value for t in _texts(v)]
    return [str(value)]


def _score(correct: Any) -> float | None:
    if isinstance(correct, bool):
        return float(correct)
    if isinstance(correct, list) and correct and all(isinstance(c, bool) for c in correct):
        return sum(correct) / len(correct)  # the share of repeats scored right; one repeat: 0 or 1
    return None


def _prompt(origin: Any) -> tuple[str | None, list[dict[str, Any]] | None]:
    """origin_prompt: a string (base models) or a list of role turns (chat models: sent as messages)."""
    if isinstance(origin, list):
        return None, [{"role": ROLES.get(t.get("role"), t.get("role")), "content": t.get("prompt")} for t in origin]
    return (None if origin is None else str(origin)), None


def _ids(data_file: Path) -> list[str] | None:
    """The canonical ids of our dataset file, in its order; None when it is not ours (a built-in)."""
    if not data_file.is_file():
        return None
    with data_file.open(encoding="utf-8") as fh:
        return [str(json.loads(line)["id"]) for line in fh if line.strip()]


def dataset_samples(
    work: Path,
    data_dir: Path,
    model: str,
    ds: dict[str, Any],
    metric: str,
    run_id: str,
    layer_system_prompt: str | None = None,
    dataset_ids: list[str] | None = None,
) -> list[Sample]:
    """The samples of one model on one dataset abbr; [] when OpenCompass wrote no predictions for it.
    `layer_system_prompt`: the system prompt benchbridge's model layer adds (a model OpenCompass calls
    through `BenchbridgeModel`), so the sample's messages are those the model got. `dataset_ids`: the
    config's dataset ids in order, for a run folder without its data file (ours are written in that order)."""
    abbr = ds["abbr"]
    pred_path = work / "predictions" / model / f"{abbr}.json"
    if not pred_path.is_file():
        return []
    predictions = _numbered(json.loads(pred_path.read_text(encoding="utf-8")))
    results_path = work / "results" / model / f"{abbr}.json"
    details: list[Any] = []
    if results_path.is_file():
        details = _numbered(json.loads(results_path.read_text(encoding="utf-8")).get("details"))
    ids = _ids(data_dir / f"{abbr}.jsonl") or dataset_ids
    samples = []
    for i, pred in enumerate(predictions):
        detail = details[i] if i < len(details) and isinstance(details[i], dict) else {}
        prompt, messages = _prompt(pred.get("origin_prompt"))
        output = pred.get("prediction")
        output = None if output is None else str(_first(output))
        extra: dict[str, Any] = {"example_abbr": detail.get("example_abbr", f"{abbr}_{i}")}
        if messages is not None and layer_system_prompt:
            extra["opencompass_messages"] = messages
            messages = model_messages(messages, layer_system_prompt)
        correct = detail.get("correct", detail.get("is_correct"))
        if correct is None and "predictions" in detail and "references" in detail:
            # HF-style AccEvaluator (C-Eval's) details carry the postprocessed prediction and reference but
            # no per-sample flag; its accuracy is their equality, so that is the sample's score.
            correct = detail["predictions"] == detail["references"]
            extra["score_from"] = "predictions == references"
        if "parsed" in detail:  # a postprocessor's extraction (e.g. the option letter)
            extracted = _first(detail["parsed"])
        elif "predictions" in detail:
            extracted = _first(detail["predictions"])
        elif metric == "exact_match":
            # EMEvaluator scores the whole prediction; its normalisation (case, articles, punctuation)
            # is the metric's, kept beside it, so a diff can tell normalisation from extraction.
            extracted = output
            extra["normalised"] = _first(detail.get("pred"))
        else:
            extracted = _first(detail.get("pred", output))
        # The gold as the dataset has it (EMEvaluator's details list a set of normalised variants).
        gold = pred.get("gold")
        references = _texts(gold) or _texts(detail.get("refr", detail.get("answer", detail.get("references"))))
        subset = ds.get("subset", "")
        samples.append(
            Sample(
                run_id=run_id,
                model=model,
                framework="opencompass",
                benchmark=ds["benchmark"],
                subset=subset,
                sample_id=ids[i] if ids is not None and i < len(ids) else str(i),
                prompt=prompt,
                messages=messages,
                output=output,
                extracted=None if extracted is None else str(extracted),
                references=list(dict.fromkeys(references)),
                scores={metric: _score(correct)},
                group=subset or None,
                extra=extra,
            )
        )
    return samples

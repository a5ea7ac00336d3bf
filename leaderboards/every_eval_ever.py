"""Every Eval Ever export: one JSON per evaluation run (run id x framework x model), schema 0.3.0,
and beside it the run's stored samples as instance-level JSONL (one line per sample and metric).

Every stored record of the run is exported (the history, not only what the board shows); a
failed record has no score, so it is counted and quoted in `eval_library.additional_details`
instead. Each document and line is validated against the bundled schemas (`schemas/SOURCE.md`).

Validation is exact but shared: what the schemas constrain is the keys, the JSON types, and the
values of a few properties (enums, consts, patterns, bounds), so a document whose "shape" (those,
with every other string or number replaced by its type) was already found valid is valid too. A
board of 500 models x 40 columns has 4,000 documents of a handful of shapes: validating each with
jsonschema took 40 s.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

from bridges.records import Record
from leaderboards.board import Board, all_invalid, invalid_counts

SCHEMA_FILE = Path(__file__).parent / "schemas" / "every_eval_ever.eval.schema.json"
INSTANCE_SCHEMA_FILE = Path(__file__).parent / "schemas" / "every_eval_ever.instance_level_eval.schema.json"
# How each framework turns an output into the answer it scores (EEE's answer_attribution.extraction_method)
EXTRACTION = {
    "opencompass": "opencompass postprocessor",
    "lm_eval": "lm-eval filters",
    "openai_evals": "evals match",
    "alpaca_eval": "llm_judge",
}
SCHEMA_VERSION = "0.3.0"
# (deployment_type, model_availability, inference_platform) per model kind
KIND_INFO = {
    "hf": ("self_deployed", "open_weights", "local transformers"),
    "openai": ("externally_managed", "unknown", "OpenAI-compatible API"),
    "python": ("self_deployed", "unknown", "python callable"),
}
METRIC_KINDS = {"acc": "accuracy", "accuracy": "accuracy", "exact_match": "accuracy", "win_rate": "win_rate"}
_HF_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# One encoder for every document and line: `json.dumps(..., ensure_ascii=False)` builds a new one per
# call, which was a fifth of the cost of a line on 400,000 instance-level lines.
JSON = json.JSONEncoder(ensure_ascii=False)


@functools.cache
def schema(path: Path = SCHEMA_FILE) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


@functools.cache
def _validator(path: Path) -> Any:
    from jsonschema import Draft7Validator

    return Draft7Validator(schema(path))


@functools.cache
def _valued(path: Path) -> frozenset[str]:
    """Property names whose values a schema constrains beyond their type (enum, const, pattern, bounds)."""
    names: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, sub in (node.get("properties") or {}).items():
                if isinstance(sub, dict) and {"enum", "const", "pattern", "minimum", "maximum"} & set(sub):
                    names.add(key)
            for sub in node.values():
                walk(sub)
        elif isinstance(node, list):
            for sub in node:
                walk(sub)

    walk(schema(path))
    return frozenset(names)


def _shape(value: Any, valued: frozenset[str], key: str = "", memo: dict[int, Any] | None = None) -> Any:
    """What the schema can tell apart in `value` (see the module docstring); lists keep their distinct
    item shapes and whether they are empty, one or more (minItems). Keys keep their order: the same
    document with its keys in another order is merely validated once more. `memo`: the shapes of
    dicts that documents share, by identity (None until walked once; a dict's shape does not depend on
    its key); valid only while those dicts live. Other dicts are walked each time (remembering every
    dict cost more than it saved)."""
    if isinstance(value, dict):
        if memo is not None and id(value) in memo:
            found = memo[id(value)]
            if found is None:
                found = memo[id(value)] = tuple([(k, _shape(v, valued, k, memo)) for k, v in value.items()])
            return found
        return tuple([(k, _shape(v, valued, k, memo)) for k, v in value.items()])
    if isinstance(value, list):
        return ("[]", min(len(value), 2), tuple(dict.fromkeys([_shape(v, valued, key, memo) for v in value])))
    if key in valued or isinstance(value, bool) or value is None:
        return (type(value), value)
    return type(value)


_VALID_SHAPES: dict[Path, set[Any]] = {}


def validate(
    document: dict[str, Any],
    name: str = "document",
    schema_file: Path = SCHEMA_FILE,
    shape: Any = None,
    memo: dict[int, Any] | None = None,
) -> None:
    """Raises ValueError naming the first place where `document` breaks the schema. `shape`: the
    document's shape when the caller knows it more cheaply (see `instance_rows`); `memo`: see `_shape`."""
    shape = _shape(document, _valued(schema_file), memo=memo) if shape is None else ("given", shape)
    known = _VALID_SHAPES.setdefault(schema_file, set())
    if shape in known:
        return
    errors = sorted(_validator(schema_file).iter_errors(document), key=lambda e: list(e.absolute_path))
    if errors:
        where = "/".join(str(p) for p in errors[0].absolute_path) or "(top)"
        raise ValueError(f"{name}: Every Eval Ever schema: {where}: {errors[0].message}")
    known.add(shape)


def _strings(mapping: dict[str, Any]) -> dict[str, str]:
    """The schema's additional_details hold strings only; None values are left out."""
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in mapping.items() if v is not None}


def _epoch(iso: str | None) -> str | None:
    if not iso:
        return None
    try:
        return str(int(datetime.fromisoformat(iso).timestamp()))
    except ValueError:
        return None


def model_info(name: str, spec: dict[str, Any] | None) -> dict[str, Any]:
    """The schema's model_info from a model spec as stored in a manifest (names of keys, never values)."""
    spec = spec or {}
    kind = str(spec.get("kind", "unknown"))
    deployment, availability, platform = KIND_INFO.get(kind, ("unknown", "unknown", kind))
    path = str(spec.get("path", ""))
    model_ids = {
        "hf": path if _HF_ID.match(path) else f"local/{name}",
        "openai": str(spec.get("model", name)),
        "python": f"python/{spec.get('target', name)}",
    }
    return {
        "name": name,
        "id": model_ids.get(kind, f"benchbridge/{name}"),
        "inference_platform": platform,
        "additional_details": {
            "deployment_type": deployment,
            "model_availability": availability,
            **_strings({"kind": kind, "system_prompt": spec.get("system_prompt"), "path": path or None}),
        },
    }


def _source_data(benchmark: str, card: dict[str, Any] | None, content_hash: str | None) -> dict[str, Any]:
    card = card or {}
    details = _strings(
        {
            "content_sha256": content_hash,
            "kind": card.get("kind"),
            "language": card.get("language"),
            "license": card.get("license"),
            "source": card.get("source") or None,
        }
    )
    source = str(card.get("source") or "")
    if source.startswith(("http://", "https://")):
        return {"dataset_name": benchmark, "source_type": "url", "url": [source], "additional_details": details}
    return {"dataset_name": benchmark, "source_type": "other", "additional_details": details}


def _result(
    record: Record, manifest: dict[str, Any], shared: dict[Any, Any] | None = None, memo: dict[int, Any] | None = None
) -> dict[str, Any]:
    """One evaluation result. `shared`: the parts already made for other records of one `documents`
    call (a column's metric and dataset are the same for its 500 models), reused as they are; each
    new one is entered in `memo` (see `_shape`) so that its shape is walked once."""
    shared = {} if shared is None else shared
    name = f"{record.benchmark}:{record.subset}" if record.subset else record.benchmark
    card = (manifest.get("dataset_cards") or {}).get(record.benchmark)
    judge_of = (str(record.extra.get("judge_model")), str(record.extra.get("judge_prompt"))) if record.judge else None
    part = (id(manifest), record.framework, record.benchmark, record.subset, record.metric, record.judge, judge_of)
    config_key = ("metric_config", *part, record.scale, record.higher_is_better, record.primary)
    source_key = ("source_data", id(manifest), record.benchmark)
    if config_key not in shared:
        shared[config_key] = _metric_config(record, manifest, name, card)
        if memo is not None:
            memo[id(shared[config_key])] = None
    if source_key not in shared:
        content_hash = (manifest.get("datasets") or {}).get(record.benchmark)
        shared[source_key] = _source_data(record.benchmark, card, content_hash)
        shared[("manifest", id(manifest))] = manifest  # kept alive: its id stays its own in these keys
        if memo is not None:
            memo[id(shared[source_key])] = None
    uncertainty: dict[str, Any] = {}
    if record.stderr is not None:
        uncertainty["standard_error"] = {"value": record.stderr, "method": "reported by the framework"}
    if record.n_samples is not None:
        uncertainty["num_samples"] = record.n_samples
    score: dict[str, Any] = {
        "score": record.value,
        "details": _strings(
            {
                "value_0_100": f"{record.value_100:.6g}",
                "details_path": record.details_path,
                "invalid_grades": _invalid(record),
            }
        ),
    }
    if uncertainty:
        score["uncertainty"] = uncertainty
    if memo is not None:
        # A record's fields have their types by construction (a `Record`, `_strings`), so its score's
        # shape is which parts it has and the types of value, stderr and n: walked once per such kind.
        kind = ("score_shape", type(record.value), tuple(score["details"]), type(record.stderr), type(record.n_samples))
        if kind not in shared:
            shared[kind] = _shape(score, _valued(SCHEMA_FILE))
        memo[id(score)] = shared[kind]
        shared[("score", id(score))] = score  # kept alive with `shared` (see `documents`)
    return {
        "evaluation_result_id": _result_id(record.benchmark, record.subset, record.metric, record.judge),
        "evaluation_name": name,
        "source_data": shared[source_key],
        "evaluation_timestamp": record.time,
        "metric_config": shared[config_key],
        "score_details": score,
    }


def _metric_config(record: Record, manifest: dict[str, Any], name: str, card: dict[str, Any] | None) -> dict[str, Any]:
    metric_config: dict[str, Any] = {
        "evaluation_description": (card or {}).get("description") or f"{name} run by {record.framework}",
        "metric_id": record.metric,
        "metric_name": record.metric,
        "metric_kind": METRIC_KINDS.get(record.metric, record.metric),
        "metric_unit": "proportion" if record.scale == 1 else "percent",
        "lower_is_better": not record.higher_is_better,
        "score_type": "continuous",
        "min_score": 0,
        "max_score": record.scale,
        "additional_details": _strings({"primary": str(record.primary).lower()}),
    }
    if record.judge:
        judge = str(record.extra.get("judge_model") or record.judge)  # the model, not the board's label
        metric_config["llm_scoring"] = {
            "judges": [{"model_info": model_info(judge, _spec(manifest, judge))}],
            "input_prompt": str(record.extra.get("judge_prompt") or f"the {record.framework} judge's own prompt"),
        }
    return metric_config


def _invalid(record: Record) -> str | None:
    """`invalid/graded` when a judge's grades were invalid (`all` of them: the score measures nothing)."""
    counts = invalid_counts(record)
    if counts is None:
        return None
    text = f"{counts[0]}/{counts[1]}" if counts[1] else str(counts[0])
    return f"{text} (all: not a score)" if all_invalid(record) else text


def _spec(manifest: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((m for m in manifest.get("models") or [] if m.get("name") == name), None)


def _result_id(benchmark: str, subset: str, metric: str, judge: str | None) -> str:
    name = f"{benchmark}:{subset}" if subset else benchmark
    return f"{name}/{metric}" + (f"@{judge}" if judge else "")


INVALID_ERROR = "the framework could not parse the answer or the grade"


class LinePart(NamedTuple):
    """What one instance-level line is made of: a stored sample (as a dict), its input as sent, its
    references, the line's metadata, the result it scores, the score and the sample's hash."""

    s: dict[str, Any]
    raw: str
    references: list[str]
    metadata: dict[str, str]
    result_id: str
    score: float
    digest: str


def _row(document: dict[str, Any], part: LinePart) -> dict[str, Any]:
    """One instance-level line as a document: what the schema validates, and what `_line` must encode
    to exactly."""
    s, raw, references, metadata, result_id, score, digest = part
    subset = s.get("subset", "")
    return {
        "schema_version": SCHEMA_VERSION,
        "evaluation_id": document["evaluation_id"],
        "model_id": document["model_info"]["id"],
        "evaluation_name": f"{s['benchmark']}:{subset}" if subset else s["benchmark"],
        "evaluation_result_id": result_id,
        "sample_id": str(s["sample_id"]),
        "sample_hash": digest,
        "interaction_type": "single_turn",
        "input": {
            "raw": raw,
            "formatted": None,  # the rendered prompt is `raw` already; messages are in metadata
            "reference": references,
            "choices": s.get("choices"),
        },
        "output": {"raw": [s.get("output") or ""]},
        "answer_attribution": [
            {
                "turn_idx": 0,
                "source": "output.raw",
                "extracted_value": str(s.get("extracted") or ""),
                "extraction_method": "llm_judge" if s.get("judge") else EXTRACTION.get(s["framework"], "custom"),
                "is_terminal": True,
            }
        ],
        "evaluation": {"score": score, "is_correct": score >= 1.0},
        "error": INVALID_ERROR if s.get("invalid") else None,
        "metadata": metadata,
    }


_ENC = json.encoder.encode_basestring  # a str as JSON, like JSON does (C)


def _float(value: float) -> str:
    return float.__repr__(value) if math.isfinite(value) else JSON.encode(value)  # NaN, Infinity as json writes them


def _line(head: str, part: LinePart) -> str:
    """`JSON.encode(_row(...))` written directly (a third of the time on 400,000 lines): `head` is the
    document's first three members. `instance_rows` checks the two agree on every new shape of line."""
    s, raw, references, metadata, result_id, score, digest = part
    subset = s.get("subset", "")
    name = f"{s['benchmark']}:{subset}" if subset else s["benchmark"]
    choices = s.get("choices")
    method = "llm_judge" if s.get("judge") else EXTRACTION.get(s["framework"], "custom")
    meta = ", ".join([f"{_ENC(k)}: {_ENC(v)}" for k, v in metadata.items()])
    return (
        f'{head}"evaluation_name": {_ENC(name)}, "evaluation_result_id": {_ENC(result_id)}, '
        f'"sample_id": {_ENC(str(s["sample_id"]))}, "sample_hash": "{digest}", "interaction_type": "single_turn", '
        f'"input": {{"raw": {_ENC(raw)}, "formatted": null, "reference": [{", ".join(map(_ENC, references))}], '
        f'"choices": {"null" if choices is None else JSON.encode(choices)}}}, '
        f'"output": {{"raw": [{_ENC(s.get("output") or "")}]}}, '
        f'"answer_attribution": [{{"turn_idx": 0, "source": "output.raw", '
        f'"extracted_value": {_ENC(str(s.get("extracted") or ""))}, "extraction_method": {_ENC(method)}, '
        f'"is_terminal": true}}], "evaluation": {{"score": {_float(score)}, '
        f'"is_correct": {"true" if score >= 1.0 else "false"}}}, '
        f'"error": {_ENC(INVALID_ERROR) if s.get("invalid") else "null"}, "metadata": {{{meta}}}}}'
    )


def instance_rows(document: dict[str, Any], records: list[Record], samples: list[dict[str, Any]]) -> list[str]:
    """The instance-level JSONL lines of one aggregate document: one per stored sample and per metric
    of it that the run's records report (their `evaluation_result_id`), each validated."""
    judges = {(r.benchmark, r.subset, r.metric): r.judge for r in records if r.status == "ok"}
    head = (
        f'{{"schema_version": {_ENC(SCHEMA_VERSION)}, "evaluation_id": {_ENC(document["evaluation_id"])}, '
        f'"model_id": {_ENC(document["model_info"]["id"])}, '
    )
    known = _VALID_SHAPES.setdefault(INSTANCE_SCHEMA_FILE, set())
    lines = []
    for s in samples:
        subset = s.get("subset", "")
        messages = s.get("messages")
        raw = s.get("prompt")
        if raw is None:
            raw = "\n".join(f"{m.get('role', '')}: {m.get('content', '')}" for m in messages or [])
        references = [str(r) for r in s.get("references") or []]
        judge = s.get("judge") or {}
        metadata = _strings(
            {
                "framework": s["framework"],
                "run_id": s["run_id"],
                "group": s.get("group"),
                "invalid": "true" if s.get("invalid") else None,
                "messages": messages,
                "judge_model": judge.get("model"),
                "judge_verdict": judge.get("verdict"),
                "judge_reasoning": judge.get("reasoning"),
            }
        )
        digest = ""
        for metric, value in (s.get("scores") or {}).items():
            key = (s["benchmark"], subset, metric)
            if value is None or key not in judges:
                continue
            digest = digest or hashlib.sha256((raw + "\0" + "\0".join(references)).encode()).hexdigest()
            score, result_id = float(value), _result_id(s["benchmark"], subset, metric, judges[key])
            part = LinePart(s, raw, references, metadata, result_id, score, digest)
            line = _line(head, part)
            # Every value here has the type the schema wants by construction (a `Sample`'s typed fields,
            # str() where not), so a line's shape is which optional parts it has: 400,000 lines are
            # validated in a few jsonschema calls instead of walking each (16 s).
            shape = (tuple(metadata), s.get("choices") is None, bool(references), bool(s.get("invalid")))
            if ("given", shape) not in known:
                row = _row(document, part)
                name = f"{document['evaluation_id']} sample {s['sample_id']}"
                validate(row, name, INSTANCE_SCHEMA_FILE, shape)
                if line != JSON.encode(row):
                    raise ValueError(f"{name}: the instance-level line differs from its validated document")
            lines.append(line)
    return lines


def samples_by_run(board: Board) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    """The board's store's samples by (run id, framework, model): none for a board built from records."""
    found: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    if board.store is None:
        return found
    for s in board.store.sample_dicts():
        found.setdefault((s["run_id"], s["framework"], s["model"]), []).append(s)
    return found


def documents(board: Board, organization: str = "benchbridge") -> list[tuple[str, dict[str, Any]]]:
    """(file name, document) per evaluation run in the board's records, each validated."""
    groups: dict[tuple[str, str, str], list[Record]] = {}
    for record in board.records:
        groups.setdefault((record.run_id, record.framework, record.model), []).append(record)
    out = []
    shared: dict[Any, Any] = {}  # results' common parts (see `_result`)
    memo: dict[int, Any] = {}  # their shapes, walked once (see `_shape`): `shared` keeps them alive
    for (run_id, framework, model), records in groups.items():
        manifest = board.manifest(records[0]) or {}
        finished = manifest.get("finished") or max(r.time for r in records)
        failed = [r for r in records if r.status == "failed"]
        document = {
            "schema_version": SCHEMA_VERSION,
            "evaluation_id": f"{framework}/{model}/{run_id}",
            "evaluation_timestamp": manifest.get("started") or min(r.time for r in records),
            "retrieved_timestamp": _epoch(finished) or finished,
            "source_metadata": {
                "source_name": board.title,
                "source_type": "evaluation_run",
                "source_organization_name": organization,
                "evaluator_relationship": "third_party",
                "additional_details": _strings(
                    {"tool": "benchbridge", "config_name": manifest.get("config_name"), "run_id": run_id}
                ),
            },
            "model_info": model_info(model, _spec(manifest, model)),
            "eval_library": {
                "name": framework,
                "version": records[0].framework_version or "unknown",
                "additional_details": _strings(
                    {
                        "config_hash": records[0].config_hash or None,
                        "git_commit": manifest.get("git_commit"),
                        "seed": manifest.get("seed"),
                        "packages": manifest.get("packages"),
                        "failed_results": str(len(failed)),
                        "failures": "; ".join(
                            f"{r.benchmark}{':' + r.subset if r.subset else ''}: {(r.error or '').strip()[:300]}"
                            for r in failed
                        )
                        or None,
                    }
                ),
            },
            "evaluation_results": [
                _result(r, manifest, shared, memo) for r in records if r.status == "ok" and r.value is not None
            ],
        }
        stem = re.sub(r"[^A-Za-z0-9_.@+-]", "_", f"{run_id}__{framework}__{model}")
        digest = hashlib.sha256(f"{run_id}\0{framework}\0{model}".encode()).hexdigest()[:8]
        name = f"{stem}-{digest}.json"
        validate(document, name, memo=memo)
        out.append((name, document))
    return out


def instance_files(
    board: Board,
    docs: list[tuple[str, dict[str, Any]]],
    by_run: dict[tuple[str, str, str], list[dict[str, Any]]] | None = None,
) -> Iterator[tuple[str, str]]:
    """(file name, JSONL text) of the stored samples of each aggregate document that has some: the
    document's name with `.samples.jsonl` for `.json`, one at a time (a store's samples can be
    hundreds of MB of JSONL). `by_run`: `samples_by_run(board)`, when the caller read it already."""
    if by_run is None:
        by_run = samples_by_run(board)
    if not by_run:
        return
    records: dict[tuple[str, str, str], list[Record]] = {}
    for r in board.records:
        records.setdefault((r.run_id, r.framework, r.model), []).append(r)
    for name, document in docs:
        key = (
            document["source_metadata"]["additional_details"]["run_id"],
            document["eval_library"]["name"],
            document["model_info"]["name"],
        )
        lines = instance_rows(document, records.get(key, []), by_run.get(key, []))
        if lines:
            yield name.removesuffix(".json") + ".samples.jsonl", "\n".join(lines) + "\n"

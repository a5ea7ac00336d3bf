"""Every Eval Ever export: one JSON per evaluation run (run id x framework x model), schema 0.3.0.

Every stored record of the run is exported (the history, not only what the board shows); a
failed record has no score, so it is counted and quoted in `eval_library.additional_details`
instead. Each document is validated against the bundled schema (`schemas/SOURCE.md`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from bridges._records import Record
from leaderboards.board import Board, all_invalid, invalid_counts

SCHEMA_FILE = Path(__file__).parent / "schemas" / "every_eval_ever.eval.schema.json"
SCHEMA_VERSION = "0.3.0"
# (deployment_type, model_availability, inference_platform) per model kind
KIND_INFO = {
    "hf": ("self_deployed", "open_weights", "local transformers"),
    "openai": ("externally_managed", "unknown", "OpenAI-compatible API"),
    "python": ("self_deployed", "unknown", "python callable"),
}
METRIC_KINDS = {"acc": "accuracy", "accuracy": "accuracy", "exact_match": "accuracy", "win_rate": "win_rate"}
_HF_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@functools.cache
def schema() -> dict[str, Any]:
    return json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))


def validate(document: dict[str, Any], name: str = "document") -> None:
    """Raises ValueError naming the first place where `document` breaks the schema."""
    from jsonschema import Draft7Validator

    errors = sorted(Draft7Validator(schema()).iter_errors(document), key=lambda e: list(e.absolute_path))
    if errors:
        where = "/".join(str(p) for p in errors[0].absolute_path) or "(top)"
        raise ValueError(f"{name}: Every Eval Ever schema: {where}: {errors[0].message}")


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


def _result(record: Record, manifest: dict[str, Any]) -> dict[str, Any]:
    name = f"{record.benchmark}:{record.subset}" if record.subset else record.benchmark
    card = (manifest.get("dataset_cards") or {}).get(record.benchmark)
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
    return {
        "evaluation_result_id": f"{name}/{record.metric}" + (f"@{record.judge}" if record.judge else ""),
        "evaluation_name": name,
        "source_data": _source_data(record.benchmark, card, (manifest.get("datasets") or {}).get(record.benchmark)),
        "evaluation_timestamp": record.time,
        "metric_config": metric_config,
        "score_details": score,
    }


def _invalid(record: Record) -> str | None:
    """`invalid/graded` when a judge's grades were invalid (`all` of them: the score measures nothing)."""
    counts = invalid_counts(record)
    if counts is None:
        return None
    text = f"{counts[0]}/{counts[1]}" if counts[1] else str(counts[0])
    return f"{text} (all: not a score)" if all_invalid(record) else text


def _spec(manifest: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((m for m in manifest.get("models") or [] if m.get("name") == name), None)


def documents(board: Board, organization: str = "benchbridge") -> list[tuple[str, dict[str, Any]]]:
    """(file name, document) per evaluation run in the board's records, each validated."""
    groups: dict[tuple[str, str, str], list[Record]] = {}
    for record in board.records:
        groups.setdefault((record.run_id, record.framework, record.model), []).append(record)
    out = []
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
            "evaluation_results": [_result(r, manifest) for r in records if r.status == "ok" and r.value is not None],
        }
        stem = re.sub(r"[^A-Za-z0-9_.@+-]", "_", f"{run_id}__{framework}__{model}")
        digest = hashlib.sha256(f"{run_id}\0{framework}\0{model}".encode()).hexdigest()[:8]
        name = f"{stem}-{digest}.json"
        validate(document, name)
        out.append((name, document))
    return out

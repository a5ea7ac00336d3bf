"""Importing a whole OpenAI evals registry: every samples file its evals use becomes a canonical dataset.

A team's registry keeps ``evals/*.yaml`` (evals with ``args.samples_jsonl``, relative to
``<registry>/data/``, and alias entries ``name: {id: name.dev.v0}``), ``eval_sets/*.yaml``
(``set: {evals: [names or patterns]}``) and ``data/``. Each samples file referenced by an eval is
imported once; its card records which evals (and their classes and grader specs) and which eval
sets used it, as tags (``openai-evals:eval=...``, ``openai-evals:set=...``) and in the description.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridges._errors import BenchbridgeError
from bridges._files import read_yaml
from bridges.datasets._format import Dataset


@dataclass
class SamplesUse:
    """Where one samples file is used in the registry."""

    rel: str  # as written in samples_jsonl
    path: Path
    evals: list[tuple[str, str, str | None]] = field(default_factory=list)  # (eval, class, modelgraded spec)
    sets: list[str] = field(default_factory=list)


def _load_entries(folder: Path) -> dict[str, tuple[Path, Any]]:
    entries: dict[str, tuple[Path, Any]] = {}
    if not folder.is_dir():
        return entries
    for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
        data = read_yaml(path, "registry file").data
        if data is None:
            continue
        if not isinstance(data, dict):
            raise BenchbridgeError(f"{path}: expected a mapping of name -> spec")
        for name, spec in data.items():
            if name in entries:
                raise BenchbridgeError(f"{path}: {name}: duplicate entry (also in {entries[name][0]})")
            entries[str(name)] = (path, spec)
    return entries


def _alias_target(spec: Any) -> str | None:
    if isinstance(spec, str):
        return spec
    if isinstance(spec, dict) and "id" in spec and "class" not in spec:
        return str(spec["id"])
    return None


def _pattern(pattern: str) -> re.Pattern[str]:
    """evals' eval-set patterns: `.` literal, `*` any run of characters."""
    return re.compile("^" + re.escape(pattern).replace(r"\*", ".*") + "$")


def _dataset_name(rel: str) -> str:
    """`boolq/samples.jsonl` -> boolq; `wsc/dev.jsonl` -> wsc-dev; `x.jsonl` -> x."""
    p = Path(rel)
    parent = p.parent.name
    raw = parent if parent and p.stem == "samples" else "-".join(x for x in (parent, p.stem) if x)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", raw).strip("_.-") or "dataset"
    return name if name[0].isalnum() else f"d{name}"


def registry_uses(root: Path) -> list[SamplesUse]:
    """Every samples file the registry's evals reference, with the evals and eval sets using it."""
    evals_dir = root / "evals"
    if not evals_dir.is_dir():
        raise BenchbridgeError(
            f"{root}: not an OpenAI evals registry (expected {evals_dir}/*.yaml, eval_sets/ and data/)"
        )
    evals = _load_entries(evals_dir)
    uses: dict[Path, SamplesUse] = {}
    for name, (path, spec) in evals.items():
        if not isinstance(spec, dict) or "class" not in spec:
            continue  # an alias (`name: {id: ...}`) or base-eval metadata
        args = spec.get("args") or {}
        rel = args.get("samples_jsonl")
        if rel is None:
            continue  # an eval that makes its own samples
        if not isinstance(rel, str):
            raise BenchbridgeError(f"{path}: {name}.args.samples_jsonl: expected a path, got {rel!r}")
        samples = Path(rel) if Path(rel).is_absolute() else root / "data" / rel
        # A registry is often someone else's: it may name only files inside itself.
        if not samples.resolve().is_relative_to(root.resolve()):
            raise BenchbridgeError(
                f"{path}: {name}.args.samples_jsonl: {rel} is outside the registry {root}; "
                "copy the file under its data/ folder"
            )
        if not samples.is_file():
            raise BenchbridgeError(
                f"{path}: {name}.args.samples_jsonl: {rel} not found (looked for {samples}; "
                f"samples_jsonl is relative to {root / 'data'})"
            )
        use = uses.setdefault(samples.resolve(), SamplesUse(rel, samples))
        use.evals.append((name, str(spec["class"]), args.get("modelgraded_spec")))
    if not uses:
        raise BenchbridgeError(f"{evals_dir}: no eval names a samples_jsonl; nothing to import")

    # Names that lead to an eval: itself and every alias chain ending at it.
    aliases = {n: t for n, (_, s) in evals.items() if (t := _alias_target(s)) is not None}

    def resolve(name: str) -> str:
        seen = set()
        while name in aliases and name not in seen:
            seen.add(name)
            name = aliases[name]
        return name

    names_for: dict[str, set[str]] = {}
    for n in evals:
        names_for.setdefault(resolve(n), set()).add(n)
    for set_name, (path, spec) in _load_entries(root / "eval_sets").items():
        patterns = spec.get("evals") if isinstance(spec, dict) else None
        if not isinstance(patterns, list):
            raise BenchbridgeError(f"{path}: {set_name}.evals: expected a list of eval names")
        regexps = [_pattern(str(p)) for p in patterns]
        for use in uses.values():
            refs = set().union(*(names_for.get(e, {e}) for e, _, _ in use.evals))
            if any(rx.match(r) for rx in regexps for r in refs):
                use.sets.append(set_name)
    return list(uses.values())


def import_registry(root: Path, read_samples: Callable[..., Dataset], **options: Any) -> list[Dataset]:
    """One canonical dataset per samples file; `read_samples(path, name, **options)` reads one file."""
    datasets: list[Dataset] = []
    taken: set[str] = set()
    for use in registry_uses(root):
        name = base = _dataset_name(use.rel)
        i = 2
        while name in taken:
            name, i = f"{base}-{i}", i + 1
        taken.add(name)
        eval_names = [e for e, _, _ in use.evals]
        described = ", ".join(f"{e} ({cls}{f', spec {spec}' if spec else ''})" for e, cls, spec in use.evals)
        sets = f"; eval sets: {', '.join(use.sets)}" if use.sets else ""
        card_options = {
            **options,
            "description": options.get("description")
            or f"Imported from the OpenAI evals registry {root.name}: data/{use.rel}, used by evals {described}{sets}.",
            "tags": [
                *options.get("tags", []),
                "openai-evals",
                *(f"openai-evals:eval={e}" for e in eval_names),
                *(f"openai-evals:set={s}" for s in use.sets),
            ],
        }
        ds = read_samples(use.path, name, **card_options)
        ds.card = ds.card.model_copy(update={"source": f"OpenAI evals registry {root.resolve()}: data/{use.rel}"})
        datasets.append(ds)
    return datasets

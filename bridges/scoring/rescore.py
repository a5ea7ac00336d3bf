"""`benchbridge rescore CONFIG --scorer NAME`: score stored answers again, without asking the evaluated models.

The answers come from the results store: the per-sample rows of each model's latest `scoring` run on
each dataset (every answer of a code problem is kept in the row's `extra.outputs`). Only the named
scorers run (a judge asks its judge model through the model layer); their records and sample rows are
stored as a new run of the `scoring` framework, so the board's other columns keep their values and the
rescored columns show the new ones, each record naming its scorer identity (`name/version+hash` of the
options, rubric file, model folder) in `framework_version` and `extra.scorer`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bridges._config import LoadedConfig
from bridges._errors import BenchbridgeError
from bridges.records import Record, now_iso


@dataclass
class RescoreOutcome:
    run_id: str
    db: Path
    records: list[Record] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # model/dataset pairs with no stored answers

    @property
    def ok(self) -> bool:
        return all(r.status == "ok" for r in self.records)


def rescore(
    config: LoadedConfig, scorers: Sequence[str], progress: Callable[[str], None] = lambda m: None
) -> RescoreOutcome:
    """Scores the latest stored `scoring` answers with `scorers` (names configured under
    frameworks.scoring.scorers) and stores the result as a new run."""
    from bridges._runner import check_run_paths, manifest, new_run_id
    from bridges.frameworks import RunContext
    from bridges.models import configure_cache
    from bridges.scoring.bridge import ScoringBridge, items_from, records_and_samples, score_items
    from leaderboards.store import ResultsStore

    if "scoring" not in config.cfg.frameworks:
        raise BenchbridgeError(f"{config.path}: frameworks.scoring: not configured; rescore scores its stored answers")
    if not scorers:
        raise BenchbridgeError("--scorer: name at least one scorer to run")
    run_id = new_run_id()
    check_run_paths(config)
    config.materialize_models()  # a built-in judge gets its folder before the judge scorer takes its spec
    ctx = RunContext(config=config, run_id=run_id, config_hash=config.config_hash(), progress=progress)
    bridge = ScoringBridge(ctx, only_scorers=scorers)  # checks names and options before anything runs
    if not config.results_db.exists():
        raise BenchbridgeError(f"{config.results_db}: no results store yet; run `benchbridge run {config.path}` first")
    store = ResultsStore(config.results_db).open()
    # The latest run that scored each model on each dataset (a rescore run too: its rows keep the answers).
    latest: dict[tuple[str, str], str] = {}
    for r in store.history(framework="scoring", status="ok", config_name=config.name):  # oldest first
        latest[(r.model, r.benchmark)] = r.run_id
    configure_cache(config.cache_path, enabled=config.cfg.cache.enabled, session=run_id)
    started = now_iso()
    outcome = RescoreOutcome(run_id, config.results_db)
    samples = []
    for spec in bridge.models:
        for ds in bridge.datasets:
            source = latest.get((spec.name, ds.name))
            if source is None:
                outcome.skipped.append(f"{spec.name} on {ds.name}")
                continue
            stored = store.samples(framework="scoring", model=spec.name, benchmark=ds.name, run_id=source)
            outputs = {
                s.sample_id: list(s.extra.get("outputs") or ([s.output] if s.output is not None else []))
                for s in stored
            }
            items = items_from(ds, outputs)
            progress(f"[rescore] {spec.name} on {ds.name}: {len(items)} stored answers from run {source}")
            scores, errors = score_items(bridge.scorers, items)
            recs, smps = records_and_samples(
                bridge, bridge.scorers, spec.name, ds.name, items, scores, errors, getattr(spec, "system_prompt", None)
            )
            for r in recs:
                r.extra["rescored_from"] = source
            outcome.records += recs
            samples += smps
    if not outcome.records:
        raise BenchbridgeError(
            f"{config.results_db}: no stored scoring answers for {', '.join(outcome.skipped)}; "
            f"run `benchbridge run {config.path} --only scoring` first"
        )
    status = "ok" if outcome.ok else "failed"
    error = None if outcome.ok else "; ".join(sorted({(r.error or "")[:300] for r in outcome.records if r.error}))
    doc = manifest(config, bridge, run_id, started, status, error)
    doc["rescored"] = {"scorers": [sc.identity() for sc in bridge.scorers], "from_runs": sorted(set(latest.values()))}
    store.add_run(doc, outcome.records, samples)
    return outcome

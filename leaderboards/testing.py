"""A realistic board's worth of records and manifests, for tests and for trying the board or publish
commands without running a framework (`sample_store(path)`).

Four frameworks as their bridges report them (OpenCompass in 0-100, the others in 0-1), three
models, C-Eval subjects as subsets, a judged AlpacaEval column, reruns, and failures: a framework
that failed as a whole, a failed subject, a failure that a later rerun fixed, and a success that a
later rerun failed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from bridges._records import Record, failure
from leaderboards.store import ResultsStore

VERSIONS = {"opencompass": "0.5.4", "lm_eval": "0.4.13", "openai_evals": "3.0.1.post1", "alpaca_eval": "0.6.6"}
MODELS = ("smollm2-135m", "smollm2-135m@tuned", "tiny-random")
CARDS = {
    "mcq_science_en": {"name": "mcq_science_en", "kind": "mcq", "language": "en", "license": "CC-BY-4.0"},
    "ceval_mini": {"name": "ceval_mini", "kind": "mcq", "language": "zh", "license": "CC-BY-4.0"},
    "qa_capitals": {"name": "qa_capitals", "kind": "qa", "language": "en", "license": "CC-BY-4.0"},
    "qa_zh": {"name": "qa_zh", "kind": "qa", "language": "zh", "license": "CC-BY-4.0"},
    "open_instructions": {"name": "open_instructions", "kind": "open", "language": "en", "license": "CC-BY-4.0"},
}
JUDGE = "smollm2-judge"


def sample_record(
    run_id: str, time: str, framework: str, model: str, benchmark: str, metric: str, value: float, **kw: Any
) -> Record:
    """A successful record as `framework`'s bridge writes it (its scale, a details file in the run)."""
    scale = 100.0 if framework in ("opencompass", "alpaca_eval") else 1.0
    return Record(
        run_id=run_id,
        model=model,
        framework=framework,
        framework_version=VERSIONS[framework],
        benchmark=benchmark,
        metric=metric,
        value=value,
        scale=kw.pop("scale", scale),
        primary=kw.pop("primary", True),
        config_hash="3f9a1c0d2b7e4a55",
        time=time,
        details_path=kw.pop("details_path", f"runs/{run_id}/{framework}/{model}/{benchmark}.jsonl"),
        **kw,
    )


def _fail(run_id: str, time: str, framework: str, model: str, benchmark: str, error: str, **kw: Any) -> Record:
    return failure(
        run_id=run_id,
        model=model,
        framework=framework,
        framework_version=VERSIONS[framework],
        benchmark=benchmark,
        error=error,
        config_hash="3f9a1c0d2b7e4a55",
        time=time,
        **kw,
    )


def sample_runs() -> list[tuple[dict[str, Any], list[Record]]]:
    """(manifest, records) per framework run, oldest first: what `ResultsStore.add_run` receives."""
    a, b, c = "20261120-090000-a1b2c3", "20261121-100000-d4e5f6", "20261122-110000-0789ab"
    smol, tuned, tiny = MODELS
    runs: dict[tuple[str, str], list[Record]] = {}

    def add(run: str, framework: str, *records: Record) -> None:
        runs.setdefault((run, framework), []).extend(records)

    t = "2026-11-20T09:0{}:00+00:00"
    add(
        a,
        "opencompass",
        sample_record(a, t.format(1), "opencompass", smol, "mcq_science_en", "accuracy", 50.0, n_samples=8),
        sample_record(a, t.format(1), "opencompass", tuned, "mcq_science_en", "accuracy", 62.5, n_samples=8),
        sample_record(a, t.format(1), "opencompass", tiny, "mcq_science_en", "accuracy", 25.0, n_samples=8),
        *(
            sample_record(a, t.format(2), "opencompass", m, "ceval_mini", "accuracy", v, subset=s, n_samples=4)
            for m, s, v in [
                (smol, "computer_network", 50.0),
                (smol, "high_school_chemistry", 25.0),
                (tuned, "computer_network", 75.0),
                (tiny, "computer_network", 25.0),
                (tiny, "high_school_chemistry", 0.0),
            ]
        ),
        _fail(
            a,
            t.format(2),
            "opencompass",
            tuned,
            "ceval_mini",
            "task ceval-high_school_chemistry: RuntimeError: CUDA error: no kernel image\n(log excerpt)",
            subset="high_school_chemistry",
        ),
    )
    add(
        a,
        "lm_eval",
        *(
            sample_record(a, t.format(3), "lm_eval", m, "mcq_science_en", "acc", v, stderr=0.18, n_samples=8)
            for m, v in [(smol, 0.5), (tuned, 0.625), (tiny, 0.25)]
        ),
        *(  # a secondary metric: a column only with all_metrics
            sample_record(a, t.format(3), "lm_eval", m, "mcq_science_en", "acc_norm", v, n_samples=8, primary=False)
            for m, v in [(smol, 0.375), (tuned, 0.5), (tiny, 0.25)]
        ),
        *(
            sample_record(a, t.format(3), "lm_eval", m, "qa_capitals", "exact_match", v, n_samples=8)
            for m, v in [(smol, 0.75), (tuned, 0.875), (tiny, 0.0)]
        ),
        sample_record(a, t.format(3), "lm_eval", smol, "qa_zh", "exact_match", 1 / 6, n_samples=6),
        sample_record(a, t.format(3), "lm_eval", tuned, "qa_zh", "exact_match", 2 / 6, n_samples=6),
        _fail(a, t.format(3), "lm_eval", tiny, "qa_zh", "lm_eval: ValueError: empty generation", metric="exact_match"),
    )
    add(
        a,
        "openai_evals",
        *(
            sample_record(a, t.format(4), "openai_evals", m, "qa_capitals", "accuracy", v, n_samples=8)
            for m, v in [(smol, 0.75), (tuned, 0.875)]
        ),
        *(
            sample_record(a, t.format(4), "openai_evals", m, "qa_zh", "accuracy", v, n_samples=6)
            for m, v in [(smol, 1 / 6), (tuned, 0.5)]
        ),
        _fail(
            a,
            t.format(4),
            "openai_evals",
            tiny,
            "*",
            "oaieval exited 1 for tiny-random\nopenai.APIConnectionError: Connection error.",
        ),
    )
    add(
        a,
        "alpaca_eval",
        *(
            sample_record(
                a, t.format(5), "alpaca_eval", m, "open_instructions", "win_rate", v, judge=JUDGE, n_samples=6
            )
            for m, v in [(smol, 50.0), (tuned, 66.67), (tiny, 8.33)]
        ),
    )
    # Rerun b: lm_eval's failed tiny/qa_zh now succeeds; OpenCompass mcq moves for smollm2.
    add(
        b,
        "lm_eval",
        sample_record(b, "2026-11-21T10:01:00+00:00", "lm_eval", tiny, "qa_zh", "exact_match", 0.0, n_samples=6),
    )
    add(
        b,
        "opencompass",
        sample_record(
            b, "2026-11-21T10:02:00+00:00", "opencompass", smol, "mcq_science_en", "accuracy", 62.5, n_samples=8
        ),
    )
    # Rerun c: alpaca_eval for smollm2 fails; its earlier success still shows, with a note.
    add(
        c,
        "alpaca_eval",
        _fail(
            c,
            "2026-11-22T11:01:00+00:00",
            "alpaca_eval",
            smol,
            "open_instructions",
            "alpaca_eval: judge returned no parsable preference",
            metric="win_rate",
            judge=JUDGE,
        ),
    )
    return [(manifest_for(run_id, framework, recs), recs) for (run_id, framework), recs in runs.items()]


def manifest_for(run_id: str, framework: str, records: list[Record]) -> dict[str, Any]:
    """A manifest shaped like `bridges._runner.manifest`'s."""
    failed = [r for r in records if r.status == "failed"]
    times = sorted(r.time for r in records)
    return {
        "run_id": run_id,
        "framework": framework,
        "framework_version": VERSIONS[framework],
        "config_name": "sample",
        "config_path": "/work/configs/sample.yaml",
        "config_hash": "3f9a1c0d2b7e4a55",
        "datasets": {name: f"{i:02d}" * 32 for i, name in enumerate(CARDS)},
        "dataset_cards": CARDS,
        "models": [
            {"name": MODELS[0], "kind": "hf", "path": "/cache/smollm2-135m-instruct", "system_prompt": None},
            {"name": MODELS[1], "kind": "hf", "path": "/cache/smollm2-135m-instruct", "system_prompt": "Be brief."},
            {"name": MODELS[2], "kind": "hf", "path": "/tmp/tiny-qwen2", "system_prompt": None},
        ],
        "packages": {"benchbridge": "0.1.0", "torch": "2.13.0", "transformers": "4.57.6"},
        "seed": 0,
        "git_commit": "11d3fa7c0ffee0000000000000000000000000000"[:40],
        "started": times[0],
        "finished": times[-1],
        "status": "failed" if failed else "ok",
        "error": "; ".join(sorted({(r.error or "")[:300] for r in failed})) or None,
    }


def sample_records() -> list[Record]:
    return [r for _, records in sample_runs() for r in records]


def sample_config(folder: Path, models: list[str], publish: dict[str, Any]) -> Path:
    """A run config named `sample` whose results database is `folder/results.sqlite` (see
    `sample_store`), with `models` as keyed python models and the bundled qa_capitals dataset."""
    target = "bridges.testing:AnswerKeyModel"
    config = {
        "name": "sample",
        "results_db": "results.sqlite",
        "models": [{"name": m, "kind": "python", "target": target} for m in models],
        "datasets": [{"path": str(Path(__file__).resolve().parents[1] / "custom_datasets" / "qa_capitals")}],
        "publish": publish,
    }
    path = folder / "sample.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def sample_store(path: str | Path) -> ResultsStore:
    """A results database holding `sample_runs()`, one transaction per framework run."""
    store = ResultsStore(path)
    for manifest, records in sample_runs():
        store.add_run(manifest, records)
    return store

"""A realistic board's worth of records and manifests, for tests and for trying the board or publish
commands without running a framework (`sample_store(path)`).

Four frameworks as their bridges report them (OpenCompass in 0-100, the others in 0-1), three
models, C-Eval subjects as subsets, a judged AlpacaEval column, reruns, and failures: a framework
that failed as a whole, a failed subject, a failure that a later rerun fixed, and a success that a
later rerun failed.

`sample_samples(records)` gives every successful record of qa_capitals, qa_zh, mcq_science_en,
ceval_mini and open_instructions its per-sample rows, shaped as each framework's own per-sample output
is (rendered prompt or messages, raw output, extracted answer, reference, 0-1 scores, a judge's
verdict), with the right/wrong pattern chosen so that the record's value is the mean of its samples'
scores and the frameworks disagree on qa_capitals for reasons the diff can tell.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from bridges.records import Judgement, Record, Sample, failure
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


DATASETS = Path(__file__).resolve().parents[1] / "custom_datasets"
LETTERS = "ABCD"


def _dataset(name: str) -> list[dict[str, Any]]:
    lines = (DATASETS / name / "samples.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _right(framework: str, n: int, k: int) -> list[bool]:
    """Which of n samples a framework scores right (k of them): OpenCompass and evals the first k,
    lm-eval the last k, so that the same model's samples differ between them."""
    return [i >= n - k for i in range(n)] if framework == "lm_eval" else [i < k for i in range(n)]


def _qa_sample(record: Record, row: dict[str, Any], right: bool) -> Sample:
    answer = row["answers"][0]
    messages = row["messages"]
    base = {
        "run_id": record.run_id,
        "model": record.model,
        "framework": record.framework,
        "benchmark": record.benchmark,
        "subset": record.subset,
        "sample_id": row["id"],
        "references": row["answers"],
    }
    if record.framework == "lm_eval":  # a rendered completion prompt; exact_match on the stripped text
        question = messages[-1]["content"]
        prompt = f"{messages[0]['content']}\n\nQuestion: {question}\nAnswer:"
        output = f" {answer}" if right else f" {answer}."  # the trailing period is what exact_match misses
        return Sample(
            **base, prompt=prompt, output=output, extracted=output.strip(), scores={record.metric: float(right)}
        )
    if record.framework == "opencompass":
        prompt = "\n".join(m["content"] for m in messages)
        output = answer if right else "I don't know"
        return Sample(**base, prompt=prompt, output=output, extracted=output, scores={record.metric: float(right)})
    # OpenAI evals: chat messages; Match on the completion's start
    output = answer if right else f"It is {answer}"
    return Sample(**base, messages=messages, output=output, extracted=output, scores={record.metric: float(right)})


def _mcq_sample(record: Record, row: dict[str, Any], right: bool, group: str | None = None) -> Sample:
    gold = row["answer"]
    wrong = LETTERS[(LETTERS.index(gold) + 1) % len(row["choices"])]
    options = "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(row["choices"]))
    prompt = f"{row['question']}\n{options}\nAnswer:"
    pick = gold if right else wrong
    output = pick if record.framework == "lm_eval" else f"{pick}. {row['choices'][LETTERS.index(pick)]}"
    return Sample(
        run_id=record.run_id,
        model=record.model,
        framework=record.framework,
        benchmark=record.benchmark,
        subset=record.subset,
        sample_id=row["id"],
        prompt=prompt,
        output=output,
        extracted=pick,
        references=[gold],
        choices=row["choices"],
        scores={record.metric: float(right)},
        group=group,
    )


def _alpaca_samples(record: Record, rows: list[dict[str, Any]]) -> list[Sample]:
    """AlpacaEval annotations: preference 2 (the model wins), 1 (the reference wins) or 1.5 (a tie)."""
    n = len(rows)
    wins = (record.value or 0.0) / 100.0 * n
    whole, tie = int(wins), round(wins - int(wins), 2) >= 0.5
    out = []
    for i, row in enumerate(rows):
        score = 1.0 if i < whole else 0.5 if (i == whole and tie) else 0.0
        verdict = {1.0: "2", 0.5: "1.5", 0.0: "1"}[score]
        out.append(
            Sample(
                run_id=record.run_id,
                model=record.model,
                framework=record.framework,
                benchmark=record.benchmark,
                sample_id=row["id"],
                prompt=row["instruction"],
                output=f"{record.model} answers: {row['instruction'][:20]}",
                extracted=verdict,
                references=[f"reference answer to {row['id']}"],
                scores={record.metric: score},
                judge=Judgement(model=JUDGE, verdict=verdict, reasoning=f"Output ({verdict}) is better."),
            )
        )
    return out


def sample_samples(records: list[Record]) -> list[Sample]:
    """The per-sample rows behind `records` (see the module's docstring); records of other benchmarks
    or whose value is no whole number of right samples get none (like a store written before samples)."""
    out: list[Sample] = []
    for record in records:
        if record.status != "ok" or record.value is None or not record.n_samples or not record.primary:
            continue
        if record.benchmark == "open_instructions":
            out += _alpaca_samples(record, _dataset("open_instructions")[: record.n_samples])
            continue
        k = round(record.value / record.scale * record.n_samples)
        if abs(k / record.n_samples - record.value / record.scale) > 1e-9:
            continue
        pattern = _right(record.framework, record.n_samples, k)
        if record.benchmark in ("qa_capitals", "qa_zh"):
            rows = _dataset(record.benchmark)[: record.n_samples]
            out += [_qa_sample(record, row, right) for row, right in zip(rows, pattern, strict=True)]
        elif record.benchmark == "mcq_science_en":
            rows = _dataset(record.benchmark)[: record.n_samples]
            out += [_mcq_sample(record, row, right) for row, right in zip(rows, pattern, strict=True)]
        elif record.benchmark == "ceval_mini":  # a question per subject, grouped by subject (the cluster)
            for i, right in enumerate(pattern):
                row = {
                    "id": f"{record.subset}-{i + 1}",
                    "question": f"{record.subset} question {i + 1}",
                    "choices": ["甲", "乙", "丙", "丁"],
                    "answer": LETTERS[i % 4],
                }
                out.append(_mcq_sample(record, row, right, group=record.subset))
    return out


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
        store.add_run(manifest, records, samples=sample_samples(records))
    return store


FRAMEWORK_CYCLE = ("opencompass", "lm_eval", "openai_evals", "alpaca_eval")


def zoo_store(
    path: str | Path, *, models: int, columns: int, reruns: int = 2, samples_per_cell: int = 0, seed: int = 0
) -> ResultsStore:
    """A model zoo's store: `models` x `columns` (benchmark b0.. scored by the four frameworks in turn)
    x `reruns`, one framework run per rerun and framework, with `samples_per_cell` 0/1 samples behind
    each record (its value is their mean). For the scale benchmark and its functional test."""
    import random

    rng = random.Random(seed)
    store = ResultsStore(path)
    names = [f"model-{i:04d}" for i in range(models)]
    for rerun in range(reruns):
        run_id = f"2026112{rerun % 10}-0{rerun // 10}0000-zoo{rerun:03d}"
        time = f"2026-11-2{rerun % 10}T0{rerun // 10}:00:00+00:00"
        for f, framework in enumerate(FRAMEWORK_CYCLE):
            records: list[Record] = []
            samples: list[Sample] = []
            for c in range(f, columns, len(FRAMEWORK_CYCLE)):
                benchmark = f"bench{c:03d}"
                for m, model in enumerate(names):
                    skill = 0.2 + 0.6 * (models - m) / models  # earlier models are better, by a little
                    n = samples_per_cell or 100
                    right = [rng.random() < skill for _ in range(n)]
                    value = sum(right) / n
                    record = Record(
                        run_id=run_id,
                        model=model,
                        framework=framework,
                        framework_version=VERSIONS[framework],
                        benchmark=benchmark,
                        metric="accuracy",
                        value=value,
                        primary=True,
                        n_samples=n,
                        time=time,
                    )
                    records.append(record)
                    samples += [
                        Sample(
                            run_id=run_id,
                            model=model,
                            framework=framework,
                            benchmark=benchmark,
                            sample_id=f"{benchmark}-{i}",
                            prompt=f"Question {i} of {benchmark}?\nAnswer:",
                            output=" yes" if ok else " no",
                            extracted="yes" if ok else "no",
                            references=["yes"],
                            scores={"accuracy": float(ok)},
                        )
                        for i, ok in enumerate(right[:samples_per_cell])
                    ]
            store.add_run(manifest_for(run_id, framework, records), records, samples=samples)
    return store

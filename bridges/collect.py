"""`benchbridge collect FRAMEWORK PATH`: a native report made anywhere (a Slurm cluster, a GPU box, a
colleague's laptop) into the results store, beside benchbridge's own runs.

Each framework's report is read with the parsers its bridge's `collect()`/`collect_samples()` use
(OpenCompass's summary and per-sample files, lm-eval's results JSON and samples files, an evals record
log, AlpacaEval's leaderboard CSV and annotations), without a run config: names are the report's own.
Every record carries provenance `collected` (the path, the framework version the report names, the
report's time). A report's run id is the hash of the files read, so collecting it twice is a no-op.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bridges._errors import BenchbridgeError
from bridges.records import Record, Sample, clip_error

COLLECTED = "collected"  # Record.config_hash and extra["provenance"] of every collected record
UNNAMED_VERSION = "unknown (not in the report)"
LM_EVAL_VERSIONS = re.compile(r"^0\.4\.\d+")  # the results JSON layout benchbridge reads (0.4.x)


@dataclass
class Report:
    """What one native report gives: records and samples (run id set later), the files read, the
    framework version and time it names."""

    framework: str
    path: Path
    files: list[Path] = field(default_factory=list)
    version: str = UNNAMED_VERSION
    time: str | None = None
    records: list[dict[str, Any]] = field(default_factory=list)  # Record fields but run/framework/version
    samples: list[Sample] = field(default_factory=list)


@dataclass
class Collected:
    run_id: str
    records: list[Record]
    samples: list[Sample]
    new: bool  # False: the same report was collected before and nothing was stored


# ----------------------------------------------------------------- what a path holds


def detect(path: Path) -> str | None:
    """The framework whose report `path` looks like (None: none of the four)."""
    if path.is_file():
        if path.suffix == ".csv" and "win_rate" in _first_line(path):
            return "alpaca_eval"
        if path.suffix == ".json" and path.name.startswith("results"):
            return "lm_eval"
        if path.suffix == ".jsonl" and '"spec"' in _first_line(path):
            return "openai_evals"
        return None
    if not path.is_dir():
        return None
    if (path / "summary").is_dir() or any(_is_stamp(p) and (p / "summary").is_dir() for p in path.iterdir()):
        return "opencompass"
    if (path / "leaderboard.csv").is_file():
        return "alpaca_eval"
    if next(path.rglob("results_*.json"), None):
        return "lm_eval"
    if any('"spec"' in _first_line(p) for p in path.rglob("*.jsonl")):
        return "openai_evals"
    return None


def _first_line(path: Path) -> str:
    try:
        with path.open(encoding="utf-8-sig", errors="replace") as fh:
            return fh.readline()
    except OSError:
        return ""


def _is_stamp(path: Path) -> bool:
    return path.is_dir() and re.fullmatch(r"\d{8}_\d{6}", path.name) is not None


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds")


def _bad(path: Path, what: str) -> BenchbridgeError:
    return BenchbridgeError(f"{path}: {what}")


def _float(cell: Any) -> float | None:
    if isinstance(cell, bool):
        return None
    if isinstance(cell, int | float):
        return float(cell) if cell == cell else None
    try:
        value = float(str(cell))
    except ValueError:
        return None
    return value if value == value else None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _bad(path, f"not JSON ({exc}); give the report file the framework wrote") from None


# ----------------------------------------------------------------- OpenCompass


def read_opencompass(path: Path, model: str | None) -> Report:
    """An OpenCompass `outputs/<YYYYMMDD_HHMMSS>/` folder (or `outputs/`: its latest run), local, Slurm or
    DLC alike: the summary CSV's cells (0-100), failed `-` cells with their task log's traceback, and
    per-sample rows from predictions/ and results/."""
    from bridges.frameworks.opencompass.bridge import METRIC_NAMES, read_summary, task_failure
    from bridges.frameworks.opencompass.samples import dataset_samples

    work = path
    if not (work / "summary").is_dir():
        stamps = sorted(p for p in path.iterdir() if _is_stamp(p) and (p / "summary").is_dir())
        work = stamps[-1]
    summary_files = sorted((work / "summary").glob("summary_*.csv"))
    if not summary_files:
        raise _bad(work / "summary", "no summary_*.csv: the OpenCompass run did not finish; collect a finished run")
    summary = read_summary(work)
    report = Report("opencompass", path, files=[summary_files[-1]])
    stamp = re.fullmatch(r"(\d{8}_\d{6})", work.name)
    if stamp:
        report.time = _iso(datetime.strptime(stamp.group(1), "%Y%m%d_%H%M%S").replace(tzinfo=UTC))
    with summary_files[-1].open(encoding="utf-8") as fh:
        header = next(csv.reader(fh), [])
    models = [c for c in header if c not in ("dataset", "version", "metric", "mode")]
    if not models:
        raise _bad(summary_files[-1], "holds no model column; give the summary OpenCompass wrote")
    names = _model_names(models, model, summary_files[-1])
    groups = {abbr for abbr in summary if any(other.startswith(f"{abbr}-") for other in summary)}
    for abbr, metrics in summary.items():
        prefix, _, rest = abbr.partition("-")
        benchmark, subset = (prefix, rest) if prefix in groups and rest else (abbr, "")
        for native_model in models:
            name = names[native_model]
            results_path = work / "results" / native_model / f"{abbr}.json"
            result = _read_json(results_path) if results_path.is_file() else {}
            if results_path.is_file():
                report.files.append(results_path)
            values = {m: _float(row.get(native_model)) for m, row in metrics.items() if m != "-"}
            found: dict[str, float] = {}
            for m, v in values.items():  # naive_average and accuracy are one metric by our names
                if v is not None and METRIC_NAMES.get(m, m) not in {METRIC_NAMES.get(k, k) for k in found}:
                    found[m] = v
            where = {"model": name, "benchmark": benchmark, "subset": subset, "scale": 100.0}
            if not found:
                cause, excerpt = task_failure(work, native_model, abbr)
                first = next(iter(values), "accuracy")
                report.records.append(
                    {
                        **where,
                        "metric": METRIC_NAMES.get(first, first),
                        "status": "failed",
                        "error": clip_error(f"{cause}\n{excerpt}".strip()),
                        "primary": True,
                    }
                )
                continue
            n = _count_details(result.get("details"))
            for i, (metric, value) in enumerate(found.items()):
                report.records.append(
                    {
                        **where,
                        "metric": METRIC_NAMES.get(metric, metric),
                        "value": value,
                        "primary": i == 0,
                        "n_samples": n,
                        "details_path": str(results_path) if results_path.is_file() else None,
                        "extra": {
                            "opencompass_metric": metric,
                            "opencompass_abbr": abbr,
                            "opencompass_model": native_model,
                        },
                    }
                )
            primary = METRIC_NAMES.get(next(iter(found)), next(iter(found)))
            ds = {"abbr": abbr, "benchmark": benchmark, "subset": subset}
            for s in dataset_samples(work, work / "data", native_model, ds, primary, run_id=""):
                report.samples.append(s.model_copy(update={"model": name}))
            pred = work / "predictions" / native_model / f"{abbr}.json"
            if pred.is_file():
                report.files.append(pred)
    return report


def _count_details(details: Any) -> int | None:
    """OpenCompass writes a result's details as a list, or as a dict of numbered entries (plus 'type')."""
    if isinstance(details, list):
        return len(details)
    if isinstance(details, dict):
        return sum(1 for k in details if str(k).isdigit())
    return None


def _model_names(models: list[str], model: str | None, where: Path) -> dict[str, str]:
    """Report model name -> board name: `--model` renames the one model of a one-model report."""
    if model is None:
        return {m: m for m in models}
    if len(models) != 1:
        raise _bad(where, f"holds {len(models)} models ({', '.join(models)}); --model renames a one-model report only")
    return {models[0]: model}


# ----------------------------------------------------------------- lm-eval


def read_lm_eval(path: Path, model: str | None) -> Report:
    """An lm-eval results JSON (`results_<time>.json`), or a folder of them (`--output_path`), with the
    `samples_<task>_<time>.jsonl` files beside each (written with `--log_samples`)."""
    files = [path] if path.is_file() else sorted(path.rglob("results_*.json"))
    report = Report("lm_eval", path)
    versions = set()
    for file in files:
        part = _lm_eval_file(file, model)
        versions.add(part.version)
        report.files += part.files
        report.records += part.records
        report.samples += part.samples
        report.time = max(filter(None, [report.time, part.time]), default=None)
    report.version = ", ".join(sorted(versions))
    return report


def _lm_eval_file(path: Path, model: str | None) -> Report:
    from bridges.frameworks.lm_eval.samples import read_samples, record_metric

    data = _read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("results"), dict):
        raise _bad(path, "not an lm-eval results JSON (no 'results' mapping); give results_<time>.json")
    version = data.get("lm_eval_version")
    if not isinstance(version, str) or not LM_EVAL_VERSIONS.match(version):
        raise _bad(
            path,
            f"lm_eval_version: an lm-eval results JSON of an unknown version ({version!r}); benchbridge reads the "
            "0.4.x layout (lm_eval_version '0.4.N'): rerun with lm-eval 0.4 or convert the file",
        )
    name = model or data.get("model_name") or ((data.get("config") or {}).get("model")) or path.parent.name
    report = Report("lm_eval", path, files=[path], version=version)
    if _float(data.get("date")) is not None:
        report.time = _iso(datetime.fromtimestamp(float(data["date"]), UTC))
    stamp = path.stem.removeprefix("results_")
    parent_of = {sub: group for group, subs in (data.get("group_subtasks") or {}).items() for sub in subs}
    higher = data.get("higher_is_better") or {}
    n_samples = data.get("n-samples") or {}
    for task, entry in data["results"].items():
        if not isinstance(entry, dict):
            continue
        group = parent_of.get(task)
        benchmark, subset = (group, str(entry.get("alias", task)).strip(" -")) if group else (task, "")
        keys = [k for k in entry if "," in k and "_stderr," not in k and _float(entry[k]) is not None]
        count = (n_samples.get(task) or {}).get("effective", entry.get("sample_len"))
        for i, key in enumerate(keys):
            metric_name, _, filter_name = key.partition(",")
            report.records.append(
                {
                    "model": name,
                    "benchmark": benchmark,
                    "subset": subset,
                    "metric": record_metric(metric_name, filter_name),
                    "value": _float(entry[key]),
                    "stderr": _float(entry.get(f"{metric_name}_stderr,{filter_name}")),
                    "higher_is_better": bool((higher.get(task) or {}).get(metric_name, True)),
                    "primary": i == 0,
                    "n_samples": int(str(count)) if _float(count) is not None else None,
                    "details_path": str(path),
                    "extra": {"task": task, "result_key": key},
                }
            )
        samples_file = path.with_name(f"samples_{task}_{stamp}.jsonl")
        if samples_file.is_file() and keys:
            report.files.append(samples_file)
            report.samples += read_samples(
                samples_file,
                run_id="",
                model=name,
                benchmark=benchmark,
                subset=subset,
                metrics=[record_metric(*k.split(",", 1)) for k in keys],
            )
    return report


# ----------------------------------------------------------------- OpenAI evals


def read_openai_evals(path: Path, model: str | None) -> Report:
    """`oaieval` record logs (`--record_path`, or /tmp/evallogs/*.jsonl): line 1 the spec, a
    `final_report` line, the events. One record per final_report key; samples from the events."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*.jsonl") if '"spec"' in _first_line(p))
    return evals_report(files, path, model)


def evals_report(files: list[Path], path: Path, model: str | None) -> Report:
    """The record logs `files` as one report: one sample row per (model, eval base) with every split's scores."""
    from bridges.frameworks.openai_evals.bridge import metric_for, read_record_file
    from bridges.frameworks.openai_evals.samples import merge, method_samples

    report = Report("openai_evals", path)
    grouped: dict[tuple[str, str], dict[str, dict[int, dict[str, Any]]]] = {}
    graders: dict[tuple[str, str], str | None] = {}
    for file in files:
        parsed = read_record_file(file)
        if parsed.spec is None:
            raise _bad(file, "not an OpenAI evals record log (no spec line); give the file oaieval --record_path wrote")
        if parsed.final_report is None:
            raise _bad(file, "has no final_report line: the eval did not finish; collect a finished record log")
        spec = parsed.spec
        fns = [str(f) for f in spec.get("completion_fns") or []]
        if not fns:
            raise _bad(file, "spec.completion_fns: empty; give a record log oaieval wrote")
        name = model or fns[0]
        eval_name = str(spec.get("eval_name") or file.stem)
        benchmark = str(spec.get("base_eval") or eval_name.split(".")[0])
        method = str(spec.get("split") or "eval")
        final = parsed.final_report
        graded = any(k.startswith("counts/") for k in final)
        grader = fns[-1] if graded and len(fns) > 1 else (fns[0] if graded else None)
        primary_key = "accuracy" if "accuracy" in final else "score" if "score" in final else None
        created = spec.get("created_at")
        if isinstance(created, str):
            try:
                moment = datetime.fromisoformat(created)
                report.time = max(filter(None, [report.time, _iso(moment.replace(tzinfo=moment.tzinfo or UTC))]))
            except ValueError:
                pass  # an odd time: the record keeps its collection time
        report.files.append(file)
        numbers = {k: v for k, v in final.items() if not k.startswith("usage_") and _float(v) is not None}
        if primary_key is None and numbers:
            primary_key = next(iter(numbers))
        for key, value in numbers.items():
            metric, fields = metric_for(method, None, key, parsed.n_samples)
            report.records.append(
                {
                    "model": name,
                    "benchmark": benchmark,
                    "metric": metric,
                    "value": float(value),
                    "primary": key == primary_key,
                    "n_samples": parsed.n_samples,
                    "judge": grader,
                    "details_path": str(file),
                    "extra": {
                        "eval": eval_name,
                        "method": method,
                        "completion_fns": fns,
                        "report_key": key,
                        "evals_run_id": parsed.run_id,
                    },
                    **fields,
                }
            )
        grouped.setdefault((name, benchmark), {})[method] = method_samples(file, method, grader)
        graders[(name, benchmark)] = grader
    for (name, benchmark), per_method in grouped.items():
        if any(per_method.values()):
            report.samples += merge(per_method, [], run_id="", model=name, benchmark=benchmark)
    return report


# ----------------------------------------------------------------- AlpacaEval


def read_alpaca_eval(path: Path, model: str | None) -> Report:
    """An AlpacaEval `leaderboard.csv` (or its folder) with each model's `annotations.json` where
    AlpacaEval left it (`<folder>/<model>/` or `<folder>/results/<model>/`); the benchmark is the
    folder's name."""
    from bridges.frameworks.alpaca_eval.bridge import AlpacaEvalBridge, count_unparsed, read_board
    from bridges.frameworks.alpaca_eval.samples import annotation_samples

    board_file = path / "leaderboard.csv" if path.is_dir() else path
    folder = board_file.parent
    rows = read_board(board_file)
    if not rows or not all("win_rate" in row for row in rows.values()):
        raise _bad(board_file, "not an AlpacaEval leaderboard CSV (no win_rate column); give leaderboard.csv")
    names = _model_names(list(rows), model, board_file)
    report = Report("alpaca_eval", path, files=[board_file])
    report.time = _iso(datetime.fromtimestamp(board_file.stat().st_mtime, UTC))
    benchmark = folder.name
    for native_model, row in rows.items():
        name = names[native_model]
        annotations = next(
            (
                p
                for p in (
                    folder / native_model / "annotations.json",
                    folder / "results" / native_model / "annotations.json",
                )
                if p.is_file()
            ),
            None,
        )
        judge = None
        if annotations is not None:
            report.files.append(annotations)
            rows_json = _read_json(annotations)
            judge = next((str(r["annotator"]) for r in rows_json if isinstance(r, dict) and r.get("annotator")), None)
        pairs, unparsed = count_unparsed(annotations) if annotations else (0, 0)
        n_total = _float(row.get("n_total"))
        for column, (scale, higher) in AlpacaEvalBridge.COLUMNS.items():
            if column not in row or _float(row[column]) is None:
                continue
            stderr_column = {"win_rate": "standard_error", "length_controlled_winrate": "lc_standard_error"}.get(column)
            report.records.append(
                {
                    "model": name,
                    "benchmark": benchmark,
                    "metric": column,
                    "value": _float(row[column]),
                    "stderr": _float(row.get(stderr_column)) if stderr_column else None,
                    "scale": scale,
                    "higher_is_better": higher,
                    "primary": column == "win_rate",
                    "judge": judge,
                    "n_samples": int(n_total) if n_total is not None else None,
                    "details_path": str(annotations) if annotations else None,
                    "extra": {"mode": row.get("mode"), "n_unparsed": unparsed, "alpaca_eval_model": native_model},
                }
            )
        if annotations is not None:
            found = annotation_samples(
                annotations, {}, run_id="", model=native_model, benchmark=benchmark, judge=judge or "judge"
            )
            report.samples += [s.model_copy(update={"model": name}) for s in found]
    return report


READERS: dict[str, Callable[[Path, str | None], Report]] = {
    "opencompass": read_opencompass,
    "lm_eval": read_lm_eval,
    "openai_evals": read_openai_evals,
    "alpaca_eval": read_alpaca_eval,
}


# ----------------------------------------------------------------- into the store


def read_report(framework: str, path: Path, model: str | None = None) -> Report:
    """The report at `path` read as `framework`'s: a path of another framework, or of none, is bad input."""
    if framework not in READERS:
        raise BenchbridgeError(f"collect: unknown framework {framework!r}; give one of {', '.join(READERS)}")
    if not path.exists():
        raise _bad(path, "no such file or folder; give the report's path")
    found = detect(path)
    if found is None:
        raise _bad(path, f"not a report benchbridge can read as {framework} ({_WHAT[framework]})")
    if found != framework:
        raise _bad(path, f"a report of {found}, not of {framework}; run: benchbridge collect {found} {path}")
    report = READERS[framework](path.resolve(), model)
    if not report.records:
        raise _bad(path, f"holds no result of {framework}; give a finished report ({_WHAT[framework]})")
    return report


_WHAT = {
    "opencompass": "an outputs/<YYYYMMDD_HHMMSS>/ folder with summary/summary_*.csv",
    "lm_eval": "a results_<time>.json file or the --output_path folder holding it",
    "openai_evals": "an oaieval record log .jsonl or a folder of them",
    "alpaca_eval": "a leaderboard.csv or its folder",
}


def report_run_id(report: Report, model: str | None) -> str:
    """The same files (and renaming) give the same id, wherever and whenever collected."""
    digest = hashlib.sha256(f"{report.framework}\0{model or ''}\0".encode())
    base = report.path if report.path.is_dir() else report.path.parent
    for file in sorted(set(report.files)):
        rel = file.relative_to(base) if file.is_relative_to(base) else Path(file.name)
        digest.update(f"{rel.as_posix()}\0".encode())
        digest.update(hashlib.sha256(file.read_bytes()).digest())
    return f"{COLLECTED}-{digest.hexdigest()[:16]}"


def collect(
    framework: str, path: Path, *, db: Path, model: str | None = None, config_name: str | None = None
) -> Collected:
    """Reads the report and stores it as one run in `db` (a no-op when that report is there already)."""
    from bridges._runner import git_commit
    from leaderboards.store import ResultsStore

    report = read_report(framework, Path(path), model)
    run_id = report_run_id(report, model)
    store = ResultsStore(db)
    provenance = {"provenance": COLLECTED, "collected_from": str(report.path), "report_time": report.time}
    records = [
        Record(
            **{
                "run_id": run_id,
                "framework": framework,
                "framework_version": report.version,
                "config_hash": COLLECTED,
                **({"time": report.time} if report.time else {}),
                **fields,
                "extra": {**(fields.get("extra") or {}), **provenance},
            }
        )
        for fields in report.records
    ]
    samples = [s.model_copy(update={"run_id": run_id}) for s in report.samples]
    if store.path.is_file() and store.runs(run_id=run_id, framework=framework):
        return Collected(run_id, records, samples, new=False)
    failed = [r for r in records if r.status == "failed"]
    manifest: dict[str, Any] = {
        "run_id": run_id,
        "framework": framework,
        "framework_version": report.version,
        "config_name": config_name,
        "config_hash": COLLECTED,
        "datasets": {},
        "models": [],
        "packages": {},
        "seed": None,
        "git_commit": git_commit(),
        "started": report.time,
        "finished": report.time,
        "status": "failed" if failed else "ok",
        "error": "; ".join(sorted({(r.error or "")[:300] for r in failed})) or None,
        "collected": {
            "path": str(report.path),
            "framework_version": report.version,
            "time": report.time,
            "files": [str(f) for f in report.files],
        },
    }
    store.open().add_run(manifest, records, samples)
    return Collected(run_id, records, samples, new=True)

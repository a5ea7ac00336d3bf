"""Regenerates tests/fixtures/native/: native reports that the real frameworks wrote.

Each framework runs through benchbridge (`bridges.run`) on the bundled datasets with deterministic
`python` answer-key models, one of which fails on purpose, so every report holds known numbers and
one failure. The script then copies the report files that `collect()` reads (and the per-sample
files) into `tests/fixtures/native/<framework>/`, with this machine's paths, the run id and
timestamps replaced by fixed ones, and writes `manifest.json` (the configs it ran, framework
versions, each file's sha256). The fast tests (tests/test_collect_*.py) read those files; they
never run a framework. Run it again after a framework pin moves or a bridge changes what it writes:

    .venv/bin/python scripts/regenerate_native_reports.py [--only opencompass ...] [--keep DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "native"
# What the fixture files say in place of this machine's paths and this run's id (realistic, fixed).
WORK = "/tmp/benchbridge-native"
PROJECT = "/opt/benchbridge"
RUN_ID = "20261130-000000-native"
FRAMEWORKS = ("opencompass", "openai_evals", "alpaca_eval", "lm_eval")
DISTRIBUTIONS = {
    "opencompass": "opencompass",
    "openai_evals": "evals",
    "alpaca_eval": "alpaca-eval",
    "lm_eval": "lm-eval",
}

# The files kept per framework, as globs under the framework's run folder (`<work_dir>/<run id>/<fw>/`).
KEEP: dict[str, list[str]] = {
    "opencompass": [
        "benchbridge.json",
        "outputs/*/summary/summary_*.csv",
        "outputs/*/results/*/*.json",
        "outputs/*/predictions/*/*.json",
        "outputs/*/logs/infer/broken/*.out",
    ],
    "openai_evals": ["records/*/*.jsonl", "records/*/*.meta.json"],
    "alpaca_eval": [
        "*/leaderboard.csv",
        "*/failures.json",
        "*/make_leaderboard.log",
        "*/results/*/annotations.json",
        "*/outputs/*.json",
        "*/reference.json",
    ],
    "lm_eval": [
        "results/*/results_*.json",
        "results/*/samples_*.jsonl",
        "results/*/skipped.json",
        "results/*/status.json",
        "results/*/lm_eval.log",
    ],
}
# Timestamps in file names and contents that would change on every run.
STAMPS = [
    (re.compile(r"\d{8}_\d{6}"), "20261130_000000"),  # OpenCompass's output folder and summary file
    (re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}\.\d+"), "2026-11-30T00-00-00.000000"),  # lm-eval's results
    (re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}([.,]\d+)?"), "2026-11-30 00:00:00.000000"),  # logs, evals
    (re.compile(r"127\.0\.0\.1:\d+"), "127.0.0.1:8765"),  # the port the run served models on
    # progress bars and timings in the logs
    (re.compile(r"\[\d\d:\d\d<\d\d:\d\d,\s*[\d.]+(it/s|s/it|examples/s)\]"), "[00:00<00:00, 10.00it/s]"),
    (re.compile(r"\d+\.\d+ (it/s|s/it|examples/s)"), "100.00 examples/s"),
    (re.compile(r"in \d+\.\d+ seconds"), "in 0.5 seconds"),
]
# JSON files whose key order changes from run to run (AlpacaEval's annotations): written with sorted keys.
SORT_KEYS = {"annotations.json"}
_EVALS_RUN_ID = re.compile(r"\b\d{12}[A-Z0-9]{8}\b")  # oaieval's run id: yymmddHHMMSS + 8 random characters
# JSON keys whose values change on every run or machine (timings, dates, commits, the host's description).
FIXED = {
    "seconds": 1.0,
    "total_evaluation_time_seconds": "1.0",
    "date": 1796083200.0,  # 2026-11-30 00:00 UTC, as lm-eval writes it
    "git_hash": "0000000",
    "pretty_env_info": "(left out by scripts/regenerate_native_reports.py)",
    "preference_time_per_example": 0.01,
    "model_name": "keyed",
    "model_name_sanitized": "keyed",
}


def _key(name: str, datasets: list[str], **args: Any) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "python",
        "target": "bridges.testing:AnswerKeyModel",
        "args": {"datasets": datasets, **args},
    }


def configs(work: str, project: str) -> dict[str, dict[str, Any]]:
    """The run config of each framework, for a work folder and a project checkout (plain paths as text)."""
    data = f"{project}/custom_datasets"
    ceval = f"{work}/ceval_mini"  # the bundled C-Eval folder imported as a canonical dataset (`inputs`)
    keyed_sets = [f"{data}/mcq_science_en", f"{data}/qa_capitals", f"{data}/qa_zh", ceval]
    oc_wrong = ["sci-1", "sci-2", "cap-3", "zh-3", "computer_network-0"]
    lm_wrong = ["cap-3", "cap-5", "sci-2", "computer_network-1"]
    broken = {"name": "broken", "kind": "python", "target": "tests._evals_models:CrashOnQuestions"}
    judge = {
        "name": "longer-judge",
        "kind": "python",
        "target": "tests._alpaca_models:LongerJudge",
        # no verdict for mute's pairs (all unparsed: a failed cell) nor for the haiku (one unparsed pair per model)
        "args": {"undecided_on": ["Nothing to say.", "haiku"]},
    }
    open_set = f"{data}/open_instructions"
    return {
        "opencompass": {
            "name": "native-opencompass",
            "work_dir": f"{work}/opencompass",
            "models": [
                _key("keyed", keyed_sets, wrong_ids=oc_wrong),
                broken,  # its one inference task (all datasets) fails: a traceback in the task log
            ],
            "datasets": [{"path": f"{data}/{n}"} for n in ("mcq_science_en", "qa_capitals", "qa_zh")],
            "frameworks": {
                "opencompass": {
                    "builtin_datasets": [
                        {
                            "name": "ceval_gen",
                            "data_dir": f"{data}/ceval_mini",
                            "subjects": ["computer_network", "high_school_chemistry"],
                        }
                    ],
                }
            },
        },
        "openai_evals": {
            "name": "native-openai-evals",
            "work_dir": f"{work}/openai_evals",
            "models": [
                _key("keyed", keyed_sets, wrong_ids=["cap-3", "zh-3", "zh-5"]),
                {
                    "name": "grader",
                    "kind": "python",
                    "target": "bridges.testing:RuleGrader",
                    "args": {"abstain_on": ["capital of Italy"]},  # cap-3: an invalid grade
                },
                broken,
            ],
            "datasets": [{"path": f"{data}/{n}"} for n in ("qa_capitals", "qa_zh")],
            "frameworks": {
                "openai_evals": {
                    "grader": "grader",
                    "datasets": {"qa_capitals": ["match", "fact"], "qa_zh": ["includes"]},
                }
            },
        },
        "alpaca_eval": {
            "name": "native-alpaca-eval",
            "work_dir": f"{work}/alpaca_eval",
            "models": [
                _key("ref", [open_set], open_length=2),
                _key("longer", [open_set], open_length=3),
                _key("shorter", [open_set], open_length=1),
                {
                    "name": "mute",
                    "kind": "python",
                    "target": "tests._alpaca_models:SplitLengthModel",
                    "args": {"long_on": [], "long_answer": "", "short_answer": "Nothing to say."},
                },
            ],
            "datasets": [{"path": open_set}],
            "frameworks": {"alpaca_eval": {"reference": {"model": "ref"}, "judge": {"model": judge, "kind": "tool"}}},
        },
        "lm_eval": {
            "name": "native-lm-eval",
            "work_dir": f"{work}/lm_eval",
            "seed": 0,
            "models": [_key("keyed", keyed_sets, wrong_ids=lm_wrong), broken],
            "datasets": [{"path": f"{data}/{n}"} for n in ("qa_capitals", "mcq_science_en", "qa_zh")]
            + [{"path": ceval}],
            "frameworks": {"lm_eval": {}},
        },
    }


def declared() -> dict[str, Any]:
    """What the fixtures are generated from: checked against manifest.json by the fast tests."""
    return {
        "configs": configs(WORK, PROJECT),
        "keep": KEEP,
        "versions": {fw: importlib.metadata.version(DISTRIBUTIONS[fw]) for fw in FRAMEWORKS},
    }


def inputs(work: Path) -> None:
    """Datasets the configs name inside the work folder (the test re-creates them the same way)."""
    from bridges.datasets import import_dataset

    if not (work / "ceval_mini").exists():
        import_dataset("ceval", ROOT / "custom_datasets" / "ceval_mini", "ceval_mini").save(work / "ceval_mini")


def write_config(framework: str, work: Path) -> Path:
    import yaml

    path = work / f"{framework}.yaml"
    cfg = configs(str(work), str(ROOT))[framework]
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def normalize(text: str, work: Path, run_id: str) -> str:
    venv = Path(sys.prefix)  # the frameworks' own files, in tracebacks
    text = text.replace(str(work), WORK).replace(str(venv), f"{PROJECT}/.venv").replace(str(ROOT), PROJECT)
    text = text.replace(run_id, RUN_ID)
    for pattern, fixed in STAMPS:
        text = pattern.sub(fixed, text)
    ids: dict[str, str] = {}
    return _EVALS_RUN_ID.sub(lambda m: ids.setdefault(m[0], f"261130000000NATIVE{len(ids):02d}"), text)


def _fixed(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: FIXED[k] if k in FIXED and v is not None else _fixed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_fixed(v) for v in value]
    return value


def normalize_file(name: str, text: str, work: Path, run_id: str) -> str:
    text = normalize(text, work, run_id)
    if name.endswith(".json"):
        indent = 4 if text.startswith("{\n    ") else (2 if text.startswith(("{\n  ", "[\n  ")) else None)
        data = _fixed(json.loads(text))
        text = json.dumps(data, indent=indent, ensure_ascii=False, sort_keys=name in SORT_KEYS) + (
            "\n" if text.endswith("\n") else ""
        )
    return text


def localize(text: str, work: Path) -> str:
    """The inverse for a test: fixture text naming `work` and this checkout."""
    return text.replace(WORK, str(work)).replace(PROJECT, str(ROOT))


def run_framework(framework: str, work: Path) -> tuple[Path, str]:
    """Runs one framework through benchbridge; returns its run folder and the run id."""
    from bridges import load_config, run

    outcome = run(load_config(write_config(framework, work)), [framework], progress=lambda m: print(m, flush=True))
    (fw,) = outcome.frameworks
    print(f"{framework}: {fw.status} ({len(fw.records)} records)", flush=True)
    return outcome.run_dir / framework, outcome.run_id


def copy_reports(framework: str, run_dir: Path, run_id: str, work: Path) -> list[str]:
    dest = FIXTURES / framework
    shutil.rmtree(dest, ignore_errors=True)
    kept = []
    for pattern in KEEP[framework]:
        for src in sorted(run_dir.glob(pattern)):
            rel = normalize(src.relative_to(run_dir).as_posix(), work, run_id)
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(normalize_file(src.name, src.read_text(encoding="utf-8"), work, run_id), encoding="utf-8")
            kept.append(f"{framework}/{rel}")
    return kept


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_manifest() -> Path:
    files = sorted(p for p in FIXTURES.rglob("*") if p.is_file() and p.name != "manifest.json")
    manifest = {**declared(), "files": {p.relative_to(FIXTURES).as_posix(): sha256(p) for p in files}}
    path = FIXTURES / "manifest.json"
    path.write_text(json.dumps(manifest, indent=1, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=FRAMEWORKS, default=list(FRAMEWORKS))
    parser.add_argument("--keep", type=Path, help=f"run here and keep it (default: {WORK}, removed afterwards)")
    args = parser.parse_args(argv)
    for name in ("USE_TF", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.setdefault(name, "0" if name == "USE_TF" else "1")
    # By default the run happens where the fixtures say it did: the config hash and evals' job keys,
    # which hash the config's paths, then come out the same on every regeneration.
    work = (args.keep or Path(WORK)).resolve()
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    # The frameworks' processes inherit it: sets (OpenCompass's lists of acceptable answers) keep one order.
    os.environ["PYTHONHASHSEED"] = "0"
    # A fresh response cache: every answer in the reports comes from this run, not from an older one.
    os.environ["BENCHBRIDGE_CACHE"] = str(work / "responses.sqlite")
    sys.path.insert(0, str(ROOT))
    inputs(work)
    for framework in args.only:
        run_dir, run_id = run_framework(framework, work)
        for rel in copy_reports(framework, run_dir, run_id, work):
            print(f"  {rel}")
    path = write_manifest()
    size = sum(p.stat().st_size for p in FIXTURES.rglob("*") if p.is_file())
    print(f"{path}: {size / 1024:.0f} KB in {FIXTURES}")
    if not args.keep:
        shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())

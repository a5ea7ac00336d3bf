"""lm-eval's collect() on the results and samples lm-eval 0.4.13 wrote (tests/fixtures/native/lm_eval/).

The run behind them (scripts/regenerate_native_reports.py): `keyed` answers from the key except
cap-3, cap-5, sci-2 and computer_network-1; `broken` raises on questions, so its lm-eval process
exits 1 with a traceback in results/broken/lm_eval.log and writes no results JSON. No framework
runs here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bridges.records import ERROR_CHARS, Record
from tests._native import Native, native_run

STAMP = "2026-11-30T00-00-00.000000"


@pytest.fixture
def native(tmp_path: Path) -> Native:
    return native_run("lm_eval", tmp_path)


def test_records_are_exactly_the_results_json_and_failures(native: Native) -> None:
    records = native.bridge.collect(native.out_dir)
    got = [(r.model, r.benchmark, r.subset, r.metric, r.status, r.value, r.n_samples, r.primary) for r in records]
    assert got == [
        ("keyed", "qa_capitals", "", "exact_match,strip", "ok", 0.75, 8, True),
        ("keyed", "mcq_science_en", "", "exact_match,letter", "ok", 0.875, 8, True),  # the generate variant
        ("keyed", "qa_zh", "", "exact_match,strip", "ok", 1.0, 6, True),
        ("keyed", "ceval_mini", "computer_network", "exact_match,letter", "ok", 0.75, 4, True),
        ("keyed", "ceval_mini", "high_school_chemistry", "exact_match,letter", "ok", 1.0, 4, True),
        ("keyed", "ceval_mini", "", "exact_match,letter", "ok", 0.875, 8, True),  # lm-eval's group, by size
        ("broken", "qa_capitals", "", "exact_match,strip", "failed", None, None, True),
        ("broken", "mcq_science_en", "", "exact_match,letter", "failed", None, None, True),
        ("broken", "qa_zh", "", "exact_match,strip", "failed", None, None, True),
        ("broken", "ceval_mini", "", "exact_match,letter", "failed", None, None, True),
    ]


def test_values_and_stderrs_equal_lm_evals_results_json(native: Native) -> None:
    keyed = [r for r in native.bridge.collect(native.out_dir) if r.model == "keyed"]
    path = native.path(f"results/keyed/results_{STAMP}.json")
    results = json.loads(path.read_text("utf-8"))["results"]
    assert {r.extra["task"] for r in keyed} == set(results)
    for r in keyed:
        entry = results[r.extra["task"]]
        name, filter_name = r.extra["result_key"].split(",")
        assert (r.value, r.stderr) == (entry[r.extra["result_key"]], entry[f"{name}_stderr,{filter_name}"])
        assert r.n_samples == entry["sample_len"]
        assert r.extra["results_file"] == str(path)


def test_samples_files_hold_one_line_per_scored_sample(native: Native) -> None:
    keyed = {r.extra["task"]: r for r in native.bridge.collect(native.out_dir) if r.model == "keyed" and r.n_samples}
    for task, r in keyed.items():
        path = native.path(f"results/keyed/samples_{task}_{STAMP}.jsonl")
        if task == "bb_ceval_mini_gen":
            assert not path.exists()  # a group has no samples of its own
            continue
        rows = [json.loads(line) for line in path.read_text("utf-8").splitlines()]
        assert len(rows) == r.n_samples
        assert sum(row["exact_match"] for row in rows) / len(rows) == r.value


def test_a_failed_process_is_a_failed_record_per_task_with_the_logs_tail(native: Native) -> None:
    failed = [r for r in native.bridge.collect(native.out_dir) if r.status == "failed"]
    log = native.path("results/broken/lm_eval.log")
    text = log.read_text("utf-8")
    assert text.endswith("RuntimeError: CrashOnQuestions: this model cannot answer questions\n")
    tasks = ["bb_qa_capitals", "bb_mcq_science_en_gen", "bb_qa_zh", "bb_ceval_mini_gen"]
    assert len(failed) == len(tasks)
    for task, r in zip(tasks, failed, strict=True):
        error = r.error or ""
        assert error.startswith(f"lm-eval task {task}: lm-eval exited with code 1; log {log}:\n")  # the reason
        assert len(error) <= ERROR_CHARS
        assert error.rstrip().endswith("RuntimeError: CrashOnQuestions: this model cannot answer questions")
        assert error.rstrip()[-300:] in text  # the end of the log, where the error is


def test_without_any_output_the_failure_says_nothing_ran(native: Native) -> None:
    for name in ("lm_eval.log", "status.json"):
        native.path(f"results/broken/{name}").unlink()
    failed = [r for r in native.bridge.collect(native.out_dir) if r.status == "failed"]
    folder = native.path("results/broken")
    assert {r.error for r in failed} == {
        f"lm-eval task {t}: no result (nothing ran; expected lm-eval's results_*.json in {folder})"
        for t in ("bb_qa_capitals", "bb_mcq_science_en_gen", "bb_qa_zh", "bb_ceval_mini_gen")
    }


def test_results_split_over_several_files_are_all_collected(native: Native) -> None:
    # By hand, a model whose tasks come from several include folders is one lm_eval command per folder, each
    # writing its own results file into the same output folder: every task is collected, not the last file's only.
    before = native.bridge.collect(native.out_dir)
    samples_before = native.bridge.collect_samples(native.out_dir)
    path = native.path(f"results/keyed/results_{STAMP}.json")
    whole = json.loads(path.read_text("utf-8"))
    later = "2026-11-30T00-05-00.000000"
    second = {
        "bb_qa_zh",
        "bb_ceval_mini_computer_network_gen",
        "bb_ceval_mini_high_school_chemistry_gen",
        "bb_ceval_mini_gen",
    }
    for stamp, keep in ((STAMP, lambda t: t not in second), (later, lambda t: t in second)):
        part = {**whole, "results": {t: e for t, e in whole["results"].items() if keep(t)}}
        part["group_subtasks"] = {g: s for g, s in whole["group_subtasks"].items() if keep(g)}
        native.path(f"results/keyed/results_{stamp}.json").write_text(json.dumps(part), "utf-8")
    for task in second:
        old = native.path(f"results/keyed/samples_{task}_{STAMP}.jsonl")
        if old.is_file():
            old.rename(old.with_name(f"samples_{task}_{later}.jsonl"))

    def key(r: Record) -> tuple[object, ...]:
        return (r.model, r.benchmark, r.subset, r.metric, r.status, r.value, r.n_samples)

    assert sorted(map(key, native.bridge.collect(native.out_dir))) == sorted(map(key, before))
    after = native.bridge.collect_samples(native.out_dir)
    assert sorted((s.benchmark, s.subset, s.sample_id) for s in after) == sorted(
        (s.benchmark, s.subset, s.sample_id) for s in samples_before
    )

"""A board that never misleads (issue 11): invalid grades are no score, judges and references are no
contestants, `--db` and the config rank one store alike, the CLI prints the board's 0-100 scale,
`benchbridge --version`, and a store holding a run with no models still makes a board.

Stores are built in-process with records shaped like the ones each bridge's `collect` writes
(field names and `extra` keys as in `bridges/frameworks/openai_evals/bridge.py` and `.../alpaca_eval/bridge.py`)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import yaml
from rich.console import Console

from bridges import FrameworkOutcome, RunOutcome, load_config
from bridges.cli import main, records_table
from bridges.records import Record
from leaderboards.agreement import agreement_table
from leaderboards.board import board_from_cli, build_board, open_board
from leaderboards.publish import publish
from leaderboards.store import ResultsStore
from leaderboards.testing import manifest_for, sample_config, sample_record, sample_runs
from tests.conftest import ROOT

RUN = "20261125-120000-abc123"
T = "2026-11-25T12:0{}:00+00:00"
DEFAULT, TUNED, GRADER = "smollm2-default", "smollm2-tuned", "judge"
JUDGE_NAME = f"weighted_alpaca_eval_gpt4_turbo@{DEFAULT}"  # what the AlpacaEval bridge stores for a model judge
JUDGE_LABEL = f"{DEFAULT} (weighted_alpaca_eval template)"
FACT = f"openai_evals/qa_capitals/fact_score@{GRADER}"
MATCH = "openai_evals/qa_capitals/match_accuracy"
LM = "lm_eval/qa_capitals/exact_match"
ALPACA = f"alpaca_eval/open_instructions/win_rate@{JUDGE_LABEL}"


def rec(framework: str, model: str, benchmark: str, metric: str, value: float, minute: int = 1, **kw: Any) -> Record:
    return sample_record(RUN, T.format(minute), framework, model, benchmark, metric, value, **kw)


def graded(model: str, counts: dict[str, int], *, carry_counts: bool = True) -> list[Record]:
    """A model-graded eval as `OpenAIEvalsBridge._collect_job` stores it: `fact_score` (primary;
    evals scores an invalid grade as the lowest choice, 0) and one `fact_count_<choice>` per choice.
    `carry_counts=False`: as stores written before the score's `extra` carried the counts."""
    n = sum(counts.values())
    score = counts.get("C", 0) / n
    extra: dict[str, Any] = {
        "eval": "qa_capitals.fact",
        "method": "fact",
        "completion_fns": [f"bb-{model}", "bb-judge"],
    }
    if carry_counts:
        extra |= {"n_invalid": counts.get("__invalid__", 0), "n_graded": n}
    common = {"judge": GRADER, "n_samples": n, "details_path": f"{RUN}/openai_evals/records/{model}/fact.jsonl"}
    out = [
        rec("openai_evals", model, "qa_capitals", "fact_score", score, extra={**extra, "report_key": "score"}, **common)
    ]
    for choice, count in counts.items():
        name = "invalid" if choice == "__invalid__" else choice
        out.append(
            rec(
                "openai_evals",
                model,
                "qa_capitals",
                f"fact_count_{name}",
                count,
                primary=False,
                scale=float(n),
                higher_is_better=choice == "C",
                extra={**extra, "report_key": f"counts/{choice}"},
                **common,
            )
        )
    return out


def demo_runs(carry_counts: bool = True) -> list[tuple[dict[str, Any], list[Record]]]:
    """The demo's shape: two contestants in lm_eval and evals (model-graded by `judge`, which is no
    contestant), AlpacaEval with the default model as reference and judge of the tuned one. The
    default's every fact grade was invalid, the tuned one's one of eight."""
    lm = [
        rec("lm_eval", DEFAULT, "qa_capitals", "exact_match", 0.75, n_samples=8),
        rec("lm_eval", TUNED, "qa_capitals", "exact_match", 0.875, n_samples=8),
    ]
    evals = [
        rec("openai_evals", DEFAULT, "qa_capitals", "match_accuracy", 0.625, minute=2, n_samples=8),
        rec("openai_evals", TUNED, "qa_capitals", "match_accuracy", 0.75, minute=2, n_samples=8),
        *graded(DEFAULT, {"__invalid__": 8}, carry_counts=carry_counts),
        *graded(TUNED, {"C": 7, "__invalid__": 1}, carry_counts=carry_counts),
    ]
    alpaca = [
        rec(
            "alpaca_eval",
            TUNED,
            "open_instructions",
            "win_rate",
            66.67,
            minute=3,
            scale=100.0,
            judge=JUDGE_NAME,
            n_samples=6,
            extra={"reference": DEFAULT, "mode": "community", "n_unparsed": 0},
        )
    ]
    runs = []
    for framework, records in (("lm_eval", lm), ("openai_evals", evals), ("alpaca_eval", alpaca)):
        manifest = manifest_for(RUN, framework, records)
        manifest["models"] = [
            {"name": m, "kind": "hf", "path": "~/.cache/benchbridge/models/smollm2-135m-instruct"}
            for m in (DEFAULT, TUNED, GRADER)
        ]
        runs.append((manifest, records))
    return runs


def demo_store(path: Path, carry_counts: bool = True) -> ResultsStore:
    store = ResultsStore(path)
    for manifest, records in demo_runs(carry_counts):
        store.add_run(manifest, records)
    return store


def demo_records(carry_counts: bool = True) -> list[Record]:
    return [r for _, records in demo_runs(carry_counts) for r in records]


# ---- invalid grades -------------------------------------------------------------------------


@pytest.mark.parametrize("carry_counts", [True, False], ids=["counts-in-extra", "older-store"])
def test_all_invalid_grades_are_no_score_and_not_ranked(carry_counts: bool) -> None:
    board = build_board(demo_records(carry_counts), average_over=["lm_eval/*", "openai_evals/*"])
    cell = board.cell(DEFAULT, FACT)
    assert (cell.status, cell.text, cell.value_100) == ("invalid", "invalid (8/8)", None)
    assert cell.reason is not None and "all 8 grades" in cell.reason
    partly = board.cell(TUNED, FACT)
    assert (partly.status, partly.text, partly.value_100) == ("ok", "87.50 (1 invalid)", 87.5)
    default, tuned = board.row(DEFAULT), board.row(TUNED)
    assert default.rank is None and default.coverage == "2/3"  # 0.00 was ranked and averaged before
    assert default.average == pytest.approx((75 + 62.5) / 2)
    assert tuned.rank == 1 and tuned.average == pytest.approx((87.5 + 75 + 87.5) / 3)
    assert board.provenance(cell)["invalid"] == "8/8" and board.provenance(partly)["invalid"] == "1/8"
    # the cross-framework table leaves the invalid score out as the board does
    table = agreement_table(board.records, min_frameworks=1)
    fact = [c for c in table.columns if "fact_score" in c]
    assert len(fact) == 1 and table.loc[("qa_capitals", "", TUNED), fact[0]] == 87.5
    assert table.loc[("qa_capitals", "", DEFAULT), fact[0]] != table.loc[("qa_capitals", "", DEFAULT), fact[0]]  # NaN


def test_alpaca_eval_unparsed_judgements_show_beside_the_win_rate() -> None:
    (win,) = [r for r in demo_records() if r.framework == "alpaca_eval"]
    partly = win.model_copy(update={"extra": {**win.extra, "n_unparsed": 2}})  # as AlpacaEval's bridge writes it
    cell = build_board([partly]).cell(TUNED, ALPACA)
    assert (cell.status, cell.text, cell.invalid_text) == ("ok", "66.67 (2 invalid)", "2")


def test_a_column_of_only_invalid_scores_does_not_take_every_rank() -> None:
    records = [r for r in demo_records() if r.framework != "alpaca_eval" and not r.model == TUNED]
    board = build_board(records)
    assert board.cell(DEFAULT, FACT).status == "invalid"
    assert FACT not in board.average_over and board.row(DEFAULT).rank == 1


def test_invalid_grades_show_in_every_published_format(tmp_path: Path) -> None:
    demo_store(tmp_path / "results.sqlite")
    board = open_board(tmp_path / "results.sqlite", average_over=["lm_eval/*", "openai_evals/*"])
    out = publish(board, tmp_path / "board").out
    csv_text = (out / "leaderboard.csv").read_text(encoding="utf-8")
    assert "invalid (8/8)" in csv_text and "87.50 (1 invalid)" in csv_text
    assert "invalid grades" in (out / "provenance.csv").read_text(encoding="utf-8").splitlines()[0]
    md = (out / "leaderboard.md").read_text(encoding="utf-8")
    assert "invalid (8/8)" in md and "87.50 (1 invalid)" in md
    html = (out / "index.html").read_text(encoding="utf-8")
    assert 'class="invalid' in html and "invalid (8/8)" in html and "87.50 (1 invalid)" in html

    from openpyxl import load_workbook

    sheet = load_workbook(out / "leaderboard.xlsx")["leaderboard"]
    header = [c.value for c in sheet[1]]
    rows = {row[1].value: row for row in sheet.iter_rows(min_row=2)}
    col = header.index(FACT)
    assert rows[DEFAULT][col].value == "invalid (8/8)"
    partly = rows[TUNED][col]
    assert partly.value == 87.5 and "(1 invalid)" in partly.number_format  # still a number


def test_terminal_board_shows_invalid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    demo_store(tmp_path / "results.sqlite")
    assert main(["board", "--db", str(tmp_path / "results.sqlite")]) == 0
    out = capsys.readouterr().out
    assert "invalid (8/8)" in out and "(1 invalid)" in out


def test_evals_collect_carries_the_invalid_counts(tmp_path: Path) -> None:
    """The bridge's own collect on a record file as oaieval writes it (spec, final_report, events)."""
    from tests.test_openai_evals import GRADER as GRADER_SPEC
    from tests.test_openai_evals import bridge_for, keyed_model, write_config

    options = {"grader": "grader", "datasets": {"qa_capitals": ["fact"]}}
    cfg = write_config(tmp_path / "cfg", [keyed_model(), GRADER_SPEC], options, datasets=["qa_capitals"])
    bridge = bridge_for(cfg)
    (job,) = bridge.jobs()
    out = tmp_path / "out"
    path = job.record_path(out)
    path.parent.mkdir(parents=True)
    lines = [
        {"spec": {"completion_fns": ["bb-keyed", "bb-grader"], "eval_name": "qa_capitals.fact", "run_id": "r1"}},
        {"final_report": {"counts/__invalid__": 7, "counts/C": 1, "score": 0.125}, "run_id": "r1"},
        *(
            {"run_id": "r1", "event_id": i, "sample_id": f"qa_capitals.fact.{i}", "type": "metrics", "data": {}}
            for i in range(8)
        ),
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    records = {r.metric: r for r in bridge.collect(out)}
    score = records["fact_score"]
    assert (score.extra["n_invalid"], score.extra["n_graded"]) == (7, 8)
    assert build_board(records.values()).cell("keyed", "openai_evals/qa_capitals/fact_score@grader").text == (
        "12.50 (7 invalid)"
    )


# ---- judges, references and graders ---------------------------------------------------------


def test_judge_label_names_the_model_that_judged_and_its_template(tmp_path: Path) -> None:
    board = build_board(demo_records())
    column = next(c for c in board.columns if c.framework == "alpaca_eval")
    assert column.judge == JUDGE_LABEL and column.id == ALPACA
    assert column.metric_label == f"win_rate (judge: {JUDGE_LABEL}) ↑"
    demo_store(tmp_path / "results.sqlite")
    out = publish(open_board(tmp_path / "results.sqlite"), tmp_path / "board").out
    for name in ("leaderboard.csv", "leaderboard.md", "index.html", "provenance.csv"):
        text = (out / name).read_text(encoding="utf-8")
        assert JUDGE_LABEL in text and "gpt4_turbo" not in text, name
    judged = [
        result["metric_config"]["llm_scoring"]["judges"][0]["model_info"]
        for path in (out / "every_eval_ever").glob("*alpaca_eval*.json")
        for result in json.loads(path.read_text(encoding="utf-8"))["evaluation_results"]
        if "llm_scoring" in result["metric_config"]
    ]
    assert judged and all(info["name"] == DEFAULT and info["additional_details"]["kind"] == "hf" for info in judged)


def test_judges_graders_and_references_are_no_contestants(tmp_path: Path) -> None:
    demo_store(tmp_path / "results.sqlite")
    config = sample_config(tmp_path, [DEFAULT, TUNED, GRADER], {})
    board, _ = board_from_cli(str(config), None)
    assert [r.model for r in board.rows] == [TUNED, DEFAULT]  # no row for the grader: "judge: 0/3 missing"
    reference = board.cell(DEFAULT, ALPACA)
    assert (reference.status, reference.text) == ("missing", "reference")
    assert reference.reason == f"{DEFAULT} was alpaca_eval's reference here, not a contestant"
    # before AlpacaEval or evals ran, the config alone says who judges, grades and is the reference
    early = tmp_path / "early"
    early.mkdir()
    ResultsStore(early / "results.sqlite").add_run(*demo_runs()[0])  # lm_eval's run only
    config = sample_config(early, [DEFAULT, "ref", GRADER], {})
    alpaca = {"reference": {"model": "ref"}, "judge": {"model": "ref", "kind": "logprob"}}
    frameworks = {"frameworks": {"alpaca_eval": alpaca, "openai_evals": {"grader": GRADER}}}
    config.write_text(config.read_text() + yaml.safe_dump(frameworks), encoding="utf-8")
    board, _ = board_from_cli(str(config), None)
    assert [r.model for r in board.rows] == [TUNED, DEFAULT]  # no "ref" or "judge" row, all missing
    # a grader that was also evaluated somewhere is a contestant there
    also = rec("lm_eval", GRADER, "qa_capitals", "exact_match", 0.5, n_samples=8)
    assert GRADER in [r.model for r in build_board([*demo_records(), also], models=[GRADER]).rows]


def test_db_and_config_rank_one_store_alike(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The demo's store: `board --db` averaged 12 columns and left the AlpacaEval reference unranked,
    `board CONFIG` (publish.average_over without AlpacaEval) averaged 11 and ranked both."""
    db = tmp_path / "results.sqlite"
    demo_store(db)
    config = sample_config(
        tmp_path, [DEFAULT, TUNED, GRADER], {"average_over": ["opencompass/*", "lm_eval/*", "openai_evals/*"]}
    )
    from_db, _ = board_from_cli(None, str(db))
    from_config, _ = board_from_cli(str(config), None)
    assert from_db.average_over == from_config.average_over == [LM, FACT, MATCH]
    assert ALPACA not in from_db.average_over  # its reference cannot have a win rate of its own
    assert from_db.table() == from_config.table()
    assert [(r.model, r.rank) for r in from_db.rows] == [(TUNED, 1), (DEFAULT, None)]  # DEFAULT: invalid fact
    assert main(["board", "--db", str(db)]) == 0
    db_out = capsys.readouterr().out
    assert main(["board", str(config)]) == 0
    config_out = capsys.readouterr().out
    assert db_out.splitlines()[1:] == config_out.splitlines()[1:]  # all but the title line


# ---- CLI ------------------------------------------------------------------------------------


def test_run_no_publish_prints_the_board_scale(tmp_path: Path) -> None:
    records = demo_records()
    outcome = RunOutcome(RUN, tmp_path / RUN, tmp_path / "results.sqlite")
    for framework in ("lm_eval", "openai_evals", "alpaca_eval"):
        mine = [r for r in records if r.framework == framework]
        outcome.frameworks.append(FrameworkOutcome(framework, "ok", mine, 1.0))
    console = Console(record=True, width=200)
    console.print(records_table(outcome))
    text = console.export_text()
    assert "value (0-100)" in text
    rows = {tuple(re.split(r"\s*│\s*", line.strip("│ "))[:4]): line for line in text.splitlines() if "│" in line}
    assert "87.50" in rows[("lm_eval", TUNED, "qa_capitals", "exact_match")]  # 0.875 before
    assert "66.67" in rows[("alpaca_eval", TUNED, "open_instructions", "win_rate")]  # already 0-100
    assert "invalid (8/8)" in rows[("openai_evals", DEFAULT, "qa_capitals", "fact_score")]  # 0.00 before
    assert "87.50 (1 invalid)" in rows[("openai_evals", TUNED, "qa_capitals", "fact_score")]
    assert not re.search(r"│ 0\.\d+ ", text)


def test_version() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bridges.cli", "--version"], capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, f"benchbridge {version('benchbridge')}\n", "")


def test_a_store_with_a_run_without_models_makes_a_board(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest, _ = sample_runs()[0]
    store = ResultsStore(tmp_path / "results.sqlite")
    store.add_run({**manifest, "models": [], "status": "ok", "error": None}, [])
    assert main(["board", "--db", str(tmp_path / "results.sqlite")]) == 0
    assert "rank" in capsys.readouterr().out
    assert main(["publish", "--db", str(tmp_path / "results.sqlite"), "--out", str(tmp_path / "b")]) == 0
    assert (tmp_path / "b" / "leaderboard.csv").read_text(encoding="utf-8").startswith("rank,model,average,coverage")


@pytest.mark.framework
def test_a_real_eval_whose_grader_never_graded_shows_invalid(tmp_path: Path) -> None:
    """oaieval for real: a grader that answers every grading prompt with something that is no choice
    (evals counts `__invalid__` and scores 0.0); the board says `invalid (8/8)` and does not average it."""
    from tests.test_openai_evals import GRADER as GRADER_SPEC
    from tests.test_openai_evals import keyed_model, write_config

    abstainer = {**GRADER_SPEC, "args": {"abstain_on": [""]}}  # "" is in every prompt
    options = {"grader": "grader", "datasets": {"qa_capitals": ["match", "fact"]}}
    cfg = write_config(tmp_path / "cfg", [keyed_model(), abstainer], options, datasets=["qa_capitals"])
    assert main(["run", str(cfg), "--only", "openai_evals"]) == 0
    config = load_config(cfg)
    score = next(r for r in ResultsStore(config.results_db).records() if r.metric == "fact_score")
    assert (score.value, score.extra["n_invalid"], score.extra["n_graded"]) == (0.0, 8, 8)  # what evals wrote
    board = open_board(config.results_db)
    cell = board.cell("keyed", "openai_evals/qa_capitals/fact_score@grader")
    assert (cell.status, cell.text) == ("invalid", "invalid (8/8)")
    assert board.cell("keyed", "openai_evals/qa_capitals/match_accuracy").text == "87.50"
    # no valid fact score for anyone: the column is shown, not averaged, and takes no rank away
    assert "openai_evals/qa_capitals/fact_score@grader" not in board.average_over
    assert (board.row("keyed").average, board.row("keyed").coverage) == (87.5, "1/1")
    published = (config.work_dir / "leaderboard" / "leaderboard.csv").read_text(encoding="utf-8")
    assert "invalid (8/8)" in published and ",0.00," not in published

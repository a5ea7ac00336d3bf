"""AlpacaEval bridge: the real `alpaca_eval make_leaderboard`, judged through `benchbridge serve`.

Deterministic models answer "An answer." repeated; the reference repeats it twice. A `python` judge
reads AlpacaEval's own judge prompt (which shows the pair in a random order) and prefers the longer
output, so every win rate is known in advance.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridges import BenchbridgeError, load_config
from bridges import run as run_config
from bridges.cli import main
from bridges.frameworks import RunContext
from bridges.frameworks.alpaca_eval.bridge import AlpacaEvalBridge, alpaca_eval_root, read_board
from bridges.records import Record
from tests.conftest import DATASETS, ROOT

OPEN = DATASETS / "open_instructions"
N = 6  # instructions in open_instructions
JUDGE = "chatgpt_fn@longer-judge"


def answer_key(name: str, length: int) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "python",
        "target": "bridges.testing:AnswerKeyModel",
        "args": {"datasets": [str(OPEN)], "open_length": length},
    }


REFERENCE = answer_key("ref", 2)
LONGER, SHORTER, SAME = answer_key("longer", 3), answer_key("shorter", 1), answer_key("same", 2)
HALF = {  # longer than the reference on three instructions, shorter on the other three
    "name": "half",
    "kind": "python",
    "target": "tests._alpaca_models:SplitLengthModel",
    "args": {
        "long_on": ["haiku", "sky", "emails"],
        "long_answer": "An answer. An answer. An answer.",
        "short_answer": "An answer.",
    },
}
MUTE = {"name": "mute", "kind": "python", "target": "tests._alpaca_models:SplitLengthModel",
        "args": {"long_on": [], "long_answer": "", "short_answer": "Nothing to say."}}  # fmt: skip


def longer_judge(**args: Any) -> dict[str, Any]:
    return {"name": "longer-judge", "kind": "python", "target": "tests._alpaca_models:LongerJudge", "args": args}


def write_config(
    folder: Path, models: list[dict], alpaca: dict[str, Any], datasets: tuple[Path, ...] = (OPEN,)
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "name": "alpaca-test",
        "work_dir": str(folder / "runs"),
        "models": models,
        "datasets": [{"path": str(d)} for d in datasets],
        "frameworks": {"alpaca_eval": alpaca},
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def make_bridge(config: Path) -> AlpacaEvalBridge:
    ctx = RunContext(config=load_config(config), run_id="test-run", config_hash="h")
    return AlpacaEvalBridge(ctx)


def by_model(records: list[Record]) -> dict[str, dict[str, Record]]:
    out: dict[str, dict[str, Record]] = {}
    for r in records:
        out.setdefault(r.model, {})[r.metric] = r
    return out


def assert_records_equal_board(records: list[Record], board_csv: Path) -> None:
    board = read_board(board_csv)
    rows = by_model(records)
    for model, cells in board.items():
        for column, cell in cells.items():
            if column in ("", "mode"):
                continue
            record = rows[model][column]
            assert record.value == (float(cell) if cell else None), (model, column)
            assert record.status == "ok"
            assert record.benchmark == "open_instructions"
            assert record.framework == "alpaca_eval"
        win = rows[model]["win_rate"]
        assert win.primary and win.scale == 100.0
        assert win.stderr == float(cells["standard_error"])
        assert win.n_samples == int(cells["n_total"])
        assert [r.metric for r in rows[model].values() if r.primary] == ["win_rate"]


# ---- the tool-call judge (chatgpt_fn-style), end to end through the runner ----


@pytest.fixture(scope="module")
def tool_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[AlpacaEvalBridge, Path, list[Record]]:
    folder = tmp_path_factory.mktemp("alpaca_tool")
    alpaca = {"reference": {"model": "ref"}, "judge": {"model": longer_judge(), "kind": "tool"}}
    config = write_config(folder, [REFERENCE, LONGER, SHORTER, HALF, SAME], alpaca)
    outcome = run_config(load_config(config), ["alpaca_eval"])  # what `benchbridge run --only alpaca_eval` does
    assert outcome.ok, [f.error for f in outcome.frameworks]
    bridge = make_bridge(config)
    out = outcome.run_dir / "alpaca_eval"
    records = bridge.collect(out)
    (framework,) = outcome.frameworks
    assert [(r.model, r.metric, r.value) for r in framework.records] == [(r.model, r.metric, r.value) for r in records]
    return bridge, out, records


@pytest.mark.framework
def test_win_rates_follow_the_longer_output(tool_run: tuple[AlpacaEvalBridge, Path, list[Record]]) -> None:
    _, _, records = tool_run
    rows = by_model(records)
    assert sorted(rows) == ["half", "longer", "same", "shorter"]  # the reference is not evaluated
    got = {
        m: (r["win_rate"].value, r["n_wins"].value, r["n_wins_base"].value, r["n_draws"].value) for m, r in rows.items()
    }
    assert got == {
        "longer": (100.0, 6, 0, 0),
        "shorter": (0.0, 0, 6, 0),
        "half": (50.0, 3, 3, 0),
        "same": (50.0, 0, 0, 6),  # identical outputs are draws without asking the judge
    }
    assert {r.judge for r in records} == {JUDGE}
    assert all(rows[m]["n_unparsed"].value == 0 for m in rows)


@pytest.mark.framework
def test_samples_are_the_judged_pairs_averaging_to_the_win_rate(
    tool_run: tuple[AlpacaEvalBridge, Path, list[Record]],
) -> None:
    bridge, out, records = tool_run
    samples = bridge.collect_samples(out)
    ids = [f"ins-{i}" for i in range(1, N + 1)]
    expected = {  # model -> per-sample win score (preference - 1), in instruction order
        "longer": [1.0] * 6,
        "shorter": [0.0] * 6,
        "half": [1.0, 1.0, 1.0, 0.0, 0.0, 0.0],  # longer on haiku, sky, emails (ins-1..3)
        "same": [0.5] * 6,  # identical outputs: draws, the judge not asked
    }
    win = {r.model: r for r in records if r.metric == "win_rate"}
    for model, scores in expected.items():
        mine = sorted((s for s in samples if s.model == model), key=lambda s: s.sample_id)
        assert [s.sample_id for s in mine] == ids
        assert [s.scores["win_rate"] for s in mine] == scores
        assert sum(scores) / N * 100 == win[model].value
        assert all(s.benchmark == "open_instructions" and not s.invalid and s.judge is not None for s in mine)
    (half1,) = [s for s in samples if (s.model, s.sample_id) == ("half", "ins-1")]
    assert half1.prompt == "Write a haiku about autumn leaves."
    assert (half1.output, half1.references) == ("An answer. An answer. An answer.", ["An answer. An answer."])
    assert half1.judge is not None and half1.judge.verdict == "2.0" and half1.judge.model == JUDGE
    assert half1.judge.reasoning in ('{"best_output": "Output (a)"}', '{"best_output": "Output (b)"}')


@pytest.mark.framework
def test_records_equal_the_board_csv(tool_run: tuple[AlpacaEvalBridge, Path, list[Record]]) -> None:
    _, out, records = tool_run
    assert_records_equal_board(records, out / "open_instructions" / "leaderboard.csv")


@pytest.mark.framework
def test_the_judge_saw_both_orders_and_answered_through_a_tool_call(
    tool_run: tuple[AlpacaEvalBridge, Path, list[Record]],
) -> None:
    _, out, _ = tool_run
    annotations = json.loads((out / "open_instructions/results/longer/annotations.json").read_text())
    raw = {a["preference_raw_completion"] for a in annotations}
    assert raw == {'{"best_output": "Output (a)"}', '{"best_output": "Output (b)"}'}  # AlpacaEval swapped some pairs
    assert {a["preference"] for a in annotations} == {2.0}


@pytest.mark.framework
def test_outputs_judge_folder_and_cache_live_in_the_work_dir(
    tool_run: tuple[AlpacaEvalBridge, Path, list[Record]],
) -> None:
    _, out, _ = tool_run
    rows = json.loads((out / "open_instructions/outputs/half.json").read_text())
    assert rows[0] == {
        "instruction": "Write a haiku about autumn leaves.",
        "input": "",
        "output": "An answer. An answer. An answer.",
        "generator": "half",
        "dataset": "open_instructions",
        "datasplit": "eval",
    }
    assert len(rows) == N
    assert {r["generator"] for r in json.loads((out / "open_instructions/reference.json").read_text())} == {"ref"}
    judge = out / "judge" / JUDGE
    config = yaml.safe_load((judge / "configs.yaml").read_text())[JUDGE]
    assert (judge.parent / config["prompt_template"]).is_file()  # resolved from the folder's parent
    assert config["completions_kwargs"]["model_name"] == "longer-judge"
    client = yaml.safe_load(Path(config["completions_kwargs"]["client_config_path"]).read_text())
    assert client["default"][0]["base_url"].startswith("http://127.0.0.1:")
    cache = json.loads((judge / "annotations_seed0_configs.json").read_text())
    assert len(cache) == 3 * N  # longer, shorter, half: the draws were never asked
    assert not list((alpaca_eval_root() / "evaluators_configs").glob(f"**/annotations_seed*{JUDGE}*"))
    readme = (out / "README.md").read_text()
    assert "alpaca_eval make_leaderboard --leaderboard_path leaderboard.csv" in readme
    assert "--fn_metric get_winrate --sort_by win_rate" in readme


# ---- the logprob judge (weighted_alpaca_eval_gpt4_turbo-style) ----


@pytest.mark.framework
def test_logprob_judge_with_a_python_model(tmp_path: Path) -> None:
    alpaca = {"reference": {"model": REFERENCE}, "judge": {"model": longer_judge(), "kind": "logprob"}}
    bridge = make_bridge(write_config(tmp_path, [LONGER, SHORTER], alpaca))
    records = bridge.run(tmp_path / "out")
    rows = by_model(records)
    # The python judge's whole answer ("m" or "M") is the one token, with logprob 0: probability 1.
    assert {m: rows[m]["win_rate"].value for m in rows} == {"longer": 100.0, "shorter": 0.0}
    assert {r.judge for r in records} == {"weighted_alpaca_eval_gpt4_turbo@longer-judge"}
    assert_records_equal_board(records, tmp_path / "out/open_instructions/leaderboard.csv")


@pytest.mark.framework
def test_logprob_judge_with_an_hf_model_reads_real_logprobs(tmp_path: Path, tiny_model_path: Path) -> None:
    from tests._alpaca_models import build_m_or_m_model

    judge_path = build_m_or_m_model(str(tiny_model_path), str(tmp_path / "m-or-M"))
    judge = {"name": "tiny-judge", "kind": "hf", "path": judge_path, "max_seq_len": 4096, "batch_size": 4}
    alpaca = {"reference": {"model": REFERENCE}, "judge": {"model": judge, "kind": "logprob"}}
    bridge = make_bridge(write_config(tmp_path, [LONGER, SHORTER], alpaca))
    records = bridge.run(tmp_path / "out")
    assert_records_equal_board(records, tmp_path / "out/open_instructions/leaderboard.csv")
    rows = by_model(records)
    for model in ("longer", "shorter"):
        assert rows[model]["n_total"].value == N and rows[model]["n_unparsed"].value == 0
        assert 0.0 < rows[model]["win_rate"].value < 100.0  # weighted: a probability, not a vote
    annotations = json.loads((tmp_path / "out/open_instructions/results/longer/annotations.json").read_text())
    for a in annotations:
        (token,) = a["preference_raw_completion"]["logprobs"]["content"]
        top = {t["token"]: t["logprob"] for t in token["top_logprobs"]}
        assert len(top) == 5 and {"m", "M"} <= set(top)
        assert all(isinstance(v, float) and -30 < v < 0 for v in (top["m"], top["M"]))
        assert 1.0 < a["preference"] < 2.0


# ---- unparseable judgements: reported, not losses, not cached, asked again ----


@pytest.mark.framework
def test_unparsed_judgements_are_reported_and_asked_again(tmp_path: Path) -> None:
    out = tmp_path / "out"
    # Undecided on two instructions, and on every pair that shows the mute model's answer.
    undecided = longer_judge(undecided_on=["haiku", "emails", "Nothing to say."])
    alpaca = {"reference": {"model": REFERENCE}, "judge": {"model": undecided, "kind": "tool"}}
    first = make_bridge(write_config(tmp_path / "a", [LONGER, MUTE], alpaca))
    records = first.run(out)
    rows = by_model(records)
    longer = rows["longer"]
    assert (longer["win_rate"].value, longer["n_total"].value, longer["n_unparsed"].value) == (100.0, 4, 2)
    samples = {s.sample_id: s for s in first.collect_samples(out)}  # mute failed: none of its pairs
    assert {i for i, s in samples.items() if s.invalid} == {"ins-1", "ins-3"}  # unparsed: invalid, unscored
    assert {i: s.scores["win_rate"] for i, s in samples.items()} == {f"ins-{i}": 1.0 for i in (2, 4, 5, 6)} | {
        "ins-1": None,
        "ins-3": None,
    }
    assert longer["win_rate"].status == "ok" and longer["win_rate"].extra["n_unparsed"] == 2
    (mute,) = rows["mute"].values()
    assert mute.status == "failed" and mute.value is None
    assert "no parseable judgement for any of 6 pairs" in (mute.error or "")
    cache = json.loads((out / f"judge/{JUDGE}/annotations_seed0_configs.json").read_text())
    assert len(cache) == 4 and all(r["preference"] in (1.0, 2.0) for r in cache)  # no -1 left to stick

    # Same judge name, now decisive: another version of the judge (its args changed), so none of the
    # earlier judgements stands; every pair is asked again and the incomplete rows are complete.
    alpaca["judge"]["model"] = longer_judge()
    bridge = make_bridge(write_config(tmp_path / "b", [LONGER, MUTE], alpaca))
    rows = by_model(bridge.run(out))
    assert (rows["longer"]["win_rate"].value, rows["longer"]["n_total"].value) == (100.0, N)
    assert (rows["mute"]["win_rate"].value, rows["mute"]["n_total"].value) == (0.0, N)
    assert rows["longer"]["n_unparsed"].value == 0
    assert len(json.loads((out / f"judge/{JUDGE}/annotations_seed0_configs.json").read_text())) == 2 * N

    # Complete rows are on the board: AlpacaEval's skip rule, no make_leaderboard at all...
    log = out / "open_instructions/make_leaderboard.log"
    before = log.stat().st_mtime_ns
    again = bridge.run(out)
    assert log.stat().st_mtime_ns == before
    assert [(r.model, r.metric, r.value) for r in again] == [(r.model, r.metric, r.value) for r in bridge.collect(out)]
    # ...unless overwrite.
    alpaca["overwrite"] = True
    make_bridge(write_config(tmp_path / "c", [LONGER, MUTE], alpaca)).run(out)
    assert log.stat().st_mtime_ns != before
    assert "--is_overwrite_leaderboard True" in log.read_text().splitlines()[0]


STALE_SOURCE = """
class Model:  # version {version}
    def __call__(self, batch):
        return [{answer!r}] * len(batch)
"""


@pytest.mark.framework
def test_outputs_are_reused_only_while_the_model_is_unchanged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rerun into the same folder keeps outputs (and board rows) of an unchanged model; after the model's
    code changes (its answer identity, as the response cache keys it), they are generated and judged again."""
    import uuid

    module = f"bb_alpaca_stale_{uuid.uuid4().hex[:8]}"
    source = tmp_path / f"{module}.py"
    source.write_text(STALE_SOURCE.format(version=1, answer="Short."), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(tmp_path), os.environ.get("PYTHONPATH")) if p))
    model = {"name": "stale", "kind": "python", "target": f"{module}:Model"}
    alpaca = {"reference": {"model": REFERENCE}, "judge": {"model": longer_judge(), "kind": "tool"}}
    config = write_config(tmp_path / "cfg", [model], alpaca)
    out = tmp_path / "out"
    outputs = out / "open_instructions" / "outputs" / "stale.json"

    def win_rate() -> float | None:
        return by_model(make_bridge(config).run(out))["stale"]["win_rate"].value

    assert win_rate() == 0.0  # "Short." loses every pair to the reference's two sentences
    written = outputs.stat().st_mtime_ns
    assert win_rate() == 0.0
    assert outputs.stat().st_mtime_ns == written  # unchanged model: its outputs were reused
    source.write_text(STALE_SOURCE.format(version=2, answer="A much longer answer than the reference."), "utf-8")
    sys.modules.pop(module, None)  # as a new process would, import the new code
    assert win_rate() == 100.0
    assert {r["output"] for r in json.loads(outputs.read_text("utf-8"))} == {"A much longer answer than the reference."}


# ---- prepare: artifacts a user can run by hand ----


@pytest.mark.framework
def test_prepare_writes_artifacts_the_readme_command_runs(tmp_path: Path) -> None:
    from bridges.models import parse_model_spec
    from bridges.serve import serving

    alpaca = {"reference": {"model": "ref"}, "judge": {"model": longer_judge(), "kind": "tool"}}
    config = write_config(tmp_path, [REFERENCE, LONGER], alpaca)
    out = tmp_path / "prepared"
    assert main(["prepare", str(config), "--out", str(out), "--only", "alpaca_eval"]) == 0
    folder = out / "alpaca_eval"
    judge = folder / "judge" / JUDGE
    for path in ("open_instructions/outputs/longer.json", "open_instructions/reference.json", "README.md"):
        assert (folder / path).is_file(), path
    config_yaml = yaml.safe_load((judge / "configs.yaml").read_text())[JUDGE]
    assert config_yaml["completions_kwargs"]["client_config_path"] == str(judge / "client_config.yaml")
    assert yaml.safe_load((judge / "serve.yaml").read_text())["models"][0]["name"] == "longer-judge"
    # By hand: serve the judge, point the client config at it, run the README's command.
    command = next(
        line.strip() for line in (folder / "README.md").read_text().splitlines() if "make_leaderboard" in line
    )
    with serving(parse_model_spec(longer_judge())) as base_url:
        client = {"default": [{"api_key": "x", "base_url": base_url}]}
        (judge / "client_config.yaml").write_text(yaml.safe_dump(client))
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
        done = subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert read_board(folder / "open_instructions/leaderboard.csv")["longer"]["win_rate"] == "100.0"


# ---- bad input: one clear line, nothing written ----


def test_instruction_file_with_empty_lines_or_duplicates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name, text, message in [
        ("empty", "first\n\nthird\n", "empty.txt:2: empty line (one instruction per line)"),
        ("dupes", "first\nsecond\nfirst\n", "dupes.txt:3: duplicate of line 1"),
    ]:
        source = tmp_path / f"{name}.txt"
        source.write_text(text)
        out = tmp_path / name
        assert main(["datasets", "import", str(source), "--from", "text", "--name", name, "--out", str(out)]) == 2
        assert capsys.readouterr().err.strip().endswith(message)
        assert not out.exists()
    good = tmp_path / "good.txt"
    shutil.copy(OPEN / "instructions.txt", good)
    assert (
        main(["datasets", "import", str(good), "--from", "text", "--name", "mine", "--out", str(tmp_path / "mine")])
        == 0
    )


def reference_file(tmp_path: Path, rows: object) -> Path:
    path = tmp_path / "ref.json"
    path.write_text(json.dumps(rows), encoding="utf-8")
    return path


def instructions() -> list[str]:
    return (OPEN / "instructions.txt").read_text(encoding="utf-8").splitlines()


def test_reference_outputs_missing_instructions_fail_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [{"instruction": i, "output": "ref", "generator": "gpt-3.5-turbo"} for i in instructions()[:4]]
    ref = reference_file(tmp_path, rows)
    alpaca = {"reference": {"outputs": str(ref)}, "judge": {"model": longer_judge(), "kind": "tool"}}
    config = write_config(tmp_path, [LONGER], alpaca)
    out = tmp_path / "prepared"
    assert main(["prepare", str(config), "--out", str(out), "--only", "alpaca_eval"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"benchbridge: error: {ref}: no reference output for 2 of 6 instructions of dataset open_instructions "
        "(first: 'List four healthy breakfast ideas.'); every instruction needs one"
    )
    assert not out.exists()


def test_a_complete_reference_file_is_used_as_given(tmp_path: Path) -> None:
    rows = [{"instruction": i, "output": f"ref {i}", "generator": "gpt-3.5-turbo"} for i in reversed(instructions())]
    alpaca = {
        "reference": {"outputs": str(reference_file(tmp_path, rows))},
        "judge": {"model": longer_judge(), "kind": "tool"},
    }
    bridge = make_bridge(write_config(tmp_path, [LONGER], alpaca))
    written = bridge.prepare(tmp_path / "out")
    reference = json.loads((tmp_path / "out/open_instructions/reference.json").read_text())
    assert [r["output"] for r in reference] == [f"ref {i}" for i in instructions()]  # dataset order
    assert {r["generator"] for r in reference} == {"gpt-3.5-turbo"}
    assert tmp_path / "out/README.md" in written
    # The bundled example of a user-supplied reference (hand-written answers) covers the dataset.
    alpaca["reference"] = {"outputs": str(OPEN / "reference_outputs.json")}
    assert (
        make_bridge(write_config(tmp_path / "bundled", [LONGER], alpaca)).reference.generator == "handwritten-reference"
    )


@pytest.mark.parametrize(
    ("alpaca", "message"),
    [
        ({"reference": {"outputs": "ref.json"}, "judge": {"model": "longer", "kind": "tool"}},
         "ref.json: item 1: output: missing or not a string"),
        ({"reference": {"model": "ref", "outputs": "x.json"}, "judge": {"builtin": "chatgpt_fn"}},
         "frameworks.alpaca_eval.reference: Value error, give exactly one of model (a model name or spec) or outputs"),
        ({"reference": {"model": "ref"}, "judge": {"model": "longer"}},
         "frameworks.alpaca_eval.judge: Value error, kind is required with model"),
        ({"reference": {"model": "ref"}, "judge": {"builtin": "no_such_judge"}},
         "frameworks.alpaca_eval.judge.builtin: 'no_such_judge' is not an AlpacaEval judge; known: "),
        ({"reference": {"model": "ref"}, "judge": {"builtin": "chatgpt_fn"}},
         "frameworks.alpaca_eval.judge.builtin: chatgpt_fn calls the OpenAI API: set OPENAI_API_KEY"),
        ({"reference": {"model": "ref"}, "judge": {"model": "longer", "kind": "tool"}, "metric": "length_controlled"},
         "frameworks.alpaca_eval.metric: length_controlled is defined on the official 805-instruction AlpacaEval set; "
         "dataset open_instructions has 6 (use metric: win_rate)"),
        ({"reference": {"model": "nobody"}, "judge": {"model": "longer", "kind": "tool"}},
         "frameworks.alpaca_eval.reference.model: no model named 'nobody'"),
    ],
)  # fmt: skip
def test_bad_options_are_one_line_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, alpaca: dict[str, Any], message: str
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.chdir(tmp_path)  # no .env with a key
    rows = [{"instruction": i, "output": "x"} for i in instructions()]
    rows[1].pop("output")
    reference_file(tmp_path, rows)
    config = write_config(tmp_path, [REFERENCE, LONGER, SHORTER], alpaca)
    with pytest.raises(BenchbridgeError) as err:
        make_bridge(config)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_no_open_dataset_is_an_error(tmp_path: Path) -> None:
    alpaca = {"reference": {"model": "ref"}, "judge": {"model": longer_judge(), "kind": "tool"}}
    config = write_config(tmp_path, [REFERENCE, LONGER], alpaca, datasets=(DATASETS / "qa_capitals",))
    with pytest.raises(BenchbridgeError, match="no open dataset for alpaca_eval"):
        make_bridge(config)


def test_builtin_judge_is_copied_with_its_prompt_and_no_key_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    alpaca = {"reference": {"model": "ref"}, "judge": {"builtin": "weighted_alpaca_eval_gpt4_turbo"}}
    bridge = make_bridge(write_config(tmp_path, [REFERENCE, LONGER], alpaca))
    written = bridge.prepare(tmp_path / "out")
    judge = tmp_path / "out/judge/weighted_alpaca_eval_gpt4_turbo"
    config = yaml.safe_load((judge / "configs.yaml").read_text())["weighted_alpaca_eval_gpt4_turbo"]
    assert config["prompt_template"] == "weighted_alpaca_eval_gpt4_turbo/alpaca_eval_clf.txt"
    assert (judge.parent / config["prompt_template"]).read_text().startswith("<|im_start|>system")
    assert config["completions_kwargs"]["model_name"] == "gpt-4-1106-preview"
    assert not (judge / "client_config.yaml").exists()
    for path in written:
        assert "sk-test-not-a-real-key" not in path.read_text(encoding="utf-8")


def test_the_alpaca_eval_module_does_not_import_the_framework() -> None:
    code = "import sys, bridges.frameworks.alpaca_eval.bridge; print('alpaca_eval' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"

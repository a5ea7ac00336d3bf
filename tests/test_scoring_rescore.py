"""`benchbridge rescore` with a built-in judge, and the scorer identity on the terminal board (issue 15).

The judge is `path: builtin:smollm2-135m-instruct` with BENCHBRIDGE_MODELS pointing at a folder where that
built-in's converted copy is a tiny GPT-2 made here, which answers "7" to anything (its final layer norm
outputs a constant that only the token "7" matches). So the rescore loads a real `hf` model through
the built-in path, in seconds, and its verdicts are known: a rating of 7 for every answer.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from tests.test_scoring import log_lines

ROOT = Path(__file__).resolve().parents[1]
RUBRIC = "default:\n  mode: score\n  template: '{marker}Question: {{question}} Answer: {{answer}} Rating?'\n"


def build_seven_judge(folder: Path, tokenizer_from: Path) -> None:
    """A GPT-2 whose every next token is "7", with the tiny test model's tokenizer and chat template."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    tok = AutoTokenizer.from_pretrained(tokenizer_from)
    seven = tok.convert_tokens_to_ids("7")
    config = GPT2Config(
        vocab_size=len(tok),
        n_positions=2048,
        n_embd=8,
        n_layer=1,
        n_head=1,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.eos_token_id,
    )
    model = GPT2LMHeadModel(config)
    with torch.no_grad():
        model.transformer.ln_f.weight.zero_()  # the last hidden state is the bias, whatever the input
        model.transformer.ln_f.bias.fill_(1.0)
        model.transformer.wte.weight.zero_()  # tied to the output layer: logit of token j = sum(row j)
        model.transformer.wte.weight[seven] = 1.0
    model.save_pretrained(folder)
    tok.save_pretrained(folder)


def write_config(tmp: Path, marker: str = "") -> Path:
    (tmp / "rubric.yaml").write_text(RUBRIC.format(marker=marker), "utf-8")
    cfg = tmp / "scoring.yaml"
    cfg.write_text(
        f"""
name: rescore-builtin-judge
work_dir: runs
cache: {{path: cache.sqlite}}
models:
  - name: coder
    kind: python
    target: tests._scoring_models:CodePlanModel
    args: {{log: "{tmp / "coder.log"}", plan: {{}}, default: "Blue light scatters more."}}
  - name: judge
    kind: hf
    path: builtin:smollm2-135m-instruct
datasets:
  - path: {ROOT / "custom_datasets" / "gen_zh_en"}
frameworks:
  scoring:
    models: [coder]
    scorers:
      - {{name: judge, model: judge, rubric: rubric.yaml, max_new_tokens: 1}}
""",
        "utf-8",
    )
    return cfg


def terminal_board(cfg: Path) -> str:
    from rich.console import Console

    from leaderboards.board import board_from_cli, rich_table

    board, _ = board_from_cli(str(cfg), None)
    out = io.StringIO()
    Console(file=out, width=80).print(rich_table(board, 80))
    return out.getvalue()


@pytest.fixture(scope="module")
def rescored(tmp_path_factory: pytest.TempPathFactory, tiny_model_path: Path) -> dict[str, Any]:
    from rich.console import Console

    from bridges import load_config, run
    from bridges.cli import records_table
    from bridges.scoring.rescore import rescore
    from leaderboards.store import ResultsStore

    tmp = tmp_path_factory.mktemp("rescore")
    build_seven_judge(tmp / "models" / "SmolLM2-135M-Instruct", tiny_model_path)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BENCHBRIDGE_MODELS", str(tmp / "models"))  # builtin:smollm2-135m-instruct is the seven judge
        cfg = write_config(tmp)
        outcome = run(load_config(cfg))
        out = io.StringIO()
        Console(file=out, width=80).print(records_table(outcome))
        before = terminal_board(cfg)
        coder_calls = log_lines(tmp / "coder.log")
        write_config(tmp, marker="Be strict. ")  # a rubric edit: a new judge identity
        again = rescore(load_config(cfg), ["judge"])
        after = terminal_board(cfg)
    store = ResultsStore(tmp / "runs" / "results.sqlite")
    return {
        "outcome": outcome,
        "run_table": out.getvalue(),
        "before": before,
        "after": after,
        "rescore": again,
        "store": store,
        "coder_calls": (coder_calls, log_lines(tmp / "coder.log")),
    }


def test_rescore_with_a_builtin_judge_asks_its_converted_folder(rescored: dict[str, Any]) -> None:
    # Before 1623aca the judge scorer took the spec before the built-in got its folder, and transformers
    # was asked for the repository "builtin:smollm2-135m-instruct".
    assert rescored["outcome"].ok
    again = rescored["rescore"]
    assert again.ok and not again.skipped, [r.error for r in again.records]
    (rec,) = again.records
    assert (rec.metric, rec.value, rec.n_samples, rec.judge) == ("judge_score", 7.0, 8, "judge")
    assert rec.extra["rescored_from"] == rescored["outcome"].run_id
    calls_before, calls_after = rescored["coder_calls"]
    assert calls_before >= 8 and calls_after == calls_before  # the evaluated model answered in the run only


def test_terminal_board_names_the_scorer_version(rescored: dict[str, Any]) -> None:
    store = rescored["store"]
    judged = [r for r in store.records() if r.metric == "judge_score"]
    (first,) = [r.extra["scorer"] for r in judged if "rescored_from" not in r.extra]
    (second,) = [r.extra["scorer"] for r in judged if "rescored_from" in r.extra]
    assert first.startswith("judge/1+") and second.startswith("judge/1+") and first != second
    # `benchbridge run --no-publish` (this run's records) and `benchbridge board` (80 columns) say which
    # scorer made the value; after the rubric edit and rescore the board names the new one only.
    assert first in rescored["run_table"] and "scorer" in rescored["run_table"]
    assert f"scorer {first}" in rescored["before"] and "70.00" in rescored["before"]
    assert f"scorer {second}" in rescored["after"] and first not in rescored["after"]
    assert max(len(line) for line in rescored["after"].splitlines()) <= 80

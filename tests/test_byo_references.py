"""`publish.reference_leaderboards`: AlpacaEval's published leaderboards, bundled in the alpaca_eval
package, shown beside our board marked as published and never ranked with our rows."""

from __future__ import annotations

import csv
from pathlib import Path

from bridges.cli import main
from leaderboards.references import bundled

ROOT = Path(__file__).resolve().parent.parent


def test_published_rows_are_apart_and_equal_alpaca_evals_files(tmp_path: Path) -> None:
    config = tmp_path / "refs.yaml"
    config.write_text(
        "name: refs\nwork_dir: work\nmodels:\n  - {name: keyed, kind: python, target: bridges.testing:AnswerKeyModel}\n"
        f"datasets:\n  - path: {ROOT / 'custom_datasets' / 'qa_capitals'}\nframeworks:\n  lm_eval: {{}}\n"
        "publish:\n  reference_leaderboards: [chatgpt_fn, weighted_alpaca_eval_gpt4_turbo]\n",
        encoding="utf-8",
    )
    native = ROOT / "tests" / "fixtures" / "native" / "lm_eval" / "results" / "keyed"
    assert main(["collect", "lm_eval", str(native), "--config", str(config)]) == 0
    out = tmp_path / "pub"
    assert main(["publish", str(config), "--out", str(out)]) == 0
    with (out / "published_references.csv").open(encoding="utf-8", newline="") as fh:
        published = list(csv.DictReader(fh))
    sources = {
        name: list(csv.DictReader(bundled()[name].open(encoding="utf-8")))
        for name in ("chatgpt_fn", "weighted_alpaca_eval_gpt4_turbo")
    }
    assert len(published) == sum(len(rows) for rows in sources.values())
    assert all(row["published"] == "published" for row in published)
    gpt4 = next(r for r in published if r["leaderboard"] == "chatgpt_fn" and r["model"] == "gpt4")
    source = next(r for r in sources["chatgpt_fn"] if r[""] == "gpt4")
    assert gpt4["win_rate"] == f"{float(source['win_rate']):.2f}" == "73.79"
    assert (gpt4["judge"], gpt4["reference"], gpt4["n_total"]) == ("chatgpt_fn", "text_davinci_003", "805")
    turbo = [r for r in published if r["leaderboard"] == "weighted_alpaca_eval_gpt4_turbo"]
    assert {r["reference"] for r in turbo} == {"gpt4_turbo"}
    assert [float(r["win_rate"]) for r in turbo] == sorted((float(r["win_rate"]) for r in turbo), reverse=True)
    # never in our ranking: the board's rows are our models only
    with (out / "leaderboard.csv").open(encoding="utf-8", newline="") as fh:
        assert [row["model"] for row in csv.DictReader(fh)] == ["keyed"]
    md = (out / "leaderboard.md").read_text("utf-8")
    assert "## Published reference rows (AlpacaEval's leaderboards; not ranked with ours)" in md
    assert "| published | chatgpt_fn | chatgpt_fn | text_davinci_003 | gpt4 | 73.79 |" in md
    html = (out / "index.html").read_text("utf-8")
    assert html.count('<tr class="published">') == len(published)


def test_an_unknown_leaderboard_name_is_one_line_with_did_you_mean(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    config = tmp_path / "refs.yaml"
    config.write_text(
        "name: refs\nmodels:\n  - {name: keyed, kind: python, target: bridges.testing:AnswerKeyModel}\n"
        f"datasets:\n  - path: {ROOT / 'custom_datasets' / 'qa_capitals'}\n"
        "publish:\n  reference_leaderboards: [chatgpt_fm]\n",
        encoding="utf-8",
    )
    assert main(["board", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "publish.reference_leaderboards" in err and "did you mean 'chatgpt_fn'?" in err


def test_the_documented_byo_config_loads_with_each_framework() -> None:
    """configs/byo.yaml (the README's "Already have suites or results?") stays valid: each framework's
    bridge accepts it and finds the team's evals, config and tasks."""
    from bridges import load_config
    from bridges._runner import make_bridges

    config = load_config(ROOT / "configs" / "byo.yaml")
    bridges = {b.name: b for b in make_bridges(config, None, {"run_id": "t", "config_hash": "t"})}
    assert set(bridges) == {"openai_evals", "opencompass", "lm_eval"}
    assert [e.name for e in bridges["openai_evals"].byo.evals] == [
        "capitals.match",
        "capitals.fact",
        "capitals.fact_zh",
    ]  # type: ignore[attr-defined]
    assert config.cfg.publish.reference_leaderboards == ["chatgpt_fn", "weighted_alpaca_eval_gpt4_turbo"]

"""Scoring beside the frameworks' metrics (issue 15): exact pass@k, ROUGE/BLEU equal to the reference
libraries, a deterministic judge's exact means with invalid verdicts apart, rescore without asking the
evaluated model, the sandbox, and bad inputs. Fast tier: python models only, no framework, no HF model
(the tiny embedding/reward models are built in seconds)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from math import comb
from pathlib import Path

import pytest

from bridges.scoring.code import pass_at_k
from bridges.scoring.sandbox import Limits, run_test
from tests._scoring_models import judge_rating

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT / "custom_datasets"
# coder's plan per problem: c = number of "ok" (n = 3)
PLAN = {
    "add": ["ok", "ok", "ok"],
    "is_even": ["ok", "wrong", "loop"],
    "reverse_string": ["alloc", "fork", "ok"],
    "max_of_list": ["write", "socket", "wrong"],
}
ESCAPE = Path("/tmp/bb-sandbox-escape.txt")
RUBRIC = """\
default:
  mode: score
  template: |
    {marker}Question: {{question}}
    REFERENCE<<{{reference}}>>
    ANSWER<<{{answer}}>>
    End with Rating: [[N]].
"""


def cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "USE_TF": "0", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "bridges.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def write_config(tmp: Path, rubric_marker: str = "", scorers: str | None = None) -> Path:
    (tmp / "rubric.yaml").write_text(RUBRIC.format(marker=rubric_marker), "utf-8")
    gen = {
        "In one sentence, why is the sky blue?": "Because air scatters blue light.",
        "Rewrite politely: Send me the report now.": "UNRATABLE",
    }
    scorers = (
        scorers
        or """
      - rouge
      - bleu
      - chrf
      - {name: semantic_similarity, path: "builtin:tiny-embedding"}
      - {name: reward, path: "builtin:tiny-reward"}
      - {name: judge, model: judge, rubric: rubric.yaml}
      - {name: pass_at_k, k: [1, 3], timeout_s: 2}"""
    )
    cfg = tmp / "scoring.yaml"
    cfg.write_text(
        f"""
name: scoring-test
work_dir: runs
cache: {{path: cache.sqlite}}
models:
  - name: coder
    kind: python
    target: tests._scoring_models:CodePlanModel
    args: {{log: "{tmp / "coder.log"}", plan: {json.dumps(PLAN)}, gen: {json.dumps(gen, ensure_ascii=False)}}}
  - name: judge
    kind: python
    target: tests._scoring_models:RubricJudge
    args: {{log: "{tmp / "judge.log"}"}}
datasets:
  - path: {DATASETS / "gen_zh_en"}
  - path: {DATASETS / "code_python"}
frameworks:
  scoring:
    samples_per_problem: 3
    scorers:{scorers}
""",
        "utf-8",
    )
    return cfg


def log_lines(path: Path) -> int:
    return len(path.read_text("utf-8").splitlines()) if path.exists() else 0


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("scoring")
    os.environ.setdefault("BENCHBRIDGE_MODELS", str(tmp_path_factory.getbasetemp() / "models"))
    ESCAPE.unlink(missing_ok=True)
    cfg = write_config(tmp)
    proc = cli("run", str(cfg), "--no-publish")
    from leaderboards.store import ResultsStore

    store = ResultsStore(tmp / "runs" / "results.sqlite")
    return {"tmp": tmp, "cfg": cfg, "proc": proc, "store": store}


def ok_records(store, metric: str, run_id: str | None = None) -> dict:  # noqa: ANN001
    return {
        (r.model, r.benchmark): r
        for r in store.records()
        if r.metric == metric and r.status == "ok" and (run_id is None or r.run_id == run_id)
    }


def test_pass_at_k_estimator_is_exact() -> None:
    for n, c, k in [(5, 2, 1), (5, 2, 3), (3, 0, 1), (3, 3, 3), (10, 4, 5), (3, 1, 3)]:
        assert (
            pass_at_k(n, c, k) == 1 - comb(n - c, k) / comb(n, k)
            or abs(pass_at_k(n, c, k) - (1 - comb(n - c, k) / comb(n, k))) < 1e-15
        )
    assert pass_at_k(5, 2, 1) == 0.4  # the product form gives 0.3999999999999999
    with pytest.raises(ValueError):
        pass_at_k(2, 1, 3)


@pytest.mark.framework  # the `scored` fixture runs the scoring framework end to end (~45 s)
def test_run_gives_exact_pass_at_k_and_sandbox_stops_each_attack(scored: dict) -> None:
    assert scored["proc"].returncode == 0, scored["proc"].stderr[-2000:]
    store = scored["store"]
    p1 = ok_records(store, "pass@1")[("coder", "code_python")]
    p3 = ok_records(store, "pass@3")[("coder", "code_python")]
    # c per problem: add 3, is_even 1, reverse_string 1, max_of_list 0, six others 0 (n = 3, 10 problems)
    assert abs(p1.value - (1 + 1 / 3 + 1 / 3) / 10) < 1e-12
    assert abs(p3.value - 3 / 10) < 1e-12
    assert p1.n_samples == 10 and p1.scale == 1.0 and p1.higher_is_better
    samples = {s.sample_id: s for s in store.samples(framework="scoring", benchmark="code_python")}
    assert samples["py-1"].scores == {"pass@1": 1.0, "pass@3": 1.0}
    failures = {sid: samples[sid].extra["scorers"]["pass_at_k"]["failures"] for sid in ("py-2", "py-3", "py-4")}
    assert failures["py-2"][0] == "" and "AssertionError" in failures["py-2"][1]
    assert failures["py-2"][2].startswith("timeout")  # the infinite loop
    assert "MemoryError" in failures["py-3"][0]  # 10 GB
    assert "starting processes is disabled" in failures["py-3"][1]  # fork
    assert "writing outside" in failures["py-4"][0]
    assert "network" in failures["py-4"][1] or "Errno" in failures["py-4"][1]  # socket
    assert not ESCAPE.exists()


@pytest.mark.framework  # the `scored` fixture runs the scoring framework end to end (~45 s)
def test_judge_exact_mean_with_invalid_apart(scored: dict) -> None:
    store = scored["store"]
    rec = ok_records(store, "judge_score")[("coder", "gen_zh_en")]
    # en-1's answer shares words with its reference: 8; en-2 is UNRATABLE: invalid; the six others: 3
    assert abs(rec.value - (8 + 3 * 6) / 7) < 1e-12
    assert rec.scale == 10.0 and rec.judge == "judge"
    assert rec.extra["n_invalid"] == 1 and rec.extra["n_graded"] == 8 and rec.n_samples == 7
    assert rec.extra["scorer"].startswith("judge/1+")
    en2 = next(s for s in store.samples(framework="scoring", benchmark="gen_zh_en") if s.sample_id == "en-2")
    assert en2.invalid and en2.scores["judge_score"] is None and en2.judge and en2.judge.reasoning == "I cannot tell."
    # Every gen sample row carries every metric, so the board's intervals come from them.
    assert {"rougeL_f", "bleu", "chrf", "semantic_similarity", "reward"} <= set(en2.scores)


@pytest.mark.framework  # the `scored` fixture runs the scoring framework end to end (~45 s)
def test_rescore_after_rubric_change_asks_no_evaluated_model(scored: dict) -> None:
    from leaderboards.board import board_from_cli

    tmp, cfg, store = scored["tmp"], scored["cfg"], scored["store"]
    before, _ = board_from_cli(str(cfg), None)
    coder_calls = log_lines(tmp / "coder.log")
    judge_calls = log_lines(tmp / "judge.log")
    write_config(tmp, rubric_marker="BONUS ")
    proc = cli("rescore", str(cfg), "--scorer", "judge")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert log_lines(tmp / "coder.log") == coder_calls  # 0 calls to the evaluated model
    assert log_lines(tmp / "judge.log") == judge_calls + 8  # the judge asked again with the new rubric
    after, _ = board_from_cli(str(cfg), None)
    row_b = next(r for r in before.rows if r.model == "coder")
    row_a = next(r for r in after.rows if r.model == "coder")
    changed = {cid for cid in row_b.cells if row_b.cells[cid].value_100 != row_a.cells[cid].value_100}
    assert changed == {"scoring/gen_zh_en/judge_score@judge"}
    assert abs(row_a.cells["scoring/gen_zh_en/judge_score@judge"].value_100 - (9 + 4 * 6) / 7 * 10) < 1e-9
    # Every dataset's stored answers are found (code answers, all n of them, too): the same values again.
    proc = cli("rescore", str(cfg), "--scorer", "pass_at_k", "--scorer", "rouge")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert log_lines(tmp / "coder.log") == coder_calls
    again, _ = board_from_cli(str(cfg), None)
    row_c = next(r for r in again.rows if r.model == "coder")
    assert {cid: c.value_100 for cid, c in row_c.cells.items()} == {cid: c.value_100 for cid, c in row_a.cells.items()}
    assert (
        row_c.cells["scoring/code_python/pass@1"].record.run_id
        != row_a.cells["scoring/code_python/pass@1"].record.run_id
    )
    new = [r for r in store.records() if r.extra.get("rescored_from") and r.metric == "judge_score"]
    assert (
        len(new) == 1
        and new[0].framework_version.split()[-1]
        != row_b.cells["scoring/gen_zh_en/judge_score@judge"].record.framework_version.split()[-1]
    )


def test_rouge_equals_rouge_score_including_chinese() -> None:
    import jieba
    from rouge_score import rouge_scorer

    from bridges.scoring._base import Item
    from bridges.scoring.text import Rouge, RougeOptions

    class Jieba:  # the reference: rouge-score itself, given jieba words for Chinese
        def tokenize(self, text: str) -> list[str]:
            return [w for w in jieba.lcut(text) if w.strip() and w not in "，。！？、"]

    pairs = [
        ("the cat sat on the mat", ["the cat is on the mat"]),
        ("Paris is the capital of France.", ["The capital of France is Paris.", "Paris"]),
        ("水在标准大气压下的沸点是100摄氏度。", ["水的沸点是100摄氏度。"]),
        ("北京是中国的首都", ["中国的首都是北京"]),
    ]
    items = [Item(str(i), "gen", [{"role": "user", "content": "q"}], [a], refs) for i, (a, refs) in enumerate(pairs)]
    got = Rouge(RougeOptions(), None, ("scorers", 0)).score(items)  # type: ignore[arg-type]
    plain = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"])
    zh = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], tokenizer=Jieba())
    for (answer, refs), score in zip(pairs, got, strict=True):
        ref_scorer = zh if any("\u4e00" <= c <= "\u9fff" for c in answer) else plain
        want = ref_scorer.score_multi(refs, answer)
        for v in ("rouge1", "rouge2", "rougeL"):
            assert score.values[f"{v}_f"] == want[v].fmeasure
            assert score.values[f"{v}_p"] == want[v].precision and score.values[f"{v}_r"] == want[v].recall
    assert got[2].values["rougeL_f"] > 0.5  # rouge-score's own tokenizer drops every Chinese character:
    assert (
        plain.score("水的沸点是100摄氏度。", "水在标准大气压下的沸点是100摄氏度。")["rougeL"].fmeasure == 1.0
    )  # only "100" left


def test_bleu_and_chrf_equal_sacrebleu_including_chinese() -> None:
    import sacrebleu

    from bridges.scoring._base import Item, NoOptions
    from bridges.scoring.text import Bleu, Chrf

    pairs = [
        ("The capital of France is Paris.", ["Paris is the capital of France."]),
        ("请您把文件发给我，谢谢！", ["麻烦您方便的时候把文件发给我，谢谢！", "请您尽快把文件发给我，好吗？"]),
    ]
    items = [Item(str(i), "gen", [], [a], refs) for i, (a, refs) in enumerate(pairs)]
    bleu = Bleu(NoOptions(), None, ("s", 0)).score(items)  # type: ignore[arg-type]
    chrf = Chrf(NoOptions(), None, ("s", 1)).score(items)  # type: ignore[arg-type]
    assert bleu[0].values["bleu"] == sacrebleu.sentence_bleu(*pairs[0], tokenize="13a").score
    assert bleu[1].values["bleu"] == sacrebleu.sentence_bleu(*pairs[1], tokenize="zh").score
    assert bleu[1].values["bleu"] > 10  # zh tokenization: characters, not one "word" per sentence
    for (a, refs), c in zip(pairs, chrf, strict=True):
        assert c.values["chrf"] == sacrebleu.sentence_chrf(a, refs).score


def test_sandbox_each_attack_fails_only_itself() -> None:
    limits = Limits(timeout_s=2)
    assert run_test("def f():\n    return 1\nassert f() == 1\n", limits).passed
    assert run_test("while True:\n    pass\n", limits).reason.startswith("timeout")
    assert "MemoryError" in run_test("x = bytearray(10 * 1024 ** 3)\n", limits).reason
    assert "disabled" in run_test("import os\nos.fork()\n", limits).reason
    assert "disabled" in run_test("import subprocess\nsubprocess.run(['true'])\n", limits).reason
    assert "outside" in run_test(f"open('{ESCAPE}', 'w').write('x')\n", limits).reason
    assert "network" in run_test("import socket\nsocket.socket()\n", limits).reason
    assert "File too large" in run_test("print('x' * 10_000_000)\n", limits).reason
    assert run_test("open('mine.txt', 'w').write('x')\nassert open('mine.txt').read() == 'x'\n", limits).passed
    assert not ESCAPE.exists()


def test_bad_inputs_are_one_line(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    (tmp_path / "rubric.yaml").write_text("default:\n  mode: score\n  template: 'Rate {question}'\n", "utf-8")
    proc = cli("run", str(cfg), "--no-publish")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "rubric.yaml" in proc.stderr and "{answer}" in proc.stderr and "scorers.5.rubric" in proc.stderr
    cfg = write_config(tmp_path, scorers="\n      - rogue")
    proc = cli("run", str(cfg), "--no-publish")
    assert proc.returncode == 2 and "unknown scorer 'rogue'" in proc.stderr and "did you mean 'rouge'" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    bad = tmp_path / "bad_code"
    bad.mkdir()
    (bad / "card.yaml").write_text("name: bad_code\nkind: code\n", "utf-8")
    line = {"id": "p1", "prompt": "def f():\n", "entry_point": "f", "tests": ["assert f() =="]}
    (bad / "samples.jsonl").write_text(json.dumps(line) + "\n", "utf-8")
    proc = cli("datasets", "validate", str(bad))
    assert proc.returncode == 2 and "samples.jsonl:1" in proc.stderr and "tests[0] is not valid Python" in proc.stderr
    assert not (tmp_path / "runs").exists()  # nothing written by the refused runs


def test_judge_that_never_parses_is_a_failed_cell_not_zero(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, scorers="\n      - {name: judge, model: judge, rubric: rubric.yaml}")
    text = cfg.read_text("utf-8").replace(f"  - path: {DATASETS / 'code_python'}\n", "")
    text = text.replace("gen: {", "default: UNRATABLE, gen: {").replace("Because air scatters blue light.", "UNRATABLE")
    cfg.write_text(text, "utf-8")  # every answer UNRATABLE: the judge never gives a rating
    proc = cli("run", str(cfg), "--no-publish")
    assert proc.returncode == 1, proc.stderr[-2000:]
    from leaderboards.store import ResultsStore

    recs = [r for r in ResultsStore(tmp_path / "runs" / "results.sqlite").records() if r.metric == "judge_score"]
    assert len(recs) == 1 and recs[0].status == "failed" and recs[0].value is None
    assert "no parsable verdict in 8/8" in (recs[0].error or "")


def test_judge_rating_rule_is_what_the_tests_assume() -> None:
    assert judge_rating("REFERENCE<<The sky is blue>>\nANSWER<<blue light>>") == 8
    assert judge_rating("BONUS REFERENCE<<a b>>\nANSWER<<c>>") == 4
    assert judge_rating("REFERENCE<<a>>\nANSWER<<UNRATABLE>>") is None


def test_user_scorer_by_decorator_and_by_module_path(tmp_path: Path) -> None:
    from bridges._config import load_config
    from bridges.scoring import SCORERS
    from bridges.scoring.bridge import build_scorers

    cfg = write_config(tmp_path, scorers="\n      - tests._scoring_models:AnswerChars\n      - answer_chars")
    config = load_config(cfg)
    first, second = build_scorers(config, config.cfg.frameworks["scoring"]["scorers"])
    assert type(first) is type(second) and SCORERS.get("answer_chars") is type(first)  # registered by @scorer
    from bridges.scoring._base import Item

    assert first.score([Item("a", "gen", [], ["four"], ["x"])])[0].values == {"answer_chars": 4.0}
    assert first.identity().startswith("answer_chars/1+")


def test_verdict_parsing() -> None:
    from bridges.scoring.judge import parse_choice, parse_score

    assert parse_score("Clear and right. Rating: [[7]]") == 7.0
    assert parse_score("理由充分。评分：[[9]]") == 9.0 and parse_score("评分：6") == 6.0
    assert parse_score("I would give it 8/10.") == 8.0 and parse_score(" 5. ") == 5.0
    # Echoing the rubric, out-of-range ratings and silence are invalid (None), never 0
    assert parse_score('then the rating in the form "Rating: [[N]]"') is None
    assert parse_score("Rating: [[11]]") is None and parse_score("Rating: [[0]]") is None
    assert parse_score("水的沸点是100摄氏度") is None and parse_score("") is None
    assert parse_choice("Verdict: [[A]]") == "A" and parse_choice("It is a tie.") == "C"
    assert parse_choice("Both are fine") is None

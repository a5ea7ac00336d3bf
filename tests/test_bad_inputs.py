"""The bad-input corpus: every case goes through the CLI entry point and must end in exactly one line.

Each case writes its inputs into a fresh folder, runs `bridges.cli.main([...])` there, and asserts:
the exit code (2 for bad input), exactly ONE non-empty stderr line starting `benchbridge: error:` that
names the file, line or key (`names`), no `Traceback`, and no file added, removed or changed in the
folder (results store and work dir included). A handful run as real `benchbridge` subprocesses.
No case starts a framework: each fails before one would.

Groups (the id prefix of every case) and counts, tried / clear error / accepted by design:

    config    46 / 46 / 1
    datasets  30 / 30 / 4
    importers 42 / 42 / 4
    cli       11 / 11 / 0
    model     39 / 39 / 0
    store     11 / 11 / 0
    serve      5 /  5 / 0
    collect   12 / 12 / 0
    byo        4 /  4 / 0
    total    200 / 200 / 9    (plus 5 subprocess cases repeating cases above through `benchbridge`)

`test_corpus_counts` keeps these numbers honest. The serve cases `serve-host-without-key` and
`serve-port-out-of-range` depend on `benchbridge serve` refusing them before it binds.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridges.cli import main
from tests.conftest import DATASETS, ROOT

QA = str(DATASETS / "qa_capitals")
BENCHBRIDGE = Path(sys.executable).parent / "benchbridge"

# -- python model targets used by the model-spec cases -------------------------------------------

NOT_CALLABLE = 42


def returns_int(batch: list[Any]) -> int:
    return 7


def returns_too_few(batch: list[Any]) -> list[str]:
    return []


def raises(batch: list[Any]) -> list[str]:
    raise RuntimeError("model exploded on purpose")


def exits(batch: list[Any]) -> list[str]:
    raise SystemExit(3)


def answers_ok(batch: list[Any]) -> list[str]:
    return ["OK" for _ in batch]


# -- the config every config case starts from, valid as it is -------------------------------------


def base_config() -> dict[str, Any]:
    return {
        "name": "t",
        "work_dir": "runs",
        "models": [{"name": "keyed", "kind": "python", "target": "bridges.testing:AnswerKeyModel", "args": {"datasets": [QA]}}],
        "datasets": [{"path": QA}],
        "frameworks": {"lm_eval": {}},
    }


def config(**changes: Any) -> str:
    """The base config with top-level keys replaced (None removes one), as YAML."""
    cfg = base_config()
    for k, v in changes.items():
        if v is None:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    return yaml.safe_dump(cfg, sort_keys=False)


def model(**changes: Any) -> str:
    """The base config with its one model's keys replaced (None removes one)."""
    m = dict(base_config()["models"][0])
    for k, v in changes.items():
        if v is None:
            m.pop(k, None)
        else:
            m[k] = v
    return config(models=[m])


def hf(**fields: Any) -> str:
    return config(models=[{"name": "h", "kind": "hf", **fields}])


def py(target: str, **fields: Any) -> str:
    return config(models=[{"name": "p", "kind": "python", "target": target, **fields}])


CARD = "name: d\nkind: mcq\n"
MCQ = '{"id": "1", "question": "q", "choices": ["a", "b"], "answer": "A"}\n'
QA_LINE = '{"id": "1", "messages": [{"role": "user", "content": "hi"}], "answers": ["x"]}\n'


def dataset(card: str | bytes = CARD, samples: str | bytes = MCQ, **more: str | bytes) -> dict[str, str | bytes]:
    return {"ds/card.yaml": card, "ds/samples.jsonl": samples, **{f"ds/{k}": v for k, v in more.items()}}


def registry(evals: str, data: dict[str, str] | None = None) -> dict[str, str | bytes]:
    files: dict[str, str | bytes] = {"reg/evals/e.yaml": evals}
    files.update({f"reg/data/{k}": v for k, v in (data or {}).items()})
    return files


EVAL = "e:\n  id: e.dev.v0\ne.dev.v0:\n  class: evals.elsuite.basic.match:Match\n  args:\n    samples_jsonl: {}\n"
EVALS_LINE = '{"input": "Capital of France?", "ideal": "Paris"}\n'
FOREIGN_DB = "foreign.sqlite"
DIR = object()  # a value in `files` meaning "make this a folder"


@dataclass
class Case:
    id: str  # "<group>-<what>"
    argv: list[str]
    names: str  # the error line must contain this: the file, line or key at fault
    files: dict[str, Any] = field(default_factory=dict)
    code: int = 2
    syspath: bool = False  # the case folder importable (python model modules written into it)

    @property
    def group(self) -> str:
        return self.id.split("-", 1)[0]


PREP = ["prepare", "c.yaml", "--out", "out"]
COLLECT = ["collect", "--db", "r.sqlite"]
LM_EVAL_RESULTS = json.dumps({"results": {"t": {"acc,none": 0.5}}, "lm_eval_version": "0.4.13"})
RUN = ["run", "c.yaml", "--no-publish"]


def c(case_id: str, text: str | bytes, names: str, argv: list[str] = PREP, **files: Any) -> Case:
    """A config case: `text` is c.yaml."""
    return Case(case_id, argv, names, {"c.yaml": text, **files})


CASES: list[Case] = [
    # ---- config: the run config file itself --------------------------------------------------
    Case("config-missing-file", PREP, "c.yaml: config file not found"),
    Case("config-is-a-folder", PREP, "c.yaml: is a folder", {"c.yaml": DIR}),
    c("config-not-utf8", b"name: t\xff\xfe\nmodels: []\n", "c.yaml: not UTF-8"),
    c("config-latin1", "name: caf\u00e9\n".encode("latin-1"), "c.yaml: not UTF-8"),
    c("config-yaml-syntax", "name: [t\nmodels: x\n", "c.yaml:2: invalid YAML"),
    c("config-yaml-tab-indent", "name: t\n\tmodels: x\n", "c.yaml:2: invalid YAML"),
    c("config-duplicate-top-key", "name: t\nname: u\n" + config(name=None), "c.yaml:2: invalid YAML: duplicate key 'name' (first on line 1)"),
    c("config-duplicate-nested-key", config().replace("  kind: python\n", "  kind: python\n  kind: hf\n"), "duplicate key 'kind'"),
    c("config-top-level-list", "- a\n- b\n", "c.yaml: expected a mapping"),
    c("config-empty-file", "", "c.yaml: expected a mapping"),
    c("config-scalar", "hello\n", "c.yaml: expected a mapping"),
    c("config-two-documents", config() + "---\nname: u\n", "c.yaml:"),
    c("config-name-missing", config(name=None), "c.yaml: name: Field required"),
    c("config-name-bad-chars", config(name="my run"), "c.yaml:1: name: String should match pattern"),
    c("config-name-300-chars", config(name="n" * 300), "c.yaml:1: name: String should have at most 100 characters"),
    c("config-models-missing", config(models=None), "models: Field required"),
    c("config-models-empty", config(models=[]), "c.yaml:3: models: Value error, empty"),
    c("config-models-not-a-list", config(models="keyed"), "c.yaml:3: models: Input should be a valid list"),
    c("config-unknown-top-key", config(modles=[]), "modles: Extra inputs are not permitted"),
    c("config-seed-not-int", config(seed="abc"), "seed: Input should be a valid integer"),
    c("config-max-samples-zero", config(max_samples=0), "max_samples: Input should be greater than or equal to 1"),
    c("config-datasets-not-a-list", config(datasets="qa"), "datasets: Input should be a valid list"),
    c("config-dataset-path-missing", config(datasets=[{"frameworks": ["lm_eval"]}]), "datasets[0].path: Field required"),
    c("config-dataset-extra-key", config(datasets=[{"path": QA, "shots": 2}]), "datasets[0].shots: Extra inputs"),
    c("config-dataset-folder-missing", config(datasets=[{"path": "nowhere"}]), "datasets[0].path: "),
    c("config-dataset-framework-typo", config(datasets=[{"path": QA, "frameworks": ["lm-eval"]}]), "datasets[0].frameworks[0]: unknown framework 'lm-eval'; did you mean 'lm_eval'?"),
    c("config-dataset-frameworks-not-list", config(datasets=[{"path": QA, "frameworks": "lm_eval"}]), "datasets[0].frameworks: Input should be a valid list"),
    c("config-unknown-framework", config(frameworks={"lm-eval": {}}), "frameworks.lm-eval: unknown framework 'lm-eval'; did you mean 'lm_eval'?"),
    c("config-framework-option-unknown", config(frameworks={"lm_eval": {"bogus": 1}}), "frameworks.lm_eval.bogus: Extra inputs"),
    c("config-framework-option-bad-value", config(frameworks={"lm_eval": {"mcq_format": "essay"}}), "frameworks.lm_eval.mcq_format:"),
    c("config-no-frameworks", config(frameworks=None), "frameworks: none configured"),
    c("config-env-var-unset", config(name="${BENCHBRIDGE_TEST_UNSET_VAR}"), "name: environment variable ${BENCHBRIDGE_TEST_UNSET_VAR} is not set"),
    c("config-publish-website-javascript", config(publish={"website": "javascript:alert(1)"}), "publish.website: Value error, 'javascript:alert(1)' is not an http(s) URL"),
    c("config-publish-github-ftp", config(publish={"github": "ftp://example.com/x"}), "publish.github: Value error"),
    c("config-publish-paper-no-scheme", config(publish={"paper": "example.com/paper"}), "publish.paper: Value error"),
    c("config-publish-download-file-url", config(publish={"download_url": "file:///etc/passwd"}), "publish.download_url: Value error"),
    c("config-publish-extra-key", config(publish={"colour": "red"}), "publish.colour: Extra inputs"),
    c("config-cache-extra-key", config(cache={"size": 3}), "cache.size: Extra inputs"),
    c("config-cache-enabled-not-bool", config(cache={"enabled": "maybe"}), "cache.enabled: Input should be a valid boolean"),
    c("config-only-unknown-framework", config(), "--only: unknown framework 'helm'", argv=[*PREP, "--only", "helm"]),
    c("config-only-not-configured", config(), "frameworks.opencompass: not configured", argv=[*PREP, "--only", "opencompass"]),
    c("config-yaml-unhashable-key", "name: t\n? [a, b]\n: 1\n", "c.yaml:"),
    c("config-out-name-too-long", config(), "--out: ", argv=["prepare", "c.yaml", "--out", "o" * 300]),
    c("config-work-dir-name-too-long", config(work_dir="w" * 300), "c.yaml:2: work_dir: ", argv=RUN),
    c("config-results-db-name-too-long", config(results_db="r" * 300), "results_db: ", argv=RUN),
    Case("config-file-name-too-long", ["prepare", "c" * 300 + ".yaml", "--out", "o"], "cannot read the config file (File name too long)"),
    # ---- datasets: canonical dataset folders and bare samples files ---------------------------
    Case("datasets-folder-missing", ["datasets", "validate", "nope"], "nope: dataset folder not found"),
    Case("datasets-card-missing", ["datasets", "validate", "ds"], "card.yaml: dataset card not found", {"ds/samples.jsonl": MCQ}),
    Case("datasets-card-is-a-folder", ["datasets", "validate", "ds"], "card.yaml: is a folder", {"ds/card.yaml": DIR, "ds/samples.jsonl": MCQ}),
    Case("datasets-card-bad-yaml", ["datasets", "validate", "ds"], "card.yaml:3: invalid YAML", dataset(card="name: d\nkind: [mcq\n")),
    Case("datasets-card-duplicate-key", ["datasets", "validate", "ds"], "card.yaml:3: invalid YAML: duplicate key 'kind'", dataset(card="name: d\nkind: mcq\nkind: qa\n")),
    Case("datasets-card-not-utf8", ["datasets", "validate", "ds"], "card.yaml: not UTF-8", dataset(card=b"name: d\nkind: mcq\ndescription: \xff\n")),
    Case("datasets-card-kind-missing", ["datasets", "validate", "ds"], "card.yaml: kind: Field required", dataset(card="name: d\n")),
    Case("datasets-card-kind-bad", ["datasets", "validate", "ds"], "card.yaml:2: kind: Input should be 'mcq', 'qa', 'open', 'gen' or 'code'", dataset(card="name: d\nkind: essay\n")),
    Case("datasets-card-name-300", ["datasets", "validate", "ds"], "card.yaml:1: name: String should have at most 100 characters", dataset(card=f"name: {'d' * 300}\nkind: mcq\n")),
    Case("datasets-card-extra-key", ["datasets", "validate", "ds"], "card.yaml:3: licence: Extra inputs", dataset(card="name: d\nkind: mcq\nlicence: mit\n")),
    Case("datasets-card-not-mapping", ["datasets", "validate", "ds"], "card.yaml: expected a mapping", dataset(card="- d\n")),
    Case("datasets-samples-missing", ["datasets", "validate", "ds"], "samples.jsonl: samples file not found", {"ds/card.yaml": CARD}),
    Case("datasets-samples-not-utf8", ["datasets", "validate", "ds"], "samples.jsonl: not UTF-8", dataset(samples=b'{"id": "\xff"}\n')),
    Case("datasets-samples-bad-json", ["datasets", "validate", "ds"], "samples.jsonl:2: invalid JSON", dataset(samples=MCQ + '{"id": 2\n')),
    Case("datasets-samples-not-object", ["datasets", "validate", "ds"], "samples.jsonl:1: expected a JSON object", dataset(samples="[1, 2]\n")),
    Case("datasets-samples-answer-not-a-choice", ["datasets", "validate", "ds"], "samples.jsonl:1: (sample): Value error, answer 'C'", dataset(samples=MCQ.replace('"A"}', '"C"}'))),
    Case("datasets-samples-one-choice", ["datasets", "validate", "ds"], "samples.jsonl:1: choices:", dataset(samples=MCQ.replace('["a", "b"]', '["a"]'))),
    Case("datasets-samples-duplicate-id", ["datasets", "validate", "ds"], "samples.jsonl:2: id: duplicate id '1'", dataset(samples=MCQ + MCQ)),
    Case("datasets-samples-empty", ["datasets", "validate", "ds"], "samples.jsonl: no samples", dataset(samples="\n\n")),
    Case("datasets-qa-ends-with-assistant", ["datasets", "validate", "ds"], "samples.jsonl:1: messages:", dataset(card="name: d\nkind: qa\n", samples=QA_LINE.replace('"user"', '"assistant"'))),
    Case("datasets-qa-no-answers", ["datasets", "validate", "ds"], "samples.jsonl:1: answers:", dataset(card="name: d\nkind: qa\n", samples=QA_LINE.replace('["x"]', "[]"))),
    Case("datasets-open-empty-instruction", ["datasets", "validate", "ds"], "samples.jsonl:1: instruction:", dataset(card="name: d\nkind: open\n", samples='{"id": "1", "instruction": ""}\n')),
    Case("datasets-fewshot-bad", ["datasets", "validate", "ds"], "fewshot.jsonl:1: (sample)", dataset(**{"fewshot.jsonl": MCQ.replace('"A"}', '"Z"}')})),
    Case("datasets-bare-file-unknown-kind", ["datasets", "validate", "s.jsonl"], "s.jsonl: cannot tell the kind from line 1", {"s.jsonl": '{"id": "1", "text": "x"}\n'}),
    Case("datasets-bare-file-wrong-kind", ["datasets", "validate", "s.jsonl", "--kind", "mcq"], "s.jsonl:1: ", {"s.jsonl": QA_LINE}),
    Case("datasets-bare-file-bad-json", ["datasets", "validate", "s.jsonl"], "s.jsonl:1: invalid JSON", {"s.jsonl": "{oops\n"}),
    Case("datasets-bare-file-not-utf8", ["datasets", "validate", "s.jsonl"], "s.jsonl: not UTF-8", {"s.jsonl": b'{"id": "\xc3"}\n'}),
    c("datasets-bad-card-through-config", config(datasets=[{"path": "ds"}]), "datasets[0].path: ", **dataset(card="name: d\nkind: essay\n")),
    Case("datasets-validate-name-too-long", ["datasets", "validate", "d" * 300], "File name too long"),
    c("datasets-config-path-name-too-long", config(datasets=[{"path": "d" * 300}]), "datasets[0].path: "),
    # ---- importers: `benchbridge datasets import` -------------------------------------------
    Case("importers-source-missing", ["datasets", "import", "--from", "text", "nope.txt", "--out", "o"], "nope.txt: not found"),
    Case("importers-unknown-format", ["datasets", "import", "--from", "cvs", "a.csv", "--out", "o"], "--from: unknown dataset importer 'cvs'; did you mean 'csv'?", {"a.csv": "question,answer\nq,a\n"}),
    Case("importers-text-not-utf8", ["datasets", "import", "--from", "text", "t.txt", "--out", "o"], "t.txt: not UTF-8", {"t.txt": b"caf\xe9\n"}),
    Case("importers-text-empty-line-inside", ["datasets", "import", "--from", "text", "t.txt", "--out", "o"], "t.txt:2: empty line", {"t.txt": "a\n\nb\n"}),
    Case("importers-text-duplicate", ["datasets", "import", "--from", "text", "t.txt", "--out", "o"], "t.txt:3: duplicate of line 1", {"t.txt": "a\nb\na\n"}),
    Case("importers-text-empty-file", ["datasets", "import", "--from", "text", "t.txt", "--out", "o"], "t.txt: no instructions", {"t.txt": ""}),
    Case("importers-text-only-blank-lines", ["datasets", "import", "--from", "text", "t.txt", "--out", "o"], "t.txt: no instructions", {"t.txt": "\n \n\n"}),
    Case("importers-text-is-a-folder", ["datasets", "import", "--from", "text", "t", "--out", "o"], "t: is a folder", {"t": DIR}),
    Case("importers-csv-not-utf8", ["datasets", "import", "--from", "csv", "a.csv", "--out", "o"], "a.csv: not UTF-8", {"a.csv": b"question,answer\ncaf\xe9,a\n"}),
    Case("importers-csv-no-rows", ["datasets", "import", "--from", "csv", "a.csv", "--out", "o"], "a.csv: no rows", {"a.csv": "question,answer\n"}),
    Case("importers-csv-answer-column-missing", ["datasets", "import", "--from", "csv", "a.csv", "--out", "o"], "a.csv: column 'answer' missing", {"a.csv": "question,reply\nq,a\n"}),
    Case("importers-csv-answer-not-a-choice", ["datasets", "import", "--from", "csv", "a.csv", "--out", "o"], "a.csv:2: (sample): Value error, answer 'E'", {"a.csv": "question,A,B,answer\nq,x,y,E\n"}),
    Case("importers-csv-extra-cells", ["datasets", "import", "--from", "csv", "a.csv", "--out", "o"], "a.csv:3: 4 cells but the header names 2", {"a.csv": "question,answer\nq,a\nq2,a,b,c\n"}),
    Case("importers-csv-empty-question", ["datasets", "import", "--from", "csv", "a.csv", "--out", "o"], "a.csv:2: question:", {"a.csv": "question,A,B,answer\n,x,y,A\n"}),
    Case("importers-alpaca-not-utf8", ["datasets", "import", "--from", "alpaca-eval", "a.json", "--out", "o"], "a.json: not UTF-8", {"a.json": b'[{"instruction": "caf\xe9"}]'}),
    Case("importers-alpaca-bad-json", ["datasets", "import", "--from", "alpaca-eval", "a.json", "--out", "o"], "a.json:2: invalid JSON", {"a.json": '[\n{"instruction": }]\n'}),
    Case("importers-alpaca-not-a-list", ["datasets", "import", "--from", "alpaca-eval", "a.json", "--out", "o"], "a.json: expected a JSON list", {"a.json": '{"instruction": "x"}'}),
    Case("importers-alpaca-instruction-missing", ["datasets", "import", "--from", "alpaca-eval", "a.json", "--out", "o"], "a.json: item 1: instruction: missing", {"a.json": '[{"instruction": "x"}, {"input": "y"}]'}),
    Case("importers-evals-bad-json", ["datasets", "import", "--from", "openai-evals", "s.jsonl", "--out", "o"], "s.jsonl:2: invalid JSON", {"s.jsonl": EVALS_LINE + "{\n"}),
    Case("importers-evals-ideal-missing", ["datasets", "import", "--from", "openai-evals", "s.jsonl", "--out", "o"], "s.jsonl:1: ideal: missing", {"s.jsonl": '{"input": "q"}\n'}),
    Case("importers-evals-input-missing", ["datasets", "import", "--from", "openai-evals", "s.jsonl", "--out", "o"], "s.jsonl:1: input: missing", {"s.jsonl": '{"ideal": "q"}\n'}),
    Case("importers-evals-input-wrong-type", ["datasets", "import", "--from", "openai-evals", "s.jsonl", "--out", "o"], "s.jsonl:1: input: expected chat messages or a string", {"s.jsonl": '{"input": 5, "ideal": "q"}\n'}),
    Case("importers-evals-duplicate-id", ["datasets", "import", "--from", "openai-evals", "s.jsonl", "--out", "o"], "s.jsonl:2: id: duplicate id 'a'", {"s.jsonl": '{"id": "a", "input": "q", "ideal": "x"}\n' * 2}),
    Case("importers-evals-not-utf8", ["datasets", "import", "--from", "openai-evals", "s.jsonl", "--out", "o"], "s.jsonl: not UTF-8", {"s.jsonl": b'{"input": "\xff", "ideal": "x"}\n'}),
    Case("importers-evals-empty", ["datasets", "import", "--from", "openai-evals", "s.jsonl", "--out", "o"], "s.jsonl: no samples", {"s.jsonl": "\n"}),
    Case("importers-registry-escapes-by-dotdot", ["datasets", "import", "--from", "openai-evals", "reg", "--out", "o"], "e.dev.v0.args.samples_jsonl: ../../outside.jsonl is outside the registry", {**registry(EVAL.format("../../outside.jsonl")), "outside.jsonl": EVALS_LINE}),
    Case("importers-registry-escapes-by-absolute-path", ["datasets", "import", "--from", "openai-evals", "reg", "--out", "o"], "is outside the registry", {**registry(EVAL.format("/etc/hostname"))}),
    Case("importers-registry-samples-missing", ["datasets", "import", "--from", "openai-evals", "reg", "--out", "o"], "e.dev.v0.args.samples_jsonl: q/samples.jsonl not found", registry(EVAL.format("q/samples.jsonl"))),
    Case("importers-registry-no-evals-folder", ["datasets", "import", "--from", "openai-evals", "reg", "--out", "o"], "reg: not an OpenAI evals registry", {"reg/data/x.jsonl": EVALS_LINE}),
    Case("importers-registry-duplicate-key", ["datasets", "import", "--from", "openai-evals", "reg", "--out", "o"], "e.yaml:3: invalid YAML: duplicate key 'e'", registry("e:\n  id: e.dev.v0\ne:\n  id: x\n")),
    Case("importers-registry-bad-yaml", ["datasets", "import", "--from", "openai-evals", "reg", "--out", "o"], "e.yaml:3: invalid YAML", registry("e:\n  id: [e\n")),
    Case("importers-registry-not-utf8", ["datasets", "import", "--from", "openai-evals", "reg", "--out", "o"], "e.yaml: not UTF-8", registry(b"e:\n  id: \xff\n")),  # type: ignore[arg-type]
    Case("importers-ceval-no-split-folder", ["datasets", "import", "--from", "ceval", "cv", "--out", "o"], "cv/val: C-Eval split folder not found", {"cv/dev/x_dev.csv": "id,question,A,B,C,D,answer\n"}),
    Case("importers-ceval-test-split-no-answers", ["datasets", "import", "--from", "ceval", "cv", "--split", "test", "--out", "o"], "x_test.csv:2: answer: missing", {"cv/test/x_test.csv": "id,question,A,B,C,D\n0,q,a,b,c,d\n"}),
    Case("importers-ceval-not-utf8", ["datasets", "import", "--from", "ceval", "cv", "--out", "o"], "x_val.csv: not UTF-8", {"cv/val/x_val.csv": b"id,question,A,B,C,D,answer\n0,\xb2\xe2,a,b,c,d,A\n"}),
    Case("importers-out-exists", ["datasets", "import", "--from", "text", "t.txt", "--out", "o"], "o: already exists", {"t.txt": "a\n", "o/keep.txt": "mine"}),
    Case("importers-name-bad-chars", ["datasets", "import", "--from", "text", "t.txt", "--name", "my set", "--out", "o"], "dataset card: name: String should match pattern", {"t.txt": "a\n"}),
    Case("importers-name-300-chars", ["datasets", "import", "--from", "text", "t.txt", "--name", "n" * 300, "--out", "o"], "dataset card: name: String should have at most 100 characters", {"t.txt": "a\n"}),
    Case("importers-name-starts-with-dot", ["datasets", "import", "--from", "text", "t.txt", "--name", ".x", "--out", "o"], "dataset card: name: String should match pattern", {"t.txt": "a\n"}),
    Case("importers-out-under-a-file", ["datasets", "import", "--from", "text", "t.txt", "--out", "f/o"], "--out: f is a file", {"t.txt": "a\n", "f": "a file"}),
    Case("importers-out-name-too-long", ["datasets", "import", "--from", "text", "t.txt", "--out", "o" * 300], "--out: ooo", {"t.txt": "a\n"}),
    Case("importers-source-name-too-long", ["datasets", "import", "--from", "text", "t" * 300], "File name too long"),
    # ---- cli: arguments ------------------------------------------------------------------------
    Case("cli-no-command", [], "benchbridge: the following arguments are required: command"),
    Case("cli-unknown-command", ["frobnicate"], "invalid choice: 'frobnicate'"),
    Case("cli-run-without-config", ["run"], "benchbridge run: the following arguments are required: config"),
    Case("cli-prepare-without-out", ["prepare", "c.yaml"], "the following arguments are required: --out"),
    Case("cli-import-without-from", ["datasets", "import", "x.txt"], "the following arguments are required: --from"),
    Case("cli-unknown-option", ["run", "c.yaml", "--frobnicate"], "unrecognized arguments: --frobnicate"),
    Case("cli-validate-bad-kind", ["datasets", "validate", "s.jsonl", "--kind", "essay"], "argument --kind: invalid choice: 'essay'"),
    Case("cli-board-config-and-db", ["board", "c.yaml", "--db", "r.sqlite"], "give a run config or --db PATH (exactly one of them)"),
    Case("cli-board-neither", ["board"], "give a run config or --db PATH (exactly one of them)"),
    Case("cli-datasets-without-subcommand", ["datasets"], "the following arguments are required: datasets_command"),
    c("cli-prepare-out-is-a-file", config(), "--out: ", argv=PREP, out="not a folder"),
    # ---- model: model specs ----------------------------------------------------------------------
    c("model-not-a-mapping", config(models=["keyed"]), "c.yaml:4: models[0]: Input should be a valid dictionary"),
    c("model-kind-missing", model(kind=None), "models[0].kind: missing (one of hf, openai, python)"),
    c("model-kind-typo", model(kind="pyhton"), "models[0].kind: unknown model kind 'pyhton'; did you mean 'python'?"),
    c("model-name-missing", model(name=None), "models[0].name: Field required"),
    c("model-name-bad-chars", model(name="my model"), "c.yaml:4: models[0].name: String should match pattern"),
    c("model-name-300-chars", model(name="m" * 300), "c.yaml:4: models[0].name: String should have at most 100 characters"),
    c("model-duplicate-names", config(models=[base_config()["models"][0]] * 2), "models: duplicate name(s) keyed"),
    c("model-extra-key", model(temprature=0), "models[0].temprature: Extra inputs are not permitted"),
    c("model-batch-size-zero", model(batch_size=0), "models[0].batch_size: Input should be greater than or equal to 1"),
    c("model-generation-negative-tokens", model(generation={"max_new_tokens": -1}), "models[0].generation.max_new_tokens"),
    c("model-limits-bad", model(limits={"max_concurrency": 0}), "models[0].limits.max_concurrency"),
    c("model-input-bad", model(input="chat"), "models[0].input: Input should be 'messages' or 'prompt'"),
    c("model-hf-path-missing", hf(), "models[0].path: Field required"),
    c("model-hf-path-not-found", hf(path="./no-such-weights"), "/case/no-such-weights: model folder not found"),  # resolved against the config's folder
    c("model-hf-tokenizer-path-not-found", hf(path=str(DATASETS), tokenizer_path="./no-tok"), "/case/no-tok: model folder not found"),
    c("model-hf-peft-path-not-found", hf(path=str(DATASETS), peft_path="/no/such/adapter"), "models[0].peft_path: /no/such/adapter: model folder not found"),
    c("model-hf-unknown-builtin", hf(path="builtin:gpt-5"), "path: unknown built-in model 'gpt-5'"),
    c("model-openai-model-missing", config(models=[{"name": "o", "kind": "openai"}]), "models[0].model: Field required"),
    c("model-openai-base-url-not-http", config(models=[{"name": "o", "kind": "openai", "model": "gpt-x", "base_url": "localhost:8000/v1"}]), "models[0].base_url: Value error, not an http(s) URL"),
    c("model-openai-base-url-credentials", config(models=[{"name": "o", "kind": "openai", "model": "gpt-x", "base_url": "https://me:sk-in-url@example.com/v1"}]), "models[0].base_url: Value error, holds credentials"),
    c("model-openai-base-url-query", config(models=[{"name": "o", "kind": "openai", "model": "gpt-x", "base_url": "https://example.com/v1?key=sk-in-url"}]), "models[0].base_url: Value error, has a query"),
    c("model-openai-base-url-bad-port", config(models=[{"name": "o", "kind": "openai", "model": "gpt-x", "base_url": "http://h:sk-in-url/v1"}]), "models[0].base_url: Value error, is not a valid URL"),
    c("model-openai-base-url-unicode-netloc", config(models=[{"name": "o", "kind": "openai", "model": "gpt-x", "base_url": "https://me:sk-in-url\uff0fx@example.com/v1"}]), "models[0].base_url: Value error, is not a valid URL"),
    c("model-openai-base-url-empty-query", config(models=[{"name": "o", "kind": "openai", "model": "gpt-x", "base_url": "http://h/v1?"}]), "models[0].base_url: Value error, has a query"),
    c("model-openai-base-url-space", config(models=[{"name": "o", "kind": "openai", "model": "gpt-x", "base_url": " http://h/v1"}]), "models[0].base_url: Value error, contains spaces"),
    c("model-openai-tokenizer-path-not-found", config(models=[{"name": "o", "kind": "openai", "model": "gpt-x", "tokenizer_path": "./no-tok"}]), "/case/no-tok: model folder not found"),
    c("model-python-module-missing", py("no_such_module_xyz:f"), "c.yaml:6: models[0].target: cannot import 'no_such_module_xyz'"),
    c("model-python-attribute-missing", py("bridges.testing:NoSuchModel"), "models[0].target: 'bridges.testing' has no attribute 'NoSuchModel'"),
    c("model-python-target-bad-form", py("bridges.testing:"), "models[0].target: 'bridges.testing:' is not of the form"),
    c("model-python-not-callable", py("tests.test_bad_inputs:NOT_CALLABLE"), "models[0].target: 'tests.test_bad_inputs:NOT_CALLABLE' is a int, not a callable"),
    c("model-python-unregistered-name", py("never-registered"), "models[0].target: unknown python model 'never-registered'"),
    c("model-python-imports-missing", py("answers_ok", imports=["no_such_plugin_xyz"]), "models[0].target: imports: cannot import 'no_such_plugin_xyz'"),
    Case("model-python-syntax-error", PREP, "models[0].target: cannot import 'broken_model_mod'", {"c.yaml": py("broken_model_mod:f"), "broken_model_mod.py": "def f(:\n"}, syspath=True),
    Case("model-python-import-raises", PREP, "models[0].target: importing 'raising_model_mod:f' raised RuntimeError: no GPU here", {"c.yaml": py("raising_model_mod:f"), "raising_model_mod.py": "raise RuntimeError('no GPU here')\n"}, syspath=True),
    c("model-python-returns-int", py("tests.test_bad_inputs:returns_int"), "models[0] (p): failed a one-prompt check before any framework ran: model p: tests.test_bad_inputs:returns_int must return a list of strings", argv=RUN),
    c("model-python-returns-too-few", py("tests.test_bad_inputs:returns_too_few"), "returned 0 answers for 1 prompt", argv=RUN),
    c("model-python-raises", py("tests.test_bad_inputs:raises"), "failed a one-prompt check before any framework ran: RuntimeError: model exploded on purpose", argv=RUN),
    c("model-python-raises-systemexit", py("tests.test_bad_inputs:exits"), "failed a one-prompt check before any framework ran: SystemExit: 3", argv=RUN),
    c("model-python-function-with-args", py("tests.test_bad_inputs:answers_ok", args={"x": 1}), "args given but 'tests.test_bad_inputs:answers_ok' is a function", argv=RUN),
    # ---- store: results databases ----------------------------------------------------------------
    Case("store-board-db-text-file", ["board", "--db", "r.sqlite"], "r.sqlite: not an SQLite results database", {"r.sqlite": "hello, I am not a database\n" * 10}),
    Case("store-board-db-folder", ["board", "--db", "r.sqlite"], "r.sqlite", {"r.sqlite": DIR}),
    Case("store-board-db-foreign-sqlite", ["board", "--db", FOREIGN_DB], "foreign.sqlite: an SQLite database of something else (tables inventory)"),
    c("store-results-db-not-sqlite", config(results_db="r.sqlite"), "c.yaml:14: results_db: ", argv=RUN, **{"r.sqlite": "not sqlite at all\n" * 5}),
    c("store-results-db-folder", config(results_db="r.sqlite"), "results_db: ", argv=RUN, **{"r.sqlite": DIR}),
    c("store-results-db-under-a-file", config(results_db="f/r.sqlite"), "results_db: ", argv=RUN, f="a file"),
    c("store-work-dir-is-a-file", config(work_dir="w"), "c.yaml:2: work_dir: ", argv=RUN, w="a file"),
    c("store-cache-path-folder", config(cache={"path": "cache"}), "cache.path: ", argv=RUN, cache=DIR),
    c("store-cache-path-not-sqlite", config(cache={"path": "answers.sqlite"}), "cache.path: ", argv=RUN, **{"answers.sqlite": "plain text\n" * 5}),
    Case("store-publish-db-text-file", ["publish", "--db", "r.sqlite", "--out", "pub"], "r.sqlite: not an SQLite results database", {"r.sqlite": "not a database\n" * 10}),
    c("store-board-config-results-db-not-sqlite", config(results_db="r.sqlite"), "r.sqlite: not an SQLite results database", argv=["board", "c.yaml"], **{"r.sqlite": "not a database\n" * 10}),
    # ---- serve -----------------------------------------------------------------------------------
    c("serve-host-without-key", config(), "0.0.0.0", argv=["serve", "c.yaml", "--model", "keyed", "--host", "0.0.0.0"]),
    c("serve-port-out-of-range", config(), "99999", argv=["serve", "c.yaml", "--model", "keyed", "--port", "99999"]),
    c("serve-port-not-a-number", config(), "--port abc", argv=["serve", "c.yaml", "--model", "keyed", "--port", "abc"]),
    c("serve-unknown-model", config(), "--model: no model named 'nobody'", argv=["serve", "c.yaml", "--model", "nobody"]),
    Case("serve-config-missing", ["serve", "c.yaml", "--model", "keyed"], "c.yaml: config file not found"),
    # ---- collect: native reports made elsewhere (nothing stored: no results database appears) ------
    Case("collect-wrong-framework", [*COLLECT, "opencompass", "out/results_1.json"], "a report of lm_eval, not of opencompass", {"out/results_1.json": LM_EVAL_RESULTS}),
    Case("collect-wrong-framework-folder", [*COLLECT, "alpaca_eval", "outputs"], "a report of opencompass, not of alpaca_eval", {"outputs/20260101_000000/summary/summary_20260101_000000.csv": "dataset,version,metric,mode,m\nd,x,accuracy,gen,50.0\n"}),
    Case("collect-lm-eval-unknown-version", [*COLLECT, "lm_eval", "results_1.json"], "lm_eval_version: an lm-eval results JSON of an unknown version ('0.3.0')", {"results_1.json": LM_EVAL_RESULTS.replace("0.4.13", "0.3.0")}),
    Case("collect-lm-eval-no-version", [*COLLECT, "lm_eval", "results_1.json"], "unknown version (None)", {"results_1.json": LM_EVAL_RESULTS.replace(', "lm_eval_version": "0.4.13"', "")}),
    Case("collect-lm-eval-not-json", [*COLLECT, "lm_eval", "results_1.json"], "results_1.json: not JSON", {"results_1.json": "{oops"}),
    Case("collect-not-a-report", [*COLLECT, "lm_eval", "notes"], "notes: not a report benchbridge can read as lm_eval", {"notes/readme.txt": "hello\n"}),
    Case("collect-missing-path", [*COLLECT, "lm_eval", "nowhere"], "nowhere: no such file or folder"),
    Case("collect-unknown-framework", [*COLLECT, "helm", "x"], "unknown framework 'helm'"),
    Case("collect-no-store", ["collect", "lm_eval", "results_1.json"], "give --config CONFIG", {"results_1.json": LM_EVAL_RESULTS}),
    Case("collect-evals-unfinished", [*COLLECT, "openai_evals", "e.jsonl"], "e.jsonl: has no final_report line", {"e.jsonl": '{"spec": {"completion_fns": ["m"], "eval_name": "e.dev.v0"}}\n'}),
    Case("collect-opencompass-unfinished", [*COLLECT, "opencompass", "outputs"], "no summary_*.csv", {"outputs/20260101_000000/summary": DIR}),
    # ---- byo: a team's own suites run as written -------------------------------------------------
    c("byo-registry-without-evals", config(frameworks={"openai_evals": {"registries": ["reg"]}}), "frameworks.openai_evals.registries[0]: ", reg=DIR),
    c("byo-unknown-eval", config(frameworks={"openai_evals": {"registries": ["reg"], "evals": ["e.dev.v1"]}}), "evals[0]: 'e.dev.v1' is no eval or eval set of the registries; did you mean 'e.dev.v0'?", **registry(EVAL.format("q.jsonl"))),
    c("byo-unknown-eval-in-set", config(frameworks={"openai_evals": {"registries": ["reg"], "evals": ["s"]}}), "'nope' (in eval set 's')", **{**registry(EVAL.format("q.jsonl")), "reg/eval_sets/s.yaml": "s:\n  evals: [e, nope]\n"}),
    c("byo-evals-without-registries", config(frameworks={"openai_evals": {"evals": ["e"]}}), "frameworks.openai_evals.evals: names evals of `registries`"),
    Case("collect-model-for-two-models", [*COLLECT, "alpaca_eval", "leaderboard.csv", "--model", "x"], "holds 2 models (a, b)", {"leaderboard.csv": ",win_rate,n_total\na,50.0,2\nb,25.0,2\n"}),
]


def write_files(root: Path, files: dict[str, Any]) -> None:
    for rel, content in files.items():
        path = root / rel
        if content is DIR:
            path.mkdir(parents=True, exist_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under `root` with its size and modification time: what a failed command must not change.
    Not Python's bytecode cache of an imported user module (`__pycache__`, written by any import)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.name == "__pycache__" or p.parent.name == "__pycache__":
            continue
        st = p.lstat()
        out[str(p.relative_to(root))] = (0 if p.is_dir() else st.st_size, st.st_mtime_ns)
    return out


def assert_one_clear_line(err: str, names: str) -> None:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one stderr line, got {len(lines)}:\n{err}"
    assert lines[0].startswith("benchbridge: error: "), lines[0]
    assert names in lines[0], f"{names!r} not in {lines[0]!r}"


@pytest.fixture
def case_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    root = tmp_path / "case"
    root.mkdir()
    monkeypatch.chdir(root)
    monkeypatch.delenv("BENCHBRIDGE_SERVE_KEY", raising=False)
    monkeypatch.delenv("BENCHBRIDGE_TEST_UNSET_VAR", raising=False)
    environ = dict(os.environ)
    yield root
    # `run` puts its cache choice in the environment for its subprocesses: no case may pass it on.
    os.environ.clear()
    os.environ.update(environ)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_one_clear_line(
    case: Case, case_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    write_files(case_dir, case.files)
    if FOREIGN_DB in case.argv:
        with sqlite3.connect(case_dir / FOREIGN_DB) as conn:
            conn.execute("CREATE TABLE inventory (item TEXT)")
        conn.close()
    if case.syspath:
        monkeypatch.syspath_prepend(str(case_dir))
        monkeypatch.setenv("PYTHONPATH", str(case_dir))
    before = snapshot(case_dir)
    code = main(case.argv)
    captured = capsys.readouterr()
    assert code == case.code, captured.err
    assert_one_clear_line(captured.err, case.names)
    assert "sk-in-url" not in captured.out + captured.err  # a secret written into the config is not repeated
    assert snapshot(case_dir) == before, "the failed command changed files"


# -- accepted by design: inputs that look odd but are fine ------------------------------------------

BOM = "\ufeff"


@dataclass
class Accepted:
    id: str
    argv: list[str]
    files: dict[str, Any]
    check: Callable[[Path, str], None] = lambda root, out: None


def _first_instruction(root: Path) -> str:
    return json.loads((root / "o" / "samples.jsonl").read_text(encoding="utf-8").splitlines()[0])["instruction"]


ACCEPTED: list[Accepted] = [
    Accepted(
        "importers-evals-jsonl-with-bom",
        ["datasets", "import", "--from", "openai-evals", "s.jsonl", "--out", "o"],
        {"s.jsonl": BOM + EVALS_LINE},
        lambda root, out: _assert("imported 1 qa samples" in out),
    ),
    Accepted(
        "importers-text-with-bom",
        ["datasets", "import", "--from", "text", "t.txt", "--out", "o"],
        {"t.txt": BOM + "Write a haiku.\nName a colour.\n"},
        lambda root, out: _assert(_first_instruction(root) == "Write a haiku."),
    ),
    Accepted(
        "importers-text-trailing-blank-lines",
        ["datasets", "import", "--from", "text", "t.txt", "--out", "o"],
        {"t.txt": "Write a haiku.\nName a colour.\n\n\n"},
        lambda root, out: _assert("imported 2 open samples" in out),
    ),
    Accepted(
        "importers-csv-with-bom",
        ["datasets", "import", "--from", "csv", "a.csv", "--out", "o"],
        {"a.csv": BOM + "question,answer\nSay hi,hi\n"},
        lambda root, out: _assert("imported 1 qa samples" in out),
    ),
    Accepted(
        "datasets-folder-samples-with-bom",
        ["datasets", "validate", "ds"],
        dataset(samples=BOM + MCQ),
        lambda root, out: _assert("ds: ok (d: 1 mcq samples" in out),
    ),
    Accepted(
        "datasets-bare-file-kind-from-line-1",
        ["datasets", "validate", "s.jsonl"],
        {"s.jsonl": QA_LINE},
        lambda root, out: _assert("s.jsonl: ok (s: 1 qa samples" in out),
    ),
    Accepted(
        "datasets-bare-file-with-kind-and-bom",
        ["datasets", "validate", "s.jsonl", "--kind", "mcq"],
        {"s.jsonl": BOM + MCQ},
        lambda root, out: _assert("s.jsonl: ok (s: 1 mcq samples" in out),
    ),
    Accepted(
        "datasets-bare-bundled-samples",
        ["datasets", "validate", str(DATASETS / "mcq_science_en" / "samples.jsonl")],
        {},
        lambda root, out: _assert("samples.jsonl: ok (mcq_science_en: 8 mcq samples" in out),
    ),
    Accepted(
        "config-yaml-merge-key-overrides",
        ["prepare", "c.yaml", "--out", "out"],
        {
            "c.yaml": "name: t\nmodels:\n  - &base\n    name: a\n    kind: python\n"
            f"    target: bridges.testing:AnswerKeyModel\n    args: {{datasets: ['{QA}']}}\n"
            f"  - <<: *base\n    name: b\ndatasets:\n  - path: {QA}\nframeworks:\n  lm_eval: {{}}\n"
        },
        lambda root, out: _assert((root / "out" / "lm_eval" / "jobs" / "b.json").is_file()),
    ),
]


def _assert(condition: bool) -> None:
    assert condition


@pytest.mark.parametrize("case", ACCEPTED, ids=[case.id for case in ACCEPTED])
def test_accepted_by_design(case: Accepted, case_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_files(case_dir, case.files)
    code = main(case.argv)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.err == ""
    case.check(case_dir, captured.out)


# -- a handful as real `benchbridge` processes: what a user's terminal shows ------------------------

SUBPROCESS_CASES = [
    "config-not-utf8",
    "cli-prepare-out-is-a-file",
    "store-board-db-text-file",
    "model-name-300-chars",
    "cli-run-without-config",
]


@pytest.mark.parametrize("case_id", SUBPROCESS_CASES)
def test_bad_input_through_the_benchbridge_command(case_id: str, case_dir: Path) -> None:
    case = next(c for c in CASES if c.id == case_id)
    write_files(case_dir, case.files)
    before = snapshot(case_dir)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [str(BENCHBRIDGE), *case.argv], cwd=case_dir, capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == case.code, proc.stderr
    assert proc.stdout == ""
    assert_one_clear_line(proc.stderr, case.names)
    assert snapshot(case_dir) == before


def test_corpus_counts() -> None:
    """The per-group numbers in this module's docstring are the corpus's."""
    tried = Counter(case.group for case in CASES)
    accepted = Counter(case.id.split("-", 1)[0] for case in ACCEPTED)
    assert sum(tried.values()) >= 100
    doc = __doc__ or ""
    for group, n in tried.items():
        row = next(line for line in doc.splitlines() if line.strip().startswith(group + " "))
        numbers = [int(x) for x in row.replace("/", " ").split()[1:4]]
        assert numbers == [n, n, accepted.get(group, 0)], (group, numbers, n, accepted.get(group, 0))
    assert len({case.id for case in CASES}) == len(CASES)


def test_ctrl_c_is_one_line_and_exit_130(
    case_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import bridges.datasets

    def interrupted(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(bridges.datasets, "load_dataset", interrupted)
    assert main(["datasets", "validate", "ds"]) == 130
    assert_one_clear_line(capsys.readouterr().err, "interrupted (Ctrl-C)")

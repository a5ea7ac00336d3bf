"""The OpenCompass bridge against the real OpenCompass 0.5.4.

OpenCompass runs twice in this module: one session job (3 models x 5 datasets through
`benchbridge run`'s code path) and the documented C-Eval config prepared and run by hand with the
`opencompass` CLI. Everything else only prepares (no OpenCompass import) or fails before writing.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from bridges import BenchbridgeError, RunOutcome, load_config, run
from bridges.cli import main
from bridges.datasets import import_dataset
from bridges.frameworks import RunContext
from bridges.frameworks.opencompass.bridge import OpenCompassBridge
from bridges.records import Record
from leaderboards.store import ResultsStore
from tests._sample_checks import assert_key_pattern, cell_samples
from tests.conftest import DATASETS, ROOT

VENV_BIN = Path(sys.executable).parent
CEVAL = DATASETS / "ceval_mini"
SUBJECTS = ["computer_network", "high_school_chemistry"]
BROKEN_MODULE = """
from bridges.models._python import SMOKE_PROMPT


def broken(batch):
    if all(SMOKE_PROMPT in str(item) for item in batch):
        return ["OK"] * len(batch)  # passes the pre-run check, so the failure happens inside OpenCompass
    raise RuntimeError("simulated backend failure: GPU fell off the bus")
"""


def summary_cells(out_dir: Path) -> dict[tuple[str, str, str], str]:
    """{(dataset abbr, metric, model): cell} from the summary CSV OpenCompass wrote."""
    (csv_path,) = out_dir.glob("outputs/*/summary/summary_*.csv")
    cells = {}
    with csv_path.open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            for model, cell in row.items():
                if model not in ("dataset", "version", "metric", "mode"):
                    cells[(row["dataset"], row["metric"], model)] = cell
    return cells


@dataclass
class Job:
    outcome: RunOutcome
    records: list[Record]
    out_dir: Path
    cells: dict[tuple[str, str, str], str]

    def get(self, model: str, benchmark: str, subset: str = "") -> Record:
        (rec,) = [
            r for r in self.records if (r.model, r.benchmark, r.subset) == (model, benchmark, subset) and r.primary
        ]
        return rec


@pytest.fixture(scope="session")
def job(tmp_path_factory: pytest.TempPathFactory, tiny_model_path: Path) -> Job:
    root = tmp_path_factory.mktemp("oc_job")
    ceval_key = import_dataset("ceval", CEVAL, "ceval_mini").save(root / "ceval_key")
    (root / "pymods").mkdir()
    (root / "pymods" / "oc_broken_model.py").write_text(BROKEN_MODULE, encoding="utf-8")
    keyed_sources = [str(DATASETS / n) for n in ("mcq_science_en", "qa_capitals", "qa_zh")] + [str(ceval_key)]
    config = {
        "name": "oc_job",
        "work_dir": str(root / "runs"),
        "prompt_mode": "native",  # OpenCompass's own HF class and dataset templates (parity: tests/test_parity.py)
        "models": [
            {
                "name": "tiny",
                "kind": "hf",
                "path": str(tiny_model_path),
                "max_seq_len": 1024,
                "batch_size": 8,
                "generation": {"max_new_tokens": 4},
            },
            {
                "name": "keyed",
                "kind": "python",
                "target": "bridges.testing:AnswerKeyModel",
                "args": {
                    "datasets": keyed_sources,
                    "wrong_ids": ["sci-1", "sci-2", "cap-3", "zh-3", "computer_network-0"],
                },
            },
            {"name": "broken", "kind": "python", "target": "oc_broken_model:broken"},
        ],
        "datasets": [
            {"path": str(DATASETS / n)} for n in ("mcq_science_en", "qa_capitals", "qa_zh", "open_instructions")
        ],
        "frameworks": {
            "opencompass": {
                "builtin_datasets": [
                    {"name": "ceval_gen", "data_dir": str(CEVAL), "subjects": SUBJECTS},
                ]
            }
        },
    }
    path = root / "job.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(root / "pymods"), old) if p)
    try:
        outcome = run(load_config(path), only=["opencompass"])
    finally:
        os.environ.pop("PYTHONPATH") if old is None else os.environ.__setitem__("PYTHONPATH", old)
    (fw,) = outcome.frameworks
    out_dir = outcome.run_dir / "opencompass"
    return Job(outcome, fw.records, out_dir, summary_cells(out_dir))


def assert_equals_summary(job_or_cells: Job | dict, rec: Record, abbr: str) -> None:
    cells = job_or_cells.cells if isinstance(job_or_cells, Job) else job_or_cells
    native_metric = rec.extra["opencompass_metric"]
    assert rec.value == float(cells[(abbr, native_metric, rec.model)])


ABBRS = {
    ("mcq_science_en", ""): "mcq_science_en",
    ("qa_capitals", ""): "qa_capitals",
    ("qa_zh", ""): "qa_zh",
    ("ceval", "computer_network"): "ceval-computer_network",
    ("ceval", "high_school_chemistry"): "ceval-high_school_chemistry",
    ("ceval", ""): "ceval",
}


@pytest.mark.framework
def test_tiny_hf_model_on_ceval_gen_and_canonical_datasets(job: Job) -> None:
    for (benchmark, subset), abbr in ABBRS.items():
        rec = job.get("tiny", benchmark, subset)
        assert rec.status == "ok", rec.error
        assert 0.0 <= rec.value <= 100.0 and rec.scale == 100
        assert rec.framework == "opencompass" and rec.framework_version == "0.5.4"
        assert_equals_summary(job, rec, abbr)
    assert job.get("tiny", "qa_zh").metric == "exact_match"
    assert job.get("tiny", "ceval", "computer_network").metric == "accuracy"
    assert not [r for r in job.records if r.benchmark == "open_instructions"]  # open is not OpenCompass's kind


@pytest.mark.framework
def test_answer_key_model_scores_exactly_what_opencompass_wrote(job: Job) -> None:
    expected = {  # (benchmark, subset): (value, n): from the key and wrong_ids
        ("mcq_science_en", ""): (75.0, 8),  # sci-1, sci-2 wrong
        ("qa_capitals", ""): (87.5, 8),  # cap-3 wrong
        ("qa_zh", ""): (83.33, 6),  # zh-3 wrong; OpenCompass's summary rounds 500/6 to 2 places
        ("ceval", "computer_network"): (75.0, 4),  # computer_network-0 wrong
        ("ceval", "high_school_chemistry"): (100.0, 4),
        ("ceval", ""): (87.5, 8),  # OpenCompass's own average over the two subjects
    }
    for key, (value, n) in expected.items():
        rec = job.get("keyed", *key)
        assert (rec.status, rec.value, rec.n_samples) == ("ok", value, n), key
        assert_equals_summary(job, rec, ABBRS[key])
    assert job.get("keyed", "qa_zh").extra["results_value"] == pytest.approx(500 / 6)
    details = Path(job.get("keyed", "mcq_science_en").details_path)
    assert sum(d["correct"] == [True] for d in json.loads(details.read_text())["details"]) == 6


@pytest.mark.framework
def test_answer_key_samples_are_the_key_pattern_from_opencompass_own_details(job: Job) -> None:
    ids = {
        ("mcq_science_en", ""): ([f"sci-{i}" for i in range(1, 9)], {"sci-1", "sci-2"}),
        ("qa_capitals", ""): ([f"cap-{i}" for i in range(1, 9)], {"cap-3"}),
        ("qa_zh", ""): ([f"zh-{i}" for i in range(1, 7)], {"zh-3"}),
        # A built-in dataset's samples are named by OpenCompass's index (computer_network-0 is row 0).
        ("ceval", "computer_network"): (["0", "1", "2", "3"], {"0"}),
        ("ceval", "high_school_chemistry"): (["0", "1", "2", "3"], set()),
    }
    for key, (names, wrong) in ids.items():
        samples = assert_key_pattern(job.outcome.db, job.get("keyed", *key), names, wrong)
        assert all(s.group == (key[1] or None) for s in samples)  # the subject clusters the errors
    (cap3,) = [s for s in cell_samples(job.outcome.db, job.get("keyed", "qa_capitals")) if s.sample_id == "cap-3"]
    assert cap3.messages == [
        {"role": "system", "content": "Answer with the name of the city only."},
        {"role": "user", "content": "What is the capital of Italy?"},
    ]
    assert (cap3.output, cap3.extracted, cap3.references) == ("I don't know", "I don't know", ["Rome"])
    assert cap3.extra["normalised"] == "I dont know"  # EMEvaluator's normalisation, part of the metric
    (sci1,) = [s for s in cell_samples(job.outcome.db, job.get("keyed", "mcq_science_en")) if s.sample_id == "sci-1"]
    assert (sci1.extracted, sci1.references) == ("C", ["B"])
    chem = cell_samples(job.outcome.db, job.get("keyed", "ceval", "high_school_chemistry"))
    assert all(s.input_text.count("答案") > 1 for s in chem)  # C-Eval's few-shot examples are in the prompt as sent
    tiny = cell_samples(job.outcome.db, job.get("tiny", "qa_capitals"))
    assert len(tiny) == 8 and all(s.output is not None for s in tiny)
    assert not [s for s in ResultsStore(job.outcome.db).samples(model="broken")]  # failed: no samples


@pytest.mark.framework
def test_chat_messages_and_system_prompt_reach_the_python_model(job: Job) -> None:
    (pred_file,) = job.out_dir.glob("outputs/*/predictions/keyed/qa_capitals.json")
    first = json.loads(pred_file.read_text(encoding="utf-8"))["0"]
    assert first["origin_prompt"] == [
        {"role": "SYSTEM", "prompt": "Answer with the name of the city only."},
        {"role": "HUMAN", "prompt": "What is the capital of France?"},
    ]
    assert first["prediction"] == "Paris"


@pytest.mark.framework
def test_failing_task_is_a_failed_record_with_its_traceback_never_a_score(job: Job) -> None:
    broken = [r for r in job.records if r.model == "broken"]
    assert {(r.benchmark, r.subset) for r in broken} == set(ABBRS) - {("ceval", "")}  # no average of failures
    for rec in broken:
        assert rec.status == "failed" and rec.value is None
        first = rec.error.splitlines()[0]
        assert first.startswith("infer task failed: RuntimeError: simulated backend failure: GPU fell off the bus")
        log = re.search(r"\(log: (.+\.out)\)", first).group(1)
        assert Path(log).is_file() and "/logs/infer/broken/" in log
        assert "Traceback (most recent call last)" in rec.error
    assert {job.cells[(abbr, m, "broken")] for (abbr, m, model) in job.cells if model == "broken"} == {"-"}
    (fw,) = job.outcome.frameworks
    assert fw.status == "failed" and "GPU fell off the bus" in fw.error


@pytest.mark.framework
def test_native_work_dir_logs_and_config_are_kept(job: Job) -> None:
    (work,) = job.out_dir.glob("outputs/2*")
    assert {p.name for p in work.iterdir()} >= {"configs", "logs", "predictions", "results", "summary"}
    assert (job.out_dir / "opencompass.log").read_text().count("Current exp folder") == 1
    assert (job.out_dir / "eval_oc_job.py").is_file()
    assert sorted(p.name for p in (job.out_dir / "data").iterdir()) == [
        "mcq_science_en.jsonl",
        "qa_capitals.jsonl",
        "qa_zh.jsonl",
    ]
    assert not (job.out_dir / "tmp").exists()  # one process: no per-task param files
    ok = [r for r in job.records if r.status == "ok" and r.details_path]
    assert ok and all(Path(r.details_path).is_file() for r in ok)


@pytest.mark.framework
def test_documented_ceval_config_prepared_then_run_by_hand(
    tmp_path: Path, tiny_model_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("INTERNLM2_PATH", str(tiny_model_path))
    out = tmp_path / "prepared"
    assert (
        main(["prepare", str(ROOT / "configs" / "ceval_internlm2.yaml"), "--out", str(out), "--only", "opencompass"])
        == 0
    )
    folder = out / "opencompass"
    text = (folder / "eval_ceval_internlm2.py").read_text()
    assert "from opencompass.configs.datasets.ceval.ceval_gen import ceval_datasets" in text
    assert "'padding_side': 'left', 'truncation_side': 'left', 'trust_remote_code': True" in text
    assert "'max_seq_len': 1024" in text and "'max_out_len': 16" in text and "'batch_size': 2" in text
    assert "'num_gpus': 0" in text
    # By hand, from another working directory: the config finds its data and writes next to itself.
    env = {**os.environ, "USE_TF": "0"}
    done = subprocess.run(
        [str(VENV_BIN / "opencompass"), str(folder / "eval_ceval_internlm2.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    bridge = OpenCompassBridge(RunContext(load_config(ROOT / "configs" / "ceval_internlm2.yaml"), "by-hand", "h"))
    records = bridge.collect(folder)
    cells = summary_cells(folder)
    assert {(r.benchmark, r.subset) for r in records} == {("ceval", s) for s in [*SUBJECTS, ""]}
    for rec in records:
        assert rec.status == "ok" and rec.model == "internlm2-chat-1_8b" and rec.n_samples in (4, 8)
        assert_equals_summary(cells, rec, "ceval" if not rec.subset else f"ceval-{rec.subset}")


# -- prepare only: config content, no OpenCompass import -------------------------------------------


def write_config(tmp_path: Path, config: dict) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def base_config(tmp_path: Path, **framework: object) -> dict:
    return {
        "name": "t",
        "work_dir": str(tmp_path / "runs"),
        "models": [
            {
                "name": "keyed",
                "kind": "python",
                "target": "bridges.testing:AnswerKeyModel",
                "args": {"datasets": [str(DATASETS / "mcq_science_en")]},
            }
        ],
        "datasets": [{"path": str(DATASETS / "mcq_science_en")}],
        "frameworks": {"opencompass": dict(framework)},
    }


def test_openai_key_stays_in_the_environment_and_slurm_options_pass_through(
    tmp_path: Path, tiny_model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MY_ENDPOINT_KEY", "sk-do-not-write-me")
    config = base_config(
        tmp_path,
        runner="slurm",
        runner_options={"partition": "llm", "quotatype": "auto", "retry": 3},
        max_num_workers=4,
        builtin_datasets=[{"name": "ceval_gen", "data_dir": str(CEVAL), "subjects": SUBJECTS[:1], "shots": 2}],
    )
    config["prompt_mode"] = "native"  # OpenCompass's own OpenAISDK class (parity asks through the model layer)
    config["models"].append(
        {
            "name": "endpoint",
            "kind": "openai",
            "model": "qwen2",
            "base_url": "http://127.0.0.1:9/v1",
            "api_key_env": "MY_ENDPOINT_KEY",
            "tokenizer_path": str(tiny_model_path),
        }
    )
    out = tmp_path / "prep"
    assert main(["prepare", str(write_config(tmp_path, config)), "--out", str(out)]) == 0
    written = [p for p in out.rglob("*") if p.is_file()]
    assert not [p for p in written if "sk-do-not-write-me" in p.read_text(encoding="utf-8")]
    text = (out / "opencompass" / "eval_t.py").read_text()
    assert "'type': OpenAISDK" in text and "'key': 'ENV'" in text
    assert f"'tokenizer_path': '{tiny_model_path}'" in text
    assert text.count("'type': SlurmRunner") == 2  # infer and eval
    assert text.count("'partition': 'llm'") == 2 and "'quotatype': 'auto'" in text and "'retry': 3" in text
    assert "'num_worker': 4" in text
    assert "_d['infer_cfg']['retriever']['fix_id_list'] = [0, 1]" in text
    assert "if d.get('name') in ['computer_network']" in text
    assert "'type': BenchbridgeModel" in text
    assert "from opencompass.runners import SlurmRunner" in text and "from opencompass.models import OpenAISDK" in text
    bridge = OpenCompassBridge(RunContext(load_config(tmp_path / "run.yaml"), "r", "h"))
    monkeypatch.delenv("MY_ENDPOINT_KEY")
    with pytest.raises(BenchbridgeError, match="MY_ENDPOINT_KEY is not set"):
        bridge._environment()


# -- bad input: one line naming file/line/key, exit 2, nothing written ----------------------------


def bad_jsonl(tmp_path: Path) -> tuple[dict, str]:
    ds = tmp_path / "mcq_broken"
    shutil.copytree(DATASETS / "mcq_science_en", ds)
    with (ds / "samples.jsonl").open("a", encoding="utf-8") as fh:
        fh.write('{"id": "sci-9", "question": "unterminated\n')
    config = base_config(tmp_path)
    config["datasets"] = [{"path": str(ds)}]
    return config, f"{ds / 'samples.jsonl'}:9: invalid JSON"


def missing_ceval(tmp_path: Path) -> tuple[dict, str]:
    config = base_config(tmp_path, builtin_datasets=[{"name": "ceval_gen", "data_dir": str(tmp_path / "no_ceval")}])
    return (
        config,
        f"frameworks.opencompass.builtin_datasets[0].data_dir: {tmp_path / 'no_ceval'}: data folder not found",
    )


def missing_subject(tmp_path: Path) -> tuple[dict, str]:
    config = base_config(
        tmp_path,
        builtin_datasets=[{"name": "ceval_gen", "data_dir": str(CEVAL), "subjects": ["computer_network", "marxism"]}],
    )
    return config, f"{CEVAL / 'dev' / 'marxism_dev.csv'}: C-Eval file not found"


def unknown_kind(tmp_path: Path) -> tuple[dict, str]:
    config = base_config(tmp_path)
    config["models"].append({"name": "m2", "kind": "ggml", "path": "/x"})
    return config, "models[1].kind: unknown model kind 'ggml'"


def unknown_dataset(tmp_path: Path) -> tuple[dict, str]:
    config = base_config(tmp_path, builtin_datasets=[{"name": "cevall_gen", "data_dir": str(CEVAL)}])
    return config, ("frameworks.opencompass.builtin_datasets[0].name: unknown OpenCompass dataset config 'cevall_gen'")


def unknown_subject(tmp_path: Path) -> tuple[dict, str]:
    config = base_config(
        tmp_path, builtin_datasets=[{"name": "ceval_gen", "data_dir": str(CEVAL), "subjects": ["computer_netwrk"]}]
    )
    return config, "frameworks.opencompass.builtin_datasets[0].subjects: computer_netwrk not in ceval_gen"


def openai_without_tokenizer(tmp_path: Path) -> tuple[dict, str]:
    """Offline, OpenAISDK without a tokenizer_path fails inside the run on a tiktoken download (native mode:
    in parity mode the model layer asks the endpoint, not OpenAISDK)."""
    config = base_config(tmp_path)
    config["prompt_mode"] = "native"
    config["models"].append({"name": "api", "kind": "openai", "model": "m", "base_url": "http://127.0.0.1:9/v1"})
    return config, "models[1].tokenizer_path: required for openai model api in OpenCompass"


@pytest.mark.parametrize(
    "case",
    [bad_jsonl, missing_ceval, missing_subject, unknown_kind, unknown_dataset, unknown_subject, openai_without_tokenizer],
)
@pytest.mark.parametrize("command", ["prepare", "run"])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case, command: str
) -> None:
    config, expected = case(tmp_path)
    path = write_config(tmp_path, config)
    out = tmp_path / "prep"
    argv = ["prepare", str(path), "--out", str(out)] if command == "prepare" else ["run", str(path)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err, err
    assert err.startswith(f"benchbridge: error: {path}") or err.startswith(f"benchbridge: error: {tmp_path}")
    assert not out.exists() and not (tmp_path / "runs").exists()

"""The OpenCompass bridge: benchbridge models x datasets -> a real OpenCompass python config, run, records.

Config (`frameworks.opencompass` in a run config), every key optional::

    frameworks:
      opencompass:
        builtin_datasets:            # OpenCompass's own dataset configs, by name, on local data
          - name: ceval_gen          # any config under opencompass/configs/datasets (or dataset_collections)
            data_dir: ../custom_datasets/ceval_mini   # replaces each dataset's `path` (relative to this file)
            subjects: [computer_network]              # optional: keep these datasets (`name` or `abbr`)
            shots: 3                                   # optional: k of a fixed-k retriever (0 = zero-shot)
            benchmark: ceval                           # optional: default is the name without _gen/_ppl...
        runner: local                # local | slurm | dlc: OpenCompass's LocalRunner/SlurmRunner/DLCRunner
        runner_options: {}           # passed to the runner as is, e.g. {partition: llm, quotatype: auto, retry: 2}
        max_num_workers: 1           # parallel tasks (runner max_num_workers, partitioner num_worker)
        execution: auto              # auto | in_process | subprocess (local runner only, see below)
        num_gpus: 0                  # run_cfg.num_gpus of hf models (0 = CPU)
        max_out_len: null            # overrides every model's generation.max_new_tokens

What `prepare(out_dir)` writes (runnable by hand: ``opencompass out_dir/eval_<config name>.py``):

- ``eval_<name>.py``: an OpenCompass config. Built-in dataset configs are imported with
  ``read_base()`` from the installed package and adjusted in place (subjects, path, shots).
  Canonical ``mcq`` datasets are OpenCompass custom datasets (``path``, ``data_type='mcq'``,
  ``infer_method='gen'``: OpenCompass expands them itself). Canonical ``qa`` datasets are written as
  full dataset dicts, because custom-dataset expansion cannot express them: several acceptable
  answers (the ``answer`` column is a list, scored by OpenCompass's ``EMEvaluator``, exact match
  after its ``general_postprocess``) and a per-sample system prompt (a ``SYSTEM`` turn in the
  template's ``begin``). Multi-turn ``qa`` samples are flattened into one question
  (``QaSample.prompt_text``). ``open`` datasets are not for OpenCompass and are skipped; few-shot
  rows of canonical datasets are not used (zero-shot).
- ``data/<dataset>.jsonl``: the canonical datasets in OpenCompass's custom-dataset columns.
- ``benchbridge.json``: which dataset abbr is which benchmark/subset, read back by `collect`.

Models, by kind (`MODEL_CONFIGS`): ``hf`` -> ``HuggingFacewithChatTemplate`` (``chat: true``) or
``HuggingFaceBaseModel``; ``openai`` -> ``OpenAISDK`` with ``key='ENV'`` (by hand, export
``OPENAI_API_KEY`` from the spec's ``api_key_env``; give the spec a local ``tokenizer_path``
offline, else OpenAISDK fetches a tiktoken file to count tokens). `prepare` points it at the
upstream; during `run` it asks a loopback endpoint benchbridge serves for the spec
(`bridges.serve.serving`, model = the spec's name, a random per-run key), so every call goes through the
model layer (response cache, rate limits, retries) and the secret never reaches OpenCompass;
any other kind (``python``, third-party kinds) -> `bridges.frameworks.opencompass.model.BenchbridgeModel`, which
calls benchbridge's model layer with the spec serialised as plain JSON in the config. System turns:
``hf`` chat models keep OpenCompass's default meta template, which folds a dataset's SYSTEM turn into
the user turn (safe for chat templates without a system role) while a spec's ``system_prompt`` becomes
a real system message; ``openai`` and layer models get SYSTEM turns as system messages. The run
config's ``max_samples`` becomes each dataset's ``reader_cfg.test_range``.

`run(out_dir)` starts the venv's ``opencompass`` CLI once. With ``execution: auto`` a local run with
``max_num_workers: 1`` uses `ContainedRunner`: every task runs inside that one process (OpenCompass's
LocalRunner starts one ``python`` per task, each paying ~10 s of imports here) while failures stay per
task with their native log files, unlike ``--debug``. OpenCompass exits 0 when tasks fail: `collect`
turns ``-`` summary cells into failed records carrying the task log's traceback, never scores.
"""

from __future__ import annotations

import contextlib
import csv
import difflib
import importlib.util
import json
import pprint
import re
import secrets
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from bridges._errors import BenchbridgeError, FrameworkFailure
from bridges.datasets import Dataset, McqSample, QaSample
from bridges.frameworks import Bridge, RunContext
from bridges.frameworks.opencompass.byo import check_configs, config_code, user_records
from bridges.frameworks.opencompass.samples import dataset_samples
from bridges.frameworks.parity import parity_row, same_shot_count
from bridges.frameworks.processes import child_env, run_child
from bridges.models import HFSpec, ModelSpec, OpenAISpec
from bridges.records import Record, Sample, clip_error
from bridges.secrets import referenced_env

MANIFEST = "benchbridge.json"
DATA_DIR = "data"
WORK_DIR = "outputs"
LOG_FILE = "opencompass.log"
# The key of the loopback endpoint a run serves `openai` models on: random per process (per run), so another
# local user cannot ask the model, and its upstream on the operator's key, through it. The layer reads the real key.
SERVED_API_KEY = secrets.token_urlsafe(24)
KINDS = {"mcq", "qa"}
OC = "opencompass"
CONTAINED_RUNNER = "bridges.frameworks.opencompass.model.ContainedRunner"
RUNNER_TYPES = {
    "local": "opencompass.runners.LocalRunner",
    "slurm": "opencompass.runners.SlurmRunner",
    "dlc": "opencompass.runners.DLCRunner",
}
KIND_METRIC = {"mcq": "accuracy", "qa": "exact_match"}  # what a failed record of each kind stands in for
# What each OpenCompass metric means in our records (metric names are shared across frameworks).
METRIC_NAMES = {"score": "exact_match", "naive_average": "accuracy"}


class BuiltinDataset(BaseModel):
    """One of OpenCompass's own dataset configs, pointed at a local data folder."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="config name, e.g. ceval_gen")
    data_dir: str = Field(description="the dataset's local folder; relative paths are relative to the run config")
    subjects: list[str] | None = Field(None, min_length=1, description="keep only these (dataset `name` or `abbr`)")
    shots: int | None = Field(None, ge=0, description="k of a fixed-k retriever; 0 = zero-shot")
    benchmark: str | None = Field(None, description="record benchmark name; default: name without _gen/_ppl...")


class OpenCompassOptions(BaseModel):
    """`frameworks.opencompass` in a run config (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    builtin_datasets: list[BuiltinDataset] = Field(default_factory=list)
    runner: Literal["local", "slurm", "dlc"] = "local"
    runner_options: dict[str, Any] = Field(default_factory=dict)
    max_num_workers: int = Field(1, ge=1)
    execution: Literal["auto", "in_process", "subprocess"] = "auto"
    num_gpus: int = Field(0, ge=0)
    max_out_len: int | None = Field(None, ge=1)
    timeout_s: float | None = Field(None, gt=0, description="end the run (and OpenCompass's task processes) after this")
    # A team's own python configs, run with our models (byo.py): their datasets kept, their models replaced or kept.
    configs: list[str] = Field(default_factory=list, description="OpenCompass python config files")
    config_models: Literal["replace", "add"] = "replace"


# ---------------------------------------------------------------------------------------------------
# Built-in dataset configs of the installed OpenCompass package (found without importing it)


def opencompass_root() -> Path:
    spec = importlib.util.find_spec(OC)
    if spec is None or not spec.submodule_search_locations:
        raise BenchbridgeError("opencompass is not installed in this environment (scripts/setup.sh installs it)")
    return Path(next(iter(spec.submodule_search_locations)))


def find_builtin_config(name: str, key: str) -> Path:
    """`ceval_gen` -> .../opencompass/configs/datasets/ceval/ceval_gen.py (as `opencompass --datasets` finds it)."""
    configs = opencompass_root() / "configs"
    roots = [configs / "datasets", configs / "dataset_collections"]
    matches = [p for root in roots for p in sorted(root.rglob(f"{name}.py"))]
    if not matches:
        known = sorted({p.stem for root in roots for p in root.rglob("*_gen.py")})
        close = difflib.get_close_matches(name, known, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else f" (e.g. {', '.join(known[:3])})"
        raise BenchbridgeError(
            f"{key}: unknown OpenCompass dataset config {name!r}: no {name}.py under {configs}{hint}"
        )
    return matches[0]


def module_of(path: Path) -> str:
    """The importable module of a config file inside the opencompass package."""
    rel = path.relative_to(opencompass_root().parent).with_suffix("")
    return ".".join(rel.parts)


def load_builtin_datasets(path: Path) -> dict[str, list[dict[str, Any]]]:
    """Reads the `*_datasets` lists of a config without importing OpenCompass (mmengine lazy parse).

    Returns plain dicts; class references become their class names (``"CEvalDataset"``).
    """
    from mmengine.config import Config
    from mmengine.config import ConfigDict as MMConfigDict

    cfg = Config.fromfile(str(path))
    MMConfigDict.lazy = True  # read LazyObjects as they are; building them would import OpenCompass (~10 s)
    try:
        return {k: [_plain(d) for d in cfg._cfg_dict[k]] for k in cfg._cfg_dict.keys() if k.endswith("_datasets")}
    finally:
        MMConfigDict.lazy = False


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)  # LazyObject / class -> its name


def _check_ceval(data_dir: Path, dataset: dict[str, Any], key: str) -> None:
    """CEvalDataset reads {dev,val,test}/<name>_<split>.csv and takes fix_id_list rows from dev."""
    name = dataset["name"]
    for split in ("dev", "val", "test"):
        f = data_dir / split / f"{name}_{split}.csv"
        if not f.is_file():
            raise BenchbridgeError(
                f"{key}: {f}: C-Eval file not found (a C-Eval folder holds {{dev,val,test}}/<subject>_<split>.csv)"
            )
    shots = dataset["infer_cfg"]["retriever"].get("fix_id_list") or []
    with (data_dir / "dev" / f"{name}_dev.csv").open(encoding="utf-8") as fh:
        rows = sum(1 for _ in csv.DictReader(fh))
    if shots and rows < max(shots) + 1:
        raise BenchbridgeError(
            f"{key}: {data_dir / 'dev' / f'{name}_dev.csv'}: {rows} rows, but {len(shots)}-shot needs {max(shots) + 1}"
        )


# Loader class name -> how to check its local files before anything runs. Others: the folder must exist.
DATA_CHECKS: dict[str, Callable[[Path, dict[str, Any], str], None]] = {"CEvalDataset": _check_ceval}
DATA_LAYOUTS: dict[str, str] = {"CEvalDataset": "a C-Eval folder: {dev,val,test}/<subject>_<split>.csv"}


class _Builtin:
    """A validated `builtin_datasets` entry."""

    def __init__(self, entry: BuiltinDataset, key: str, resolve: Callable[[str], Path]) -> None:
        self.entry = entry
        self.key = key
        self.path = find_builtin_config(entry.name, f"{key}.name")
        self.module = module_of(self.path)
        lists = load_builtin_datasets(self.path)
        if not lists:
            raise BenchbridgeError(f"{key}.name: {self.path} defines no *_datasets list")
        self.variables = list(lists)
        datasets = [d for v in self.variables for d in lists[v]]
        if entry.subjects:
            known = {n for d in datasets for n in (d.get("name"), d.get("abbr")) if n}
            unknown = [s for s in entry.subjects if s not in known]
            if unknown:
                # A dataset with neither name nor abbr cannot be asked for; None would break sorting.
                names = sorted({str(n) for d in datasets if (n := d.get("name") or d.get("abbr"))})
                raise BenchbridgeError(
                    f"{key}.subjects: {', '.join(unknown)} not in {entry.name} (has {len(names)}: "
                    f"{', '.join(names[:8])}{', ...' if len(names) > 8 else ''})"
                )
            datasets = [d for d in datasets if d.get("name") in entry.subjects or d.get("abbr") in entry.subjects]
        if entry.shots is not None:
            for d in datasets:
                retriever = d["infer_cfg"].get("retriever", {})
                if entry.shots and retriever.get("type") != "FixKRetriever":
                    raise BenchbridgeError(
                        f"{key}.shots: {entry.name} uses {retriever.get('type')}, not a fixed-k retriever "
                        "(only shots: 0 applies to it)"
                    )
                retriever["fix_id_list"] = list(range(entry.shots))
        self.datasets = datasets
        self.data_dir = resolve(entry.data_dir)
        if not self.data_dir.is_dir():
            loaders = sorted({str(d.get("type")) for d in datasets})
            layout = next((DATA_LAYOUTS[t] for t in loaders if t in DATA_LAYOUTS), f"the files {entry.name} reads")
            raise BenchbridgeError(
                f"{key}.data_dir: {self.data_dir}: data folder not found (expected {layout}; nothing is downloaded)"
            )
        for d in datasets:
            DATA_CHECKS.get(str(d.get("type")), lambda *a: None)(self.data_dir, d, f"{key}.data_dir")
        self.benchmark = entry.benchmark or re.sub(r"_(gen|ppl|ll|clp)(_[0-9a-f]{6})?$", "", entry.name)
        self.abbrs = [d["abbr"] for d in datasets]

    def subset(self, abbr: str) -> str:
        for prefix in (f"{self.benchmark}-", f"{self.benchmark}_"):
            if abbr.startswith(prefix):
                return abbr[len(prefix) :]
        return "" if abbr == self.benchmark else abbr


# ---------------------------------------------------------------------------------------------------
# Canonical datasets -> OpenCompass custom-dataset files


def mcq_rows(ds: Dataset) -> list[dict[str, Any]]:
    """question, A..N, answer (+ id): OpenCompass reads option columns from the first row."""
    width = max(len(s.choices) for s in ds.samples if isinstance(s, McqSample))
    rows = []
    for s in ds.samples:
        assert isinstance(s, McqSample)
        row: dict[str, Any] = {"id": s.id, "question": s.question}
        for i in range(width):
            row[chr(ord("A") + i)] = s.choices[i] if i < len(s.choices) else ""
        row["answer"] = s.answer
        rows.append(row)
    return rows


def qa_rows(ds: Dataset) -> list[dict[str, Any]]:
    """question, system, answer (a list: every acceptable answer) (+ id)."""
    rows = []
    for s in ds.samples:
        assert isinstance(s, QaSample)
        rows.append({"id": s.id, "system": s.system or "", "question": s.prompt_text(), "answer": list(s.answers)})
    return rows


ROW_WRITERS: dict[str, Callable[[Dataset], list[dict[str, Any]]]] = {"mcq": mcq_rows, "qa": qa_rows}


class Code:
    """Python source inside a pretty-printed config value (pprint shows its repr as is)."""

    def __init__(self, source: str) -> None:
        self.source = source

    def __repr__(self) -> str:
        return self.source


def _test_range(max_samples: int | None) -> dict[str, str]:
    return {"test_range": f"[0:{max_samples}]"} if max_samples else {}


def mcq_dataset(ds: Dataset, path: Code, max_samples: int | None) -> dict[str, Any]:
    """A custom dataset OpenCompass expands itself (question/A../answer columns -> mcq gen config)."""
    return {"abbr": ds.name, "path": path, "data_type": "mcq", "infer_method": "gen", **_test_range(max_samples)}


def qa_dataset(ds: Dataset, path: Code, max_samples: int | None) -> dict[str, Any]:
    """The dict `make_qa_gen_config` would build, plus a system turn and EMEvaluator over answer lists."""
    has_system = any(isinstance(s, QaSample) and s.system for s in ds.samples)
    template: dict[str, Any] = {}
    if has_system:
        template["begin"] = [{"role": "SYSTEM", "fallback_role": "HUMAN", "prompt": "{system}"}]
    template["round"] = [{"role": "HUMAN", "prompt": "{question}"}, {"role": "BOT", "prompt": "{answer}"}]
    return {
        "abbr": ds.name,
        "type": "opencompass.datasets.CustomDataset",
        "path": path,
        "reader_cfg": {
            "input_columns": ["id", "system", "question"],
            "output_column": "answer",
            **_test_range(max_samples),
        },
        "infer_cfg": {
            "prompt_template": {"type": "opencompass.openicl.icl_prompt_template.PromptTemplate", "template": template},
            "retriever": {"type": "opencompass.openicl.icl_retriever.ZeroRetriever"},
            "inferencer": {"type": "opencompass.openicl.icl_inferencer.GenInferencer"},
        },
        "eval_cfg": {"evaluator": {"type": "opencompass.openicl.icl_evaluator.EMEvaluator"}, "pred_role": "BOT"},
    }


def parity_dataset(ds: Dataset, path: Code, max_samples: int | None, n_shots: int) -> dict[str, Any]:
    """prompt_mode parity: the canonical conversation (`bridges.frameworks.parity`) as the template: the
    dataset's system turn, few-shot HUMAN/BOT turns from the row's q<i>/a<i> columns, the question. Scoring
    stays OpenCompass's own: mcq as its custom mcq datasets (OptionSimAccEvaluator), qa by EMEvaluator."""
    template: dict[str, Any] = {}
    if any(isinstance(s, QaSample) and s.system for s in ds.samples):
        template["begin"] = [{"role": "SYSTEM", "fallback_role": "HUMAN", "prompt": "{system}"}]
    turns: list[dict[str, str]] = []
    for i in range(n_shots):
        turns += [{"role": "HUMAN", "prompt": f"{{q{i}}}"}, {"role": "BOT", "prompt": f"{{a{i}}}"}]
    template["round"] = [*turns, {"role": "HUMAN", "prompt": "{question}"}, {"role": "BOT", "prompt": "{answer}"}]
    columns = ["id", "system", *(f"{c}{i}" for i in range(n_shots) for c in "qa"), "question"]
    if ds.kind == "mcq":
        width = max(len(s.choices) for s in ds.samples if isinstance(s, McqSample))
        letters = [chr(ord("A") + i) for i in range(width)]
        evaluator = {"type": "opencompass.datasets.custom.OptionSimAccEvaluator", "options": letters}
        columns += letters
    else:
        evaluator = {"type": "opencompass.openicl.icl_evaluator.EMEvaluator"}
    return {
        "abbr": ds.name,
        "type": "opencompass.datasets.CustomDataset",
        "path": path,
        "reader_cfg": {"input_columns": columns, "output_column": "answer", **_test_range(max_samples)},
        "infer_cfg": {
            "prompt_template": {"type": "opencompass.openicl.icl_prompt_template.PromptTemplate", "template": template},
            "retriever": {"type": "opencompass.openicl.icl_retriever.ZeroRetriever"},
            "inferencer": {"type": "opencompass.openicl.icl_inferencer.GenInferencer"},
        },
        "eval_cfg": {"evaluator": evaluator, "pred_role": "BOT"},
    }


DATASET_CONFIGS: dict[str, Callable[[Dataset, Code, int | None], dict[str, Any]]] = {
    "mcq": mcq_dataset,
    "qa": qa_dataset,
}


class TypeImports:
    """Turns ``'package.module.Class'`` type strings into imported class names, as OpenCompass's own
    configs read. Importing a non-stdlib module also makes mmengine parse the file as a "pure python"
    (lazy) config, where ``__file__`` is defined: the data paths follow the folder wherever it goes."""

    def __init__(self) -> None:
        self.modules: dict[str, set[str]] = {}
        self.owner: dict[str, str] = {}

    def name(self, dotted: str) -> Code | str:
        module, _, cls = dotted.rpartition(".")
        if self.owner.setdefault(cls, module) != module:
            return dotted  # two classes of one name: the registry resolves the dotted string too
        self.modules.setdefault(module, set()).add(cls)
        return Code(cls)

    def convert(self, value: Any) -> Any:
        if isinstance(value, dict):
            return {
                k: self.name(v) if k == "type" and isinstance(v, str) and "." in v else self.convert(v)
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [self.convert(v) for v in value]
        return value

    def lines(self) -> list[str]:
        return [f"from {module} import {', '.join(sorted(names))}" for module, names in sorted(self.modules.items())]


def _py(value: Any) -> str:
    return pprint.pformat(value, width=110, sort_dicts=False)


# ---------------------------------------------------------------------------------------------------
# Model specs -> OpenCompass model dicts, keyed by model kind


def _max_out_len(spec: ModelSpec, options: OpenCompassOptions) -> int:
    return options.max_out_len or spec.generation.max_new_tokens


def _generation_kwargs(spec: ModelSpec) -> dict[str, Any]:
    gen = spec.generation
    if gen.temperature > 0:
        out: dict[str, Any] = {"do_sample": True, "temperature": gen.temperature}
        if gen.top_p is not None:
            out["top_p"] = gen.top_p
        return out
    return {}


def hf_model(spec: ModelSpec, options: OpenCompassOptions) -> dict[str, Any]:
    assert isinstance(spec, HFSpec)
    model_type = "HuggingFacewithChatTemplate" if spec.chat else "HuggingFaceBaseModel"
    cfg: dict[str, Any] = {
        "type": f"opencompass.models.{model_type}",
        "abbr": spec.name,
        "path": spec.path,
        "tokenizer_path": spec.tokenizer_path or spec.path,
        "tokenizer_kwargs": dict(spec.tokenizer_kwargs),
        "model_kwargs": dict(spec.model_kwargs),
        "generation_kwargs": _generation_kwargs(spec),
        "max_seq_len": spec.max_seq_len,
        "max_out_len": _max_out_len(spec, options),
        "batch_size": spec.batch_size,
        "stop_words": list(spec.generation.stop),
        "run_cfg": {"num_gpus": options.num_gpus},
    }
    if spec.peft_path:
        cfg["peft_path"] = spec.peft_path
    if spec.chat and spec.system_prompt:
        # OpenCompass's default chat meta template, plus the spec's system prompt as a real system turn.
        cfg["meta_template"] = {
            "round": [
                {"role": "HUMAN", "api_role": "HUMAN"},
                {"role": "SYSTEM", "api_role": "HUMAN"},
                {"role": "BOT", "api_role": "BOT", "generate": True},
            ],
            "begin": {"role": "SYSTEM", "api_role": "SYSTEM", "prompt": spec.system_prompt},
        }
    return cfg


def _chat_meta_template(system_prompt: str | None) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "round": [{"role": "HUMAN", "api_role": "HUMAN"}, {"role": "BOT", "api_role": "BOT", "generate": True}],
        "reserved_roles": [{"role": "SYSTEM", "api_role": "SYSTEM"}],
    }
    if system_prompt:
        meta["begin"] = {"role": "SYSTEM", "api_role": "SYSTEM", "prompt": system_prompt}
    return meta


def openai_model(spec: ModelSpec, options: OpenCompassOptions) -> dict[str, Any]:
    assert isinstance(spec, OpenAISpec)
    rpm = spec.limits.requests_per_minute
    cfg: dict[str, Any] = {
        "type": "opencompass.models.OpenAISDK",
        "abbr": spec.name,
        "path": spec.model,
        "key": "ENV",  # OpenCompass reads OPENAI_API_KEY; the value never enters this file
        "openai_api_base": spec.base_url,
        "meta_template": _chat_meta_template(spec.system_prompt),
        "query_per_second": max(1, round(rpm / 60)) if rpm else spec.limits.max_concurrency,
        "retry": spec.limits.max_retries,
        "temperature": spec.generation.temperature,
        "max_seq_len": 16384,
        "max_out_len": _max_out_len(spec, options),
        "batch_size": spec.batch_size,
        "run_cfg": {"num_gpus": 0},
    }
    if spec.tokenizer_path:
        cfg["tokenizer_path"] = spec.tokenizer_path
    return cfg


def served_view(spec: OpenAISpec, base_url: str) -> OpenAISpec:
    """The spec as OpenAISDK sees it during `run`: the served endpoint and name, and no rate limit of its
    own (the layer behind the endpoint paces the upstream; a warm cache needs no pacing)."""
    limits = spec.limits.model_copy(update={"requests_per_minute": None})
    # The served layer merges the system prompt: a meta template `begin` would add it a second time.
    update = {"base_url": base_url, "model": spec.name, "limits": limits, "system_prompt": None}
    return spec.model_copy(update=update)


def layer_model(spec: ModelSpec, options: OpenCompassOptions) -> dict[str, Any]:
    """Any kind without a native OpenCompass class goes through benchbridge's model layer."""
    return {
        "type": "bridges.frameworks.opencompass.model.BenchbridgeModel",
        "abbr": spec.name,
        "spec": spec.public_dict(),
        "max_out_len": _max_out_len(spec, options),
        "batch_size": spec.batch_size,
        "run_cfg": {"num_gpus": 0},
    }


MODEL_CONFIGS: dict[str, Callable[[ModelSpec, OpenCompassOptions], dict[str, Any]]] = {
    "hf": hf_model,
    "openai": openai_model,
}


def model_config(spec: ModelSpec, options: OpenCompassOptions) -> dict[str, Any]:
    return MODEL_CONFIGS.get(spec.kind, layer_model)(spec, options)


LOCAL_PATH_FIELDS = ("path", "tokenizer_path", "peft_path")


def localized(spec: ModelSpec, key: str) -> ModelSpec:
    """The spec with its local paths checked and made absolute: OpenCompass runs in the output folder.

    A path that starts with `/`, `.` or `~` is local (relative ones are relative to the working
    directory, as for the model layer); anything else (``org/name``) is a hub id left as is.
    """
    from bridges.models import check_local_path

    updates = {}
    for field in LOCAL_PATH_FIELDS:
        value = getattr(spec, field, None)
        if not isinstance(value, str) or (field == "path" and spec.kind != "hf"):
            continue
        check_local_path(value, f"{key}.{field}")
        if value.startswith((".", "/", "~")):
            updates[field] = str(Path(value).expanduser().resolve())
    return spec.model_copy(update=updates) if updates else spec


# ---------------------------------------------------------------------------------------------------


class OpenCompassBridge(Bridge):
    name = "opencompass"
    distribution = "opencompass"
    kinds = frozenset(KINDS)
    Options = OpenCompassOptions

    def __init__(self, ctx: RunContext) -> None:
        super().__init__(ctx)
        options = self.options
        assert isinstance(options, OpenCompassOptions)
        self.opts = options
        where = f"{self.config.path}: frameworks.opencompass"
        self.datasets = self.config.datasets_for(self.name, KINDS)
        self.builtins = [
            _Builtin(b, f"{where}.builtin_datasets[{i}]", self.config.resolve)
            for i, b in enumerate(options.builtin_datasets)
        ]
        self.user_configs = check_configs(self.config, options.configs)
        if not self.datasets and not self.builtins and not self.user_configs:
            raise BenchbridgeError(f"{where}: no mcq/qa datasets and no builtin_datasets to run")
        abbrs = [d.name for d in self.datasets] + [a for b in self.builtins for a in b.abbrs]
        dupes = sorted({a for a in abbrs if abbrs.count(a) > 1})
        if dupes:
            raise BenchbridgeError(f"{where}: dataset abbr(s) used twice: {', '.join(dupes)}")
        self.models = [localized(spec, f"{self.config.path}: models[{i}]") for i, spec in enumerate(self.config.models)]
        for i, spec in enumerate(self.models):
            native = self.config.prompt_mode(self.name) == "native"  # parity asks the model layer, no tokenizer
            if isinstance(spec, OpenAISpec) and not spec.tokenizer_path and native:
                # Without it OpenAISDK downloads a tiktoken file to count tokens: offline, a bare ConnectionError.
                raise BenchbridgeError(
                    f"{self.config.path}: models[{i}].tokenizer_path: required for openai model {spec.name} in "
                    "OpenCompass (OpenAISDK counts tokens with it; without it, it downloads a tiktoken file); set it "
                    "to a local Hugging Face tokenizer folder, or leave opencompass out for this model"
                )
        key_envs = {s.api_key_env for s in self.models if isinstance(s, OpenAISpec)}
        if len(key_envs) > 1:
            raise BenchbridgeError(
                f"{self.config.path}: models: OpenCompass reads one OPENAI_API_KEY, but the openai models use "
                f"{', '.join(sorted(key_envs))}; run them in separate configs"
            )
        if options.runner == "slurm" and "partition" not in options.runner_options:
            raise BenchbridgeError(f"{where}.runner_options.partition: required by the slurm runner")
        if options.runner == "dlc" and "aliyun_cfg" not in options.runner_options:
            raise BenchbridgeError(f"{where}.runner_options.aliyun_cfg: required by the dlc runner")
        self.config_file = f"eval_{self.config.name}.py"
        # Parity is for canonical datasets: a config of built-in datasets only keeps OpenCompass's own model classes.
        self.parity = self.config.prompt_mode(self.name) == "parity" and bool(self.datasets)
        self.shots = {ds.name: same_shot_count(ds) for ds in self.datasets} if self.parity else {}

    # -- prepare ------------------------------------------------------------------------------------

    @property
    def in_process(self) -> bool:
        o = self.opts
        if o.runner != "local" or o.execution == "subprocess":
            return False
        return o.execution == "in_process" or o.max_num_workers == 1

    def runner_config(self) -> dict[str, Any]:
        o = self.opts
        runner_type = CONTAINED_RUNNER if self.in_process else RUNNER_TYPES[o.runner]
        return {"type": runner_type, "max_num_workers": o.max_num_workers, **o.runner_options}

    def prepare(self, out_dir: Path) -> list[Path]:
        out_dir.mkdir(parents=True, exist_ok=True)
        data_dir = out_dir / DATA_DIR
        if self.datasets:
            data_dir.mkdir(exist_ok=True)
        written: list[Path] = []
        max_samples = self.config.cfg.max_samples
        dataset_entries: list[Any] = []
        manifest_datasets = []
        for ds in self.datasets:
            if self.parity:
                n = self.shots[ds.name]
                rows = [parity_row(ds, s, n) for s in ds.samples if isinstance(s, McqSample | QaSample)]
                if ds.kind == "mcq":  # every row has every option column (fewer choices: empty)
                    width = max(len(s.choices) for s in ds.samples if isinstance(s, McqSample))
                    rows = [{chr(ord("A") + i): "" for i in range(width)} | row for row in rows]
            else:
                rows = ROW_WRITERS[ds.kind](ds)
            path = data_dir / f"{ds.name}.jsonl"
            with path.open("w", encoding="utf-8") as fh:
                for row in rows:
                    fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            written.append(path)
            expr = Code(f"osp.join(_here, {DATA_DIR!r}, {path.name!r})")
            if self.parity:
                dataset_entries.append(parity_dataset(ds, expr, max_samples, self.shots[ds.name]))
            else:
                dataset_entries.append(DATASET_CONFIGS[ds.kind](ds, expr, max_samples))
            manifest_datasets.append(
                {"abbr": ds.name, "benchmark": ds.name, "subset": "", "metric": KIND_METRIC[ds.kind]}
            )
        imports, builtin_code, groups = [], [], []
        for i, b in enumerate(self.builtins):
            var = f"_builtin{i}"
            names = ", ".join(f"{v} as {var}_{v}" for v in b.variables)
            imports.append(f"    from {b.module} import {names}  # {b.path}")
            keep = b.entry.subjects
            lines = [f"{var} = [d for d in {' + '.join(f'{var}_{v}' for v in b.variables)}"]
            lines[0] += f"\n{' ' * 12}if d.get('name') in {keep!r} or d['abbr'] in {keep!r}]" if keep else "]"
            lines.append(f"for _d in {var}:")
            lines.append(f"    _d['path'] = {str(b.data_dir)!r}  # {b.key}.data_dir")
            if b.entry.shots == 0:
                lines.append(
                    "    _d['infer_cfg']['retriever'] = dict(type='opencompass.openicl.icl_retriever.ZeroRetriever')"
                )
            elif b.entry.shots:
                lines.append(f"    _d['infer_cfg']['retriever']['fix_id_list'] = {list(range(b.entry.shots))!r}")
            if max_samples:
                lines.append(f"    _d['reader_cfg']['test_range'] = '[0:{max_samples}]'")
            lines.append("del _d")
            builtin_code.append("\n".join(lines))
            dataset_entries.append(Code(f"*{var}"))
            for abbr in b.abbrs:
                manifest_datasets.append(
                    {"abbr": abbr, "benchmark": b.benchmark, "subset": b.subset(abbr), "metric": "accuracy"}
                )
            if len(b.abbrs) > 1:
                groups.append({"name": b.benchmark, "subsets": b.abbrs})
        # Parity: every model through the model layer, which merges its system prompt and applies one chat template.
        models = [(layer_model if self.parity else model_config)(spec, self.opts) for spec in self.models]
        if self.user_configs:  # the team's configs: their datasets (and models with config_models: add)
            code, user_datasets, user_models = config_code(self.user_configs, self.opts.config_models == "add")
            builtin_code.append("\n".join(code))
            dataset_entries += [Code(d) for d in user_datasets]
            models += [Code(m) for m in user_models]  # type: ignore[misc]
        runner = self.runner_config()
        text = self._config_text(imports, builtin_code, dataset_entries, models, runner, groups)
        cfg_path = out_dir / self.config_file
        cfg_path.write_text(text, encoding="utf-8")
        manifest = {
            "config": self.config_file,
            "config_hash": self.ctx.config_hash,
            "models": [s.name for s in self.models],
            "datasets": manifest_datasets,
            "groups": groups,
        }
        man_path = out_dir / MANIFEST
        man_path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return [cfg_path, *written, man_path]

    def _config_text(
        self,
        imports: list[str],
        builtin_code: list[str],
        dataset_entries: list[Any],
        models: list[dict[str, Any]],
        runner: dict[str, Any],
        groups: list[dict[str, Any]],
    ) -> str:
        types = TypeImports()
        infer = {
            "partitioner": {
                "type": "opencompass.partitioners.NumWorkerPartitioner",
                "num_worker": self.opts.max_num_workers,
            },
            "runner": {**runner, "task": {"type": "opencompass.tasks.OpenICLInferTask"}},
        }
        evaluation = {
            "partitioner": {"type": "opencompass.partitioners.NaivePartitioner"},
            "runner": {**runner, "task": {"type": "opencompass.tasks.OpenICLEvalTask"}},
        }
        body = [*builtin_code, ""] if builtin_code else []
        body.append(f"datasets = {_py(types.convert(dataset_entries))}\n")
        body.append(f"models = {_py(types.convert(models))}\n")
        body.append(f"infer = {_py(types.convert(infer))}\n")
        body.append(f"eval = {_py(types.convert(evaluation))}\n")
        body.append(f"summarizer = {_py({'summary_groups': groups})}\n")
        keys = sorted({s.api_key_env for s in self.models if isinstance(s, OpenAISpec)})
        key_note = f"\n# openai models read OPENAI_API_KEY (export it from ${keys[0]})." if keys else ""
        head = [
            f"# OpenCompass config written by benchbridge from {self.config.path}",
            f"# (config hash {self.ctx.config_hash}). Run it by hand with the same venv:",
            f"#   opencompass {self.config_file}        # outputs go to {WORK_DIR}/ next to this file{key_note}",
            "import os.path as osp",
            "",
            "from mmengine.config import read_base",
            *types.lines(),
            "",
        ]
        if imports:
            head += ["with read_base():", *imports, ""]
        head += ["_here = osp.dirname(osp.abspath(__file__))", f"work_dir = osp.join(_here, {WORK_DIR!r})", ""]
        return "\n".join(head + body)

    # -- run ----------------------------------------------------------------------------------------

    def _environment(self) -> dict[str, str]:
        env = child_env()
        for spec in self.models:
            if isinstance(spec, OpenAISpec):
                from bridges._config import config_environment

                value = config_environment().get(spec.api_key_env)
                if not value:
                    raise BenchbridgeError(
                        f"{self.config.path}: models: {spec.name}: environment variable {spec.api_key_env} is not set "
                        "(export it or put it in .env)"
                    )
                env["OPENAI_API_KEY"] = SERVED_API_KEY  # the served endpoint's; the layer reads the real one
        env.update(referenced_env(self.models))  # python args' ${VAR}: through the environment, never the config
        return env

    @contextmanager
    def _served_openai_models(self) -> Iterator[None]:
        """While open, `openai` models are written to ask a loopback endpoint serving their specs.

        Only for OpenAISDK (native mode): in parity the config carries the spec itself for `BenchbridgeModel`,
        whose `model_for` finds the run's served model by the spec's digest; a rewritten spec (this endpoint,
        model = name) matched no served digest, so the child asked the endpoint itself without its key (401).
        """
        specs = [] if self.parity else [s for s in self.models if isinstance(s, OpenAISpec)]
        if not specs:
            yield
            return
        from bridges.serve import serving

        upstream_models = self.models
        try:
            with serving(specs, api_key=SERVED_API_KEY) as url:
                self.models = [served_view(s, url) if isinstance(s, OpenAISpec) else s for s in self.models]
                yield
        finally:
            self.models = upstream_models

    def validate(self) -> None:
        exe = Path(sys.executable).parent / "opencompass"
        if not exe.exists():
            raise BenchbridgeError(f"{exe}: opencompass CLI not found in this venv (scripts/setup.sh installs it)")
        self._environment()  # an openai model's key not set: found before anything is written

    def during_run(self) -> contextlib.AbstractContextManager[None]:
        return self._served_openai_models()

    def execute(self, out_dir: Path) -> None:
        """Runs the prepared config with the `opencompass` CLI (which exits 0 even when tasks fail:
        `collect` reads those failures from its reports)."""
        cmd = [str(Path(sys.executable).parent / "opencompass"), self.config_file]
        log_path = out_dir / LOG_FILE
        self.ctx.progress(f"[opencompass] {' '.join(cmd)} (cwd {out_dir}, log {log_path})")
        started = time.monotonic()

        def on_line(line: str) -> None:
            message = _progress_line(line)
            if message:
                self.ctx.progress(f"[opencompass] {message} ({time.monotonic() - started:.0f}s)")

        result = run_child(
            cmd, log=log_path, env=self._environment(), cwd=out_dir, on_line=on_line, timeout=self.opts.timeout_s
        )
        if not result.ok:
            what = f"did not finish within timeout_s={self.opts.timeout_s:g}" if result.timed_out else (
                f"exited with code {result.returncode}"
            )
            raise FrameworkFailure(f"opencompass {what} (log: {log_path})", result.excerpt(self.secret_names()))

    # -- collect ------------------------------------------------------------------------------------

    def collect(self, out_dir: Path) -> list[Record]:
        manifest_path = out_dir / MANIFEST
        if not manifest_path.is_file():
            raise BenchbridgeError(f"{manifest_path}: not found (collect reads a folder `prepare`/`run` wrote)")
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        work = latest_work_dir(out_dir / WORK_DIR)
        summary = read_summary(work)
        records: list[Record] = []
        for model in manifest["models"]:
            by_abbr = {ds["abbr"]: self._dataset_records(work, summary, model, ds) for ds in manifest["datasets"]}
            for recs in by_abbr.values():
                records += recs
            for group in manifest["groups"]:
                subsets = [r for abbr in group["subsets"] for r in by_abbr.get(abbr, []) if r.primary]
                records += self._group_records(summary, model, group, subsets)
        if self.user_configs:  # the team's datasets: every summary row that is not one of ours
            ours = {ds["abbr"] for ds in manifest["datasets"]} | {g["name"] for g in manifest["groups"]}
            records += user_records(self, work, ours)[0]
        return records

    def collect_samples(self, out_dir: Path) -> list[Sample]:
        """Each model's per-sample rows of each scored dataset, from OpenCompass's predictions and
        results, scored by the metric its record shows (the summary's first metric)."""
        manifest = json.loads((out_dir / MANIFEST).read_text(encoding="utf-8"))
        work = latest_work_dir(out_dir / WORK_DIR)
        summary = read_summary(work)
        samples: list[Sample] = []
        # Models OpenCompass calls through our layer (not its own HF/OpenAI classes) get its system prompt there.
        # An openai model is served through the layer during a run (served_view), so its layer adds it too.
        layered = {
            s.name: s.system_prompt
            for s in self.models
            if self.parity or s.kind not in MODEL_CONFIGS or isinstance(s, OpenAISpec)
        }
        ids = {ds.name: [s.id for s in ds.samples] for ds in self.datasets}
        for model in manifest["models"]:
            for ds in manifest["datasets"]:
                cells = summary.get(ds["abbr"], {})
                metrics = [m for m, row in cells.items() if m != "-" and row.get(model, "-") not in ("-", "")]
                if metrics:  # a failed dataset has no samples; its failed record says why
                    metric = METRIC_NAMES.get(metrics[0], metrics[0])
                    samples += dataset_samples(
                        work,
                        out_dir / DATA_DIR,
                        model,
                        ds,
                        metric,
                        self.ctx.run_id,
                        layer_system_prompt=layered.get(model),
                        dataset_ids=ids.get(ds["abbr"]),
                    )
        if self.user_configs:  # the team's datasets' rows
            ours = {ds["abbr"] for ds in manifest["datasets"]} | {g["name"] for g in manifest["groups"]}
            samples += user_records(self, work, ours)[1]
        return samples

    def _dataset_records(
        self, work: Path, summary: dict[str, dict[str, dict[str, str]]], model: str, ds: dict[str, Any]
    ) -> list[Record]:
        abbr = ds["abbr"]
        where = {"model": model, "benchmark": ds["benchmark"], "subset": ds["subset"]}
        results_path = work / "results" / model / f"{abbr}.json"
        cells = {metric: row.get(model, "-") for metric, row in summary.get(abbr, {}).items()}
        values = {m: v for m, v in cells.items() if m != "-" and v not in ("-", "")}
        result: dict[str, Any] = {}
        if results_path.is_file():
            result = json.loads(results_path.read_text(encoding="utf-8"))
        if not values or "error" in result:
            cause, excerpt = task_failure(work, model, abbr)
            if "error" in result:
                cause = f"OpenCompass evaluation error: {result['error']}"
            return [
                self.record(
                    **where,
                    metric=ds.get("metric", "accuracy"),
                    status="failed",
                    error=clip_error(f"{cause}\n{excerpt}".strip()),
                    primary=True,
                    scale=100,
                    details_path=str(results_path) if results_path.is_file() else None,
                )
            ]
        n = _n_samples(result.get("details"))
        out = []
        for i, (metric, cell) in enumerate(values.items()):
            out.append(
                self.record(
                    **where,
                    metric=METRIC_NAMES.get(metric, metric),
                    value=float(cell),
                    scale=100,
                    primary=i == 0,
                    n_samples=n,
                    details_path=str(results_path),
                    extra={"opencompass_metric": metric, "opencompass_abbr": abbr, "results_value": result.get(metric)},
                )
            )
        return out

    def _group_records(
        self, summary: dict[str, dict[str, dict[str, str]]], model: str, group: dict[str, Any], subsets: list[Record]
    ) -> list[Record]:
        """OpenCompass's own average over the selected subsets (its summary group row)."""
        cell = summary.get(group["name"], {}).get("naive_average", {}).get(model)
        if cell in (None, "-", "") or any(r.status != "ok" for r in subsets):
            return []  # each failed subset is reported; an average over the rest would mislead
        counts = [r.n_samples for r in subsets]
        return [
            self.record(
                model=model,
                benchmark=group["name"],
                subset="",
                metric="accuracy",
                value=float(cell),
                scale=100,
                primary=True,
                n_samples=None if None in counts else sum(c for c in counts if c is not None),
                extra={"opencompass_metric": "naive_average", "subsets": group["subsets"]},
            )
        ]


_DATASET_START = re.compile(r"Start inferencing \[([^\]]*)\]")
_TASK_LINE = re.compile(r"(launch|task) OpenICL(Infer|Eval)\[([^\]]*)\](.*)")


def _progress_line(line: str) -> str | None:
    """OpenCompass output -> a progress message, for the lines worth showing (no square brackets:
    progress is printed by consoles that read them as markup)."""
    text = line.strip()
    if "Current exp folder:" in text:
        return "imports done, outputs in " + text.split("Current exp folder:", 1)[1].strip()
    if "write csv to" in text:
        return "summary written: " + text.split("write csv to", 1)[1].strip()
    dataset = _DATASET_START.search(text)
    if dataset:
        return f"infer {dataset.group(1).replace('/', ': ', 1)}: generating"
    m = _TASK_LINE.search(text)
    if not m:
        return None
    verb, stage, names, rest = m.groups()
    by_model: dict[str, list[str]] = {}
    for name in names.split(","):
        model, _, task_dataset = name.partition("/")
        by_model.setdefault(model, []).append(task_dataset)
    what = f"{stage.lower()} " + "; ".join(f"{m}: {', '.join(ds)}" for m, ds in by_model.items())
    if verb == "launch":
        return f"{what} started"
    if "(exit 0)" in rest:
        return f"{what} done{rest.split('(exit 0)')[0].replace(' finished', '').rstrip()}"
    if "fail" in rest:
        return f"{what} FAILED (see its log under logs/{stage.lower()}/)"
    return None


def latest_work_dir(root: Path) -> Path:
    runs = sorted(p for p in root.glob("*") if p.is_dir() and re.fullmatch(r"\d{8}_\d{6}", p.name))
    if not runs:
        raise FrameworkFailure(f"{root}: no OpenCompass output folder (<YYYYMMDD_HHMMSS>/) found")
    return runs[-1]


def read_summary(work: Path) -> dict[str, dict[str, dict[str, str]]]:
    """summary_*.csv -> {dataset abbr: {metric: {model abbr: cell}}}."""
    files = sorted((work / "summary").glob("summary_*.csv"))
    if not files:
        raise FrameworkFailure(f"{work / 'summary'}: no summary_*.csv (OpenCompass did not finish)")
    out: dict[str, dict[str, dict[str, str]]] = {}
    with files[-1].open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            dataset, metric = row.pop("dataset"), row.pop("metric")
            row.pop("version", None)
            row.pop("mode", None)
            out.setdefault(dataset, {})[metric] = row
    return out


def _n_samples(details: Any) -> int | None:
    """OpenCompass writes details as a list, or as a dict of numbered entries (plus a 'type' key)."""
    if isinstance(details, list):
        return len(details)
    if isinstance(details, dict):
        return sum(1 for k in details if str(k).isdigit())
    return None


def _mentions(text: str, model: str, abbr: str) -> bool:
    return re.search(rf"{re.escape(model)}/{re.escape(abbr)}(?=[,\]\s])", text) is not None


def task_failure(work: Path, model: str, abbr: str, lines: int = 25) -> tuple[str, str]:
    """(one-line cause, traceback excerpt) of the task that should have scored (model, abbr).

    Looks at the inference log first (a failed inference is the root cause of the failed
    evaluation that follows), in OpenCompass's task logs: logs/{infer,eval}/<model>/<dataset>.out,
    where a task over several datasets is logged under its first dataset's name.
    """
    logs = work / "logs"
    infer_dir = logs / "infer" / model
    candidates = [infer_dir / f"{abbr}.out"]
    candidates += [p for p in sorted(infer_dir.glob("*.out")) if p not in candidates]
    candidates.append(logs / "eval" / model / f"{abbr}.out")
    for path in candidates:
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        if path.stem != abbr and not _mentions(text, model, abbr):
            continue  # another task's log
        start = text.rfind("Traceback (most recent call last)")
        if start < 0:
            continue
        excerpt = text[start:].strip().splitlines()
        cause = next((ln for ln in excerpt[1:] if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Exit)\b", ln)), "")
        cause = cause or excerpt[-1]
        stage = path.parent.parent.name
        if len(excerpt) > lines:
            excerpt = excerpt[: lines // 2] + ["..."] + excerpt[-lines // 2 :]
        return f"{stage} task failed: {cause} (log: {path})", "\n".join(excerpt)
    return f"no score and no task traceback under {logs}", ""

"""lm-evaluation-harness bridge: our datasets as lm-eval tasks, run through its Python API.

Layout of a prepared / run folder (`<out>/lm_eval/`):

- ``tasks/``: an lm-eval include folder (``lm_eval --include_path tasks``). Shared settings live in
  ``_bb_*_yaml`` templates (no ``.yaml`` suffix, so lm-eval indexes only real tasks), one folder per
  dataset with its task/group YAML and its data as JSONL (absolute paths in
  ``dataset_kwargs.data_files``), and a README with the exact commands.
  - ``mcq`` -> ``bb_<dataset>`` (``multiple_choice``: acc, acc_norm) and ``bb_<dataset>_gen``
    (``generate_until``: the same prompt, the answer letter extracted from the generation,
    ``exact_match,letter``) for models that only generate text (``python`` models, chat APIs).
  - ``qa`` -> ``bb_<dataset>`` (``generate_until``; every acceptable answer is a target, lm-eval
    scores a match against any of them; ``exact_match,strip``: whitespace stripped, case and
    punctuation, ASCII and CJK, ignored).
  - A dataset with several subjects is a group (aggregated acc, weighted by size) with one task
    per subject; the ``bb_`` prefix keeps our names apart from lm-eval's built-in tasks.
- ``jobs/<model>.json``: what ``benchbridge run`` runs for each model
  (``python -m bridges.frameworks.lm_eval.worker jobs/<model>.json`` reproduces it).
- ``results/<model>/``: lm-eval's own ``results_<date>.json`` and ``samples_<task>_<date>.jsonl``,
  the process log, and ``skipped.json`` (tasks the model could not run, with the reason).

``openai`` models run as lm-eval's own ``local-chat-completions`` / ``local-completions``. Prepared
jobs point at the model's upstream (``OPENAI_API_KEY=$<api_key_env>`` by hand); during
``benchbridge run`` they point at a loopback endpoint benchbridge serves for the model
(`bridges.serve.serving`, a random per-run key), so every call goes through the model layer (response cache,
rate limits, retries) before the upstream. The exception is a ``completions_models`` entry with a
``tokenizer_path``: it scores loglikelihoods (echoed prompt logprobs), which the layer cannot ask,
so it calls the upstream directly.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shlex
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from bridges._errors import BenchbridgeError
from bridges.datasets import Dataset, McqSample, QaSample
from bridges.frameworks import Bridge, RunContext
from bridges.frameworks.lm_eval.byo import check_task_folders, task_names
from bridges.frameworks.lm_eval.samples import read_samples, record_metric
from bridges.frameworks.processes import child_env, excerpt, log_excerpt, run_child
from bridges.models import HFSpec, ModelSpec, OpenAISpec
from bridges.records import Record, Sample, clip_error
from bridges.secrets import dotenv_values, referenced_env

PREFIX = "bb_"
TASKS_DIR = "tasks"
JOBS_DIR = "jobs"
RESULTS_DIR = "results"
LOG_FILE = "lm_eval.log"
STATUS_FILE = "status.json"
KINDS = {"mcq", "qa"}
PYTHON_LM = "benchbridge-python"  # registered by bridges.frameworks.lm_eval.worker
# The key of the loopback endpoint a run serves `openai` models on: random per process (per run), so another
# local user cannot ask the model, and its upstream on the operator's key, through it. The layer reads the real key.
SERVED_API_KEY = secrets.token_urlsafe(24)

# The primary lm-eval result key ("metric,filter") per task variant.
PRIMARY = {"loglikelihood": "acc,none", "generate_mcq": "exact_match,letter", "qa": "exact_match,strip"}

# The native task templates (lm-eval's `_*_template_yaml` convention: data, not tasks), copied into the
# include folder; each task YAML `include:`s one of them.
TEMPLATES_DIR = Path(__file__).parent / "templates"
TEMPLATES = sorted(p.name for p in TEMPLATES_DIR.glob("_bb_*_template_yaml"))
# The letters prompt of the log-likelihood mcq variant is the generation variant's, defined in its template.
MCQ_LETTERS_PROMPT: str = yaml.safe_load((TEMPLATES_DIR / "_bb_mcq_gen_template_yaml").read_text("utf-8"))[
    "doc_to_text"
]
MCQ_FORMATS: dict[str, dict[str, Any]] = {
    # MMLU-style: options listed with letters, the letters scored (as lm-eval's own mmlu task).
    "letters": {"doc_to_text": MCQ_LETTERS_PROMPT, "doc_to_choice": "letters"},
    # ARC-style cloze: the option texts themselves scored, where acc_norm (length-normalised) differs.
    "cloze": {"doc_to_text": "Question: {{ question.strip() }}\nAnswer:", "doc_to_choice": "choices"},
}


class Options(BaseModel):
    """`frameworks.lm_eval` in a run config."""

    model_config = ConfigDict(extra="forbid")

    builtin_tasks: list[str] = Field(
        default_factory=list, description="lm-eval's own tasks/groups by name; their data must be cached locally"
    )
    mcq_format: Literal["letters", "cloze"] = "letters"
    num_fewshot: int | None = Field(
        None, ge=0, description="shots for datasets that ship few-shot examples (default: all of them, up to 5)"
    )
    completions_models: list[str] = Field(
        default_factory=list,
        description="openai models to run as local-completions (/v1/completions); others use chat completions",
    )
    device: str = "cpu"
    log_samples: bool = True
    # subprocess: one process per model (a crash or a big model's memory stays out of benchbridge; ~6 s of
    # imports each). It gets HF_HUB_OFFLINE/HF_DATASETS_OFFLINE=1 unless the environment sets them.
    isolation: Literal["subprocess", "in-process"] = "subprocess"
    timeout_s: float | None = Field(None, gt=0, description="per model, subprocess isolation only")
    # A team's own task folder, run as written (byo.py): --include_path folders and the task/group names.
    include_paths: list[str] = Field(default_factory=list, description="folders of your lm-eval task YAML")
    tasks: list[str] = Field(default_factory=list, description="tasks or groups of include_paths to run")


@dataclass(frozen=True)
class PlannedTask:
    """One lm-eval task or group made from one canonical dataset."""

    name: str
    dataset: str
    variant: Literal["loglikelihood", "generate_mcq", "qa"]
    members: tuple[tuple[str, str], ...] = ()  # (task name, subset) when `name` is a group

    @property
    def primary(self) -> str:
        return PRIMARY[self.variant]

    @property
    def needs_loglikelihood(self) -> bool:
        return self.variant == "loglikelihood"


@dataclass
class NativeModel:
    """A model spec as lm-eval takes it."""

    model: str
    model_args: dict[str, Any]
    can_score: bool  # computes loglikelihoods (multiple_choice)
    apply_chat_template: bool
    system_instruction: str | None = None
    env: dict[str, str] = field(default_factory=dict)  # child env var -> env var to read it from
    env_values: dict[str, str] = field(default_factory=dict)  # child env var -> value (never a secret)

    def cli_args(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.model_args.items())


def _hf(spec: HFSpec, options: Options) -> NativeModel:
    from bridges.models import check_local_path

    check_local_path(spec.path, f"model {spec.name}: path")
    args: dict[str, Any] = {
        "pretrained": spec.path,
        "tokenizer": spec.tokenizer_path or spec.path,
        "dtype": "float32",
        "max_length": spec.max_seq_len,
        **({"peft": spec.peft_path} if spec.peft_path else {}),
        **{k: v for k, v in spec.tokenizer_kwargs.items() if k == "trust_remote_code"},
        **spec.model_kwargs,  # passed on to from_pretrained by lm-eval
    }
    chat = spec.chat and _has_chat_template(Path(spec.tokenizer_path or spec.path).expanduser())
    return NativeModel("hf", args, can_score=True, apply_chat_template=chat, system_instruction=spec.system_prompt)


def _has_chat_template(folder: Path) -> bool:
    """As the model layer does: a chat model without a chat template gets plain prompts (lm-eval would fail)."""
    if not folder.is_dir():
        return True  # a cached hub id: lm-eval finds out
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        return True
    config = folder / "tokenizer_config.json"
    return config.is_file() and bool(json.loads(config.read_text(encoding="utf-8")).get("chat_template"))


def _openai(spec: OpenAISpec, options: Options) -> NativeModel:
    completions = spec.name in options.completions_models
    base = spec.base_url.rstrip("/")
    args: dict[str, Any] = {
        "model": spec.model,
        "base_url": f"{base}/completions" if completions else f"{base}/chat/completions",
        # Offline: never let lm-eval fetch a tokenizer; a local one enables loglikelihood scoring.
        "tokenizer_backend": "huggingface" if completions and spec.tokenizer_path else None,
        **({"tokenizer": spec.tokenizer_path} if completions and spec.tokenizer_path else {}),
        "tokenized_requests": False,
        "num_concurrent": spec.limits.max_concurrency,
        "max_retries": max(spec.limits.max_retries, 1),
        "timeout": int(spec.limits.timeout_s),
    }
    return NativeModel(
        "local-completions" if completions else "local-chat-completions",
        args,
        can_score=completions and spec.tokenizer_path is not None,
        apply_chat_template=not completions,
        system_instruction=spec.system_prompt,
        env={"OPENAI_API_KEY": spec.api_key_env},
    )


def _parity_model(spec: ModelSpec, options: Options) -> NativeModel:
    """prompt_mode parity: every kind through the model layer; an hf folder is still checked up front."""
    if isinstance(spec, HFSpec):
        from bridges.models import check_local_path

        check_local_path(spec.path, f"model {spec.name}: path")
    return _through_layer(spec, options)


def _through_layer(spec: ModelSpec, options: Options) -> NativeModel:
    # The model layer applies spec.system_prompt itself (before any system turn of the sample).
    return NativeModel(PYTHON_LM, {"spec": json.dumps(spec.public_dict())}, can_score=False, apply_chat_template=True)


# Model kind -> how lm-eval runs it. Kinds not listed (python, third-party) go through the model layer.
NATIVE_MODELS: dict[str, Callable[[Any, Options], NativeModel]] = {"hf": _hf, "openai": _openai}


def native_model(spec: ModelSpec, options: Options) -> NativeModel:
    return NATIVE_MODELS.get(spec.kind, _through_layer)(spec, options)


def _task_id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]+", "_", text).strip("_").lower()


def _subject_ids(subjects: list[str]) -> list[str]:
    """Task-name parts for subjects: ASCII, unique (a name with no ASCII, e.g. 计算机网络, gets its index)."""
    ids: list[str] = []
    for i, subject in enumerate(subjects):
        sid = _task_id(subject) or f"subject{i}"
        ids.append(sid if sid not in ids else f"{sid}_{i}")
    return ids


def _by_subject(ds: Dataset) -> dict[str, tuple[list[McqSample], list[McqSample]]]:
    """Scored and few-shot samples per subject, sorted ("" when the dataset has no subjects)."""
    default = "other" if ds.subjects() else ""
    groups: dict[str, tuple[list[McqSample], list[McqSample]]] = {}
    for s in ds.samples:
        if isinstance(s, McqSample):  # all of them: only mcq datasets are grouped by subject
            groups.setdefault(s.subject or default, ([], []))[0].append(s)
    for s in ds.fewshot:
        if isinstance(s, McqSample) and (s.subject or default) in groups:
            groups[s.subject or default][1].append(s)
    return dict(sorted(groups.items()))


def plan_dataset(ds: Dataset) -> list[PlannedTask]:
    base = PREFIX + _task_id(ds.name)
    if ds.kind == "qa":
        return [PlannedTask(base, ds.name, "qa")]
    subjects = list(_by_subject(ds))
    planned = []
    variants: tuple[tuple[Literal["loglikelihood", "generate_mcq"], str], ...] = (
        ("loglikelihood", ""),
        ("generate_mcq", "_gen"),
    )
    for variant, suffix in variants:
        members: tuple[tuple[str, str], ...] = ()
        if len(subjects) > 1:
            members = tuple(
                (f"{base}_{sid}{suffix}", s) for sid, s in zip(_subject_ids(subjects), subjects, strict=True)
            )
        planned.append(PlannedTask(base + suffix, ds.name, variant, members))
    return planned


def _mcq_doc(s: McqSample) -> dict[str, Any]:
    return {
        "id": s.id,
        "question": s.question,
        "choices": s.choices,
        "letters": list(s.letters),
        "answer": s.letters.index(s.answer),
        "letter": s.answer,
        "subject": s.subject or "",
    }


def _qa_doc(s: QaSample) -> dict[str, Any]:
    return {"id": s.id, "system": s.system or "", "prompt": s.prompt_text(), "answers": s.answers}


DOC_WRITERS: dict[str, Callable[[Any], dict[str, Any]]] = {"mcq": _mcq_doc, "qa": _qa_doc}
TEMPLATE_OF = {
    "loglikelihood": "_bb_mcq_template_yaml",
    "generate_mcq": "_bb_mcq_gen_template_yaml",
    "qa": "_bb_qa_template_yaml",
}


def _write_jsonl(path: Path, docs: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")
    return path


class _YamlDumper(yaml.SafeDumper):
    """Writes strings with line breaks double-quoted, as lm-eval's own task files do, and no anchors."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


_YamlDumper.add_representer(
    str,
    lambda dumper, text: dumper.represent_scalar("tag:yaml.org,2002:str", text, style='"' if "\n" in text else None),
)


def _write_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.dump(data, Dumper=_YamlDumper, allow_unicode=True, sort_keys=False, width=100000)
    path.write_text(text, encoding="utf-8")
    return path


class LMEvalBridge(Bridge):
    name = "lm_eval"
    distribution = "lm_eval"
    kinds = frozenset(KINDS)
    Options = Options

    def __init__(self, ctx: RunContext) -> None:
        super().__init__(ctx)  # checks the kinds of datasets assigned to lm_eval
        self.options: Options
        self.datasets = self.config.datasets_for(self.name, KINDS)
        self.include_paths = check_task_folders(self.config, self.options.include_paths, self.options.tasks)
        if not self.datasets and not self.options.builtin_tasks and not self.options.tasks:
            raise BenchbridgeError(
                f"{self.config.path}: frameworks.lm_eval: no mcq or qa dataset and no builtin_tasks to run"
            )
        for i, model_name in enumerate(self.options.completions_models):
            spec = self.config.model(model_name, f"frameworks.lm_eval.completions_models[{i}]")
            if not isinstance(spec, OpenAISpec):
                raise BenchbridgeError(
                    f"{self.config.path}: frameworks.lm_eval.completions_models[{i}]: "
                    f"{model_name} is not an openai model"
                )
        self.plans = {ds.name: plan_dataset(ds) for ds in self.datasets}
        # Parity (bridges/frameworks/parity.py): every model through the model layer, which merges its system
        # prompt and applies one chat template; lm-eval's own HF/OpenAI classes only in native mode.
        self.parity = self.config.prompt_mode(self.name) == "parity" and bool(self.datasets)  # canonical ones
        to_native = _parity_model if self.parity else native_model
        self.natives = {m.name: to_native(m, self.options) for m in self.config.models}

    # ---------------------------------------------------------------- prepare
    def _fewshot_count(self, available: int) -> int:
        if self.parity:
            return available  # the canonical conversation has every few-shot row of the dataset (of the subject)
        wanted = 5 if self.options.num_fewshot is None else self.options.num_fewshot
        return min(wanted, available)

    def _task_yaml(
        self, folder: Path, task: str, variant: str, alias: str, samples: list[Any], fewshot: list[Any], kind: str
    ) -> list[Path]:
        data = folder / "data"
        stem = task.removesuffix("_gen") if variant == "generate_mcq" else task  # both mcq variants share data
        to_doc = DOC_WRITERS[kind]
        test = _write_jsonl(data / f"{stem}.test.jsonl", [to_doc(s) for s in samples])
        cfg: dict[str, Any] = {"include": f"../{TEMPLATE_OF[variant]}", "task": task, "task_alias": alias}
        files: dict[str, str] = {"test": str(test)}
        written = [test]
        shots = self._fewshot_count(len(fewshot))
        if shots:
            fs = _write_jsonl(data / f"{stem}.fewshot.jsonl", [to_doc(s) for s in fewshot])
            files["train"] = str(fs)
            written.append(fs)
            cfg.update({"fewshot_split": "train", "fewshot_config": {"sampler": "first_n"}})
        cfg["num_fewshot"] = shots
        if variant == "loglikelihood":
            cfg.update(MCQ_FORMATS[self.options.mcq_format])
        cfg.update({"dataset_path": "json", "dataset_kwargs": {"data_files": files}})
        return [*written, _write_yaml(folder / f"{task}.yaml", cfg)]

    def _write_dataset(self, tasks_dir: Path, ds: Dataset) -> list[Path]:
        folder = tasks_dir / _task_id(ds.name)
        written: list[Path] = []
        for plan in self.plans[ds.name]:
            if ds.kind == "qa":
                written += self._task_yaml(folder, plan.name, plan.variant, ds.name, ds.samples, ds.fewshot, "qa")
                continue
            by_subject = _by_subject(ds)
            if not plan.members:
                written += self._task_yaml(folder, plan.name, plan.variant, ds.name, ds.samples, ds.fewshot, "mcq")
                continue
            for task, subset in plan.members:
                samples, fewshot = by_subject[subset]
                written += self._task_yaml(folder, task, plan.variant, subset, samples, fewshot, "mcq")
            metrics = ["acc", "acc_norm"] if plan.needs_loglikelihood else ["exact_match"]
            filters = ["none"] if plan.needs_loglikelihood else ["letter"]
            group = {
                "group": plan.name,
                "group_alias": ds.name,
                "task": [t for t, _ in plan.members],
                "aggregate_metric_list": [
                    {"metric": m, "filter_list": filters, "aggregation": "mean", "weight_by_size": True}
                    for m in metrics
                ],
                "metadata": {"version": 1.0, "generator": "benchbridge"},
            }
            written.append(_write_yaml(folder / f"{plan.name}.yaml", group))
        return written

    def tasks_for(self, model: str) -> list[str]:
        """The lm-eval names run for `model`: mcq as the generate variant when it cannot score."""
        can_score = self.natives[model].can_score
        names = [
            p.name
            for plans in self.plans.values()
            for p in plans
            if p.variant == "qa" or p.needs_loglikelihood == can_score
        ]
        return names + list(self.options.builtin_tasks) + list(self.options.tasks)

    def job(self, out_dir: Path, spec: ModelSpec) -> dict[str, Any]:
        native = self.natives[spec.name]
        gen = spec.generation
        return {
            "model_name": spec.name,
            "model": native.model,
            "model_args": native.model_args,
            "can_score": native.can_score,
            "apply_chat_template": native.apply_chat_template,
            "system_instruction": native.system_instruction,
            "tasks": self.tasks_for(spec.name),
            "include_path": str(out_dir / TASKS_DIR),
            "include_defaults": bool(self.options.builtin_tasks),
            "include_paths": [str(p) for p in self.include_paths],  # the team's task folders, searched too
            "batch_size": spec.batch_size,
            "device": self.options.device if native.model == "hf" else None,
            "limit": self.config.cfg.max_samples,
            "seed": self.config.cfg.seed,
            "gen_kwargs": {
                "max_gen_toks": gen.max_new_tokens,
                "temperature": gen.temperature,
                "do_sample": gen.temperature > 0,
            },
            "log_samples": self.options.log_samples,
            "output_path": str(self.results_dir(out_dir, spec.name) / "results.json"),
        }

    @staticmethod
    def results_dir(out_dir: Path, model: str) -> Path:
        return out_dir / RESULTS_DIR / model

    def include_runs(self, tasks_dir: Path, tasks: list[str]) -> list[tuple[Path, list[str]]]:
        """(include folder, its tasks) per plain `lm_eval` command: lm-eval's CLI takes one `--include_path`
        (a second replaces the first), so tasks from our folder and from a team's folders (`include_paths`)
        are one command per folder. A team task goes with the last folder defining it, as when the worker
        indexes them all; our tasks and lm-eval's built-in ones go with our folder."""
        team = set(self.options.tasks)
        runs: dict[Path, list[str]] = {}
        ours = [name for name in tasks if name not in team]
        if ours:
            runs[tasks_dir] = ours
        defined = [(folder, task_names(folder)) for folder in self.include_paths]
        for name in (n for n in tasks if n in team):
            folder = next(f for f, names in reversed(defined) if name in names)  # checked when the bridge was made
            runs.setdefault(folder, []).append(name)
        return list(runs.items())

    def cli_command(self, job: dict[str, Any], job_path: Path) -> str:
        """The `lm_eval` command line(s) equal to `job` (or the worker command for layer-backed models)."""
        if job["model"] == PYTHON_LM:
            return f"{shlex.quote(sys.executable)} -m bridges.frameworks.lm_eval.worker {shlex.quote(str(job_path))}"
        native = self.natives[job["model_name"]]
        seed = job["seed"]
        env = " ".join(f"{k}=${v}" for k, v in native.env.items())
        commands = []
        for include, tasks in self.include_runs(Path(job["include_path"]), job["tasks"]):
            parts = [
                "lm_eval",
                f"--model {job['model']}",
                f"--model_args {shlex.quote(native.cli_args())}",
                f"--include_path {shlex.quote(str(include))}",
                f"--tasks {shlex.quote(','.join(tasks))}",
                f"--batch_size {job['batch_size']}",
                *([f"--device {job['device']}"] if job["device"] else []),
                *(["--apply_chat_template"] if job["apply_chat_template"] else []),
                *(
                    [f"--system_instruction {shlex.quote(job['system_instruction'])}"]
                    if job["system_instruction"]
                    else []
                ),
                f"--gen_kwargs {','.join(f'{k}={v}' for k, v in job['gen_kwargs'].items())}",
                *([f"--limit {job['limit']}"] if job["limit"] else []),
                f"--seed {seed},{seed},{seed},{seed}",
                *(["--log_samples"] if job["log_samples"] else []),
                f"--output_path {shlex.quote(job['output_path'])}",
            ]
            commands.append((env + " " if env else "") + " \\\n    ".join(parts))
        return "\n".join(commands)

    def _readme(self, tasks_dir: Path, commands: dict[str, str]) -> Path:
        names = [p.name for plans in self.plans.values() for p in plans if p.variant != "generate_mcq"]
        lines = [
            "# lm-evaluation-harness tasks written by benchbridge",
            "",
            "An include folder for lm-eval (`--include_path` this folder). Tasks:",
            "",
            *[
                f"- `{p.name}`: {p.dataset}, {p.variant.replace('_', ' ')} -> `{p.primary}`"
                + (f" (group of {len(p.members)} subject tasks)" if p.members else "")
                for plans in self.plans.values()
                for p in plans
            ],
            *[f"- `{name}`: lm-eval's own task" for name in self.options.builtin_tasks],
            *[
                f"- `{name}`: your task, from `--include_path {shlex.quote(str(folder))}`"
                for folder, names in self.include_runs(tasks_dir, list(self.options.tasks))
                for name in names
            ],
            "",
            "`bb_<dataset>` of an mcq dataset is `multiple_choice` (acc, acc_norm); `bb_<dataset>_gen` asks for",
            "the answer letter instead (for models that cannot score loglikelihoods, e.g. chat APIs).",
            "qa tasks score a generation against every acceptable answer (whitespace stripped; case and",
            "punctuation ignored).",
            "",
            "## Commands, one per model (exactly what `benchbridge run --only lm_eval` runs)",
            "",
            "lm-eval's CLI takes one `--include_path`: where a model's tasks come from several folders (these",
            "tasks and your own `include_paths`), it has one `lm_eval` command per folder.",
            "",
        ]
        for model, command in commands.items():
            lines += [f"### {model}", "", "```sh", command, "```", ""]
        lines += [
            "To run every task on any lm-eval model by hand:",
            "",
            "```sh",
            *[
                f"lm_eval --model hf --model_args pretrained=PATH --include_path {shlex.quote(str(folder))} \\\n"
                f"    --tasks {shlex.quote(','.join(tasks))} --log_samples --output_path out/"
                for folder, tasks in self.include_runs(
                    tasks_dir, [*names, *self.options.builtin_tasks, *self.options.tasks]
                )
            ],
            "```",
            "",
            "Jobs for `python` models run through benchbridge's model layer, registered as the lm-eval",
            f"model `{PYTHON_LM}` by `bridges.frameworks.lm_eval.worker` (the plain `lm_eval` CLI does not know it).",
            "",
        ]
        return _write_text(tasks_dir / "README.md", "\n".join(lines))

    def prepare(self, out_dir: Path) -> list[Path]:
        out_dir = Path(out_dir).resolve()
        tasks_dir = out_dir / TASKS_DIR
        tasks_dir.mkdir(parents=True, exist_ok=True)
        written = [Path(shutil.copyfile(TEMPLATES_DIR / name, tasks_dir / name)) for name in TEMPLATES]
        for ds in self.datasets:
            written += self._write_dataset(tasks_dir, ds)
        commands = {}
        for spec in self.config.models:
            job = self.job(out_dir, spec)
            job_path = out_dir / JOBS_DIR / f"{spec.name}.json"
            job_path.parent.mkdir(parents=True, exist_ok=True)
            job_path.write_text(json.dumps(job, indent=2, ensure_ascii=False), encoding="utf-8")
            written.append(job_path)
            commands[spec.name] = self.cli_command(job, job_path)
        written.append(self._readme(tasks_dir, commands))
        return list(dict.fromkeys(written))  # both mcq variants name the same data files

    # ---------------------------------------------------------------- run
    def _child_env(self, native: NativeModel) -> dict[str, str]:
        env = child_env()
        for target, source in native.env.items():
            value = os.environ.get(source) or dotenv_values().get(source)
            if value:
                env[target] = value
        env.update(native.env_values)
        return env

    def _run_model(self, out_dir: Path, spec: ModelSpec) -> None:
        job_path = out_dir / JOBS_DIR / f"{spec.name}.json"
        job = json.loads(job_path.read_text(encoding="utf-8"))
        results = self.results_dir(out_dir, spec.name)
        results.mkdir(parents=True, exist_ok=True)
        status: dict[str, Any] = {"isolation": self.options.isolation}
        # A python model's ${VAR} args reach the worker through its environment, never the job file.
        env = {**self._child_env(self.natives[spec.name]), **referenced_env([spec])}
        if self.options.isolation == "in-process":
            from bridges.frameworks.lm_eval.worker import run_job

            with _environ(env):
                try:
                    run_job(job)
                    status["returncode"] = 0
                except Exception:  # noqa: BLE001 - reported: every task of this model becomes a failed record
                    status["error"] = f"lm-eval failed in-process:\n{excerpt(traceback.format_exc())}"
        else:
            argv = [sys.executable, "-m", "bridges.frameworks.lm_eval.worker", str(job_path)]
            result = run_child(argv, log=results / LOG_FILE, env=env, timeout=self.options.timeout_s)
            status["returncode"] = result.returncode
            if result.timed_out:
                status["error"] = f"lm-eval did not finish within timeout_s={self.options.timeout_s}"
        (results / STATUS_FILE).write_text(json.dumps(status), encoding="utf-8")

    @contextmanager
    def _served_openai_models(self) -> Iterator[None]:
        """While open, `openai` models (but loglikelihood scorers, see the module docstring) ask a loopback
        endpoint serving their spec, so each call goes through the model layer and then the upstream."""
        specs = [
            s
            for s in self.config.models
            if isinstance(s, OpenAISpec)
            and self.natives[s.name].model != PYTHON_LM
            and not self.natives[s.name].can_score
        ]
        if not specs:
            yield
            return
        from bridges.serve import serving

        upstream_natives = dict(self.natives)
        try:
            with serving(specs, api_key=SERVED_API_KEY) as url:
                for spec in specs:
                    native = native_model(spec.model_copy(update={"base_url": url, "model": spec.name}), self.options)
                    # The served layer merges the system prompt: lm-eval's system_instruction would add it twice.
                    key = {"OPENAI_API_KEY": SERVED_API_KEY}
                    self.natives[spec.name] = replace(native, env={}, env_values=key, system_instruction=None)
                yield
        finally:
            self.natives = upstream_natives

    def during_run(self) -> contextlib.AbstractContextManager[None]:
        return self._served_openai_models()

    def execute(self, out_dir: Path) -> None:
        for spec in self.config.models:
            self.ctx.progress(f"[lm_eval] {spec.name}: {', '.join(self.tasks_for(spec.name))}")
            started = time.monotonic()
            self._run_model(out_dir, spec)
            status = _read_json(self.results_dir(out_dir, spec.name) / STATUS_FILE, {})
            ok = status.get("returncode") == 0
            outcome = "ok" if ok else f"failed (log: {self.results_dir(out_dir, spec.name)})"
            self.ctx.progress(f"[lm_eval] {spec.name}: {outcome} in {time.monotonic() - started:.1f}s")

    # ---------------------------------------------------------------- collect
    def _locations(self, results: dict[str, Any]) -> dict[str, tuple[str, str, PlannedTask | None]]:
        """lm-eval result key -> (benchmark, subset, our planned task or None for built-in tasks)."""
        where: dict[str, tuple[str, str, PlannedTask | None]] = {}
        for plans in self.plans.values():
            for p in plans:
                where[p.name] = (p.dataset, "", p)
                for task, subset in p.members:
                    where[task] = (p.dataset, subset, p)
        subtasks: dict[str, list[str]] = results.get("group_subtasks", {})

        def under(name: str, benchmark: str) -> None:
            for child in subtasks.get(name, []):
                where.setdefault(child, (benchmark, child, None))
                under(child, benchmark)

        for name in [*self.options.builtin_tasks, *self.options.tasks]:
            where.setdefault(name, (name, "", None))
            under(name, name)
        return where

    def _records_from(self, model: str, path: Path) -> list[Record]:
        results = json.loads(path.read_text(encoding="utf-8"))
        where = self._locations(results)
        subtasks: dict[str, list[str]] = results.get("group_subtasks", {})
        n_samples = {k: v.get("effective") for k, v in results.get("n-samples", {}).items()}

        def size(key: str) -> int | None:
            if key in n_samples:
                return n_samples[key]
            sizes = [size(child) for child in subtasks.get(key, [])]
            return sum(s for s in sizes if s is not None) if sizes else None

        records = []
        for key, entry in results["results"].items():
            benchmark, subset, plan = where.get(key, (key, "", None))
            numeric = [k for k, v in entry.items() if "," in k and "_stderr," not in k and isinstance(v, int | float)]
            primary = plan.primary if plan else (numeric[0] if numeric else None)
            samples = path.parent / f"samples_{key}_{path.stem.removeprefix('results_')}.jsonl"  # same date id
            for result_key in numeric:
                metric, _, filter_name = result_key.partition(",")
                stderr = entry.get(f"{metric}_stderr,{filter_name}")
                records.append(
                    self.record(
                        model=model,
                        benchmark=benchmark,
                        subset=subset,
                        metric=metric if filter_name == "none" else result_key,
                        value=entry[result_key],
                        stderr=stderr if isinstance(stderr, int | float) else None,
                        scale=1,
                        higher_is_better=results.get("higher_is_better", {}).get(key, {}).get(metric, True),
                        primary=result_key == primary,
                        n_samples=size(key),
                        details_path=str(samples) if samples.exists() else None,
                        extra={
                            "task": key,
                            "result_key": result_key,
                            "variant": plan.variant if plan else "builtin",
                            "n_shot": results.get("n-shot", {}).get(key),
                            "results_file": str(path),
                        },
                    )
                )
        return records

    def _failed(self, model: str, benchmark: str, metric: str, error: str) -> Record:
        """A failed cell with its reason, never a 0 score."""
        return self.record(
            model=model, benchmark=benchmark, metric=metric, status="failed", error=clip_error(error), primary=True
        )

    def _requested(self, model: str) -> list[tuple[str, str, str]]:
        """(lm-eval name, benchmark, primary metric name) of everything `model` was to run."""
        by_name = {p.name: p for plans in self.plans.values() for p in plans}
        out = []
        for name in self.tasks_for(model):
            plan = by_name.get(name)
            metric = (plan.primary.removesuffix(",none")) if plan else "*"
            out.append((name, plan.dataset if plan else name, metric))
        return out

    def collect(self, out_dir: Path) -> list[Record]:
        out_dir = Path(out_dir).resolve()
        records: list[Record] = []
        for spec in self.config.models:
            folder = self.results_dir(out_dir, spec.name)
            # Every results file, oldest first, a task's latest winning: by hand, a model whose tasks come from
            # several include folders is one lm_eval command (one results file) per folder.
            latest: dict[str, list[Record]] = {}
            for path in sorted(folder.glob("results_*.json")):
                by_task: dict[str, list[Record]] = {}
                for record in self._records_from(spec.name, path):
                    by_task.setdefault(record.extra["task"], []).append(record)
                latest.update(by_task)
            got = [r for task_records in latest.values() for r in task_records]
            records += got
            done = {r.extra["task"] for r in got}
            skipped = _read_json(folder / "skipped.json", {})
            for name, benchmark, metric in self._requested(spec.name):
                if name in done:
                    continue
                reason = skipped.get(name) or self._failure_reason(folder, name)
                records.append(self._failed(spec.name, benchmark, metric, f"lm-eval task {name}: {reason}"))
        return records

    def collect_samples(self, out_dir: Path) -> list[Sample]:
        """Each model's per-document rows from lm-eval's `log_samples` files (samples_<task>_<date>.jsonl
        beside the results file they belong to), scored by the metric names its records carry."""
        out_dir = Path(out_dir).resolve()
        samples: list[Sample] = []
        for spec in self.config.models:
            latest: dict[str, tuple[Path, dict[str, Any], Any]] = {}  # task -> its latest results file (see collect)
            for found in sorted(self.results_dir(out_dir, spec.name).glob("results_*.json")):
                results = json.loads(found.read_text(encoding="utf-8"))
                where_in = self._locations(results)
                latest.update({key: (found, where_in, entry) for key, entry in results["results"].items()})
            for key, (found, where, entry) in latest.items():
                path = found.parent / f"samples_{key}_{found.stem.removeprefix('results_')}.jsonl"
                if not path.is_file():
                    continue  # a group (its tasks have the files) or log_samples: false
                benchmark, subset, _ = where.get(key, (key, "", None))
                metrics = [record_metric(*k.split(",", 1)) for k in entry if "," in k and "_stderr," not in k]
                samples += read_samples(
                    path,
                    run_id=self.ctx.run_id,
                    model=spec.name,
                    benchmark=benchmark,
                    subset=subset,
                    metrics=metrics,
                    layer_system_prompt=spec.system_prompt if self._layered(spec) else None,
                )
        return samples

    def _layered(self, spec: ModelSpec) -> bool:
        """Whether the model layer added the spec's system prompt (not lm-eval): our python LM, and an openai
        model served through the layer during the run (a loglikelihood scorer calls its upstream itself)."""
        native = self.natives[spec.name]
        return native.model == PYTHON_LM or (isinstance(spec, OpenAISpec) and not native.can_score)

    @staticmethod
    def _failure_reason(folder: Path, name: str) -> str:
        status = _read_json(folder / STATUS_FILE, {})
        if status.get("error"):
            return status["error"]
        log = folder / LOG_FILE
        tail = log_excerpt(log)
        if status.get("returncode") not in (0, None) or tail:
            return f"lm-eval exited with code {status.get('returncode')}; log {log}:\n{tail}"
        return f"no result (nothing ran; expected lm-eval's results_*.json in {folder})"


@contextmanager
def _environ(env: dict[str, str]) -> Iterator[None]:
    """The in-process run sees the environment a subprocess would get; restored afterwards."""
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _read_json(path: Path, default: Any) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else default


def _write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path

"""OpenAI evals bridge: a complete evals registry from our datasets, run with `oaieval`, read back.

`prepare(out)` writes a registry a user can run by hand (`out/README.md` has the commands):

- ``data/<dataset>/samples.jsonl``: qa samples keep their chat messages (system prompt + turns) as
  ``input``, ``ideal`` = the acceptable answers; mcq samples become one user turn with lettered
  choices, ``ideal`` = the letter.
- ``evals/<dataset>.yaml``: one eval ``<dataset>.<method>`` per scoring method (`methods.yaml`).
- ``eval_sets/<set>.yaml``: ``<set>`` (evals scored by rule) and ``<set>-modelgraded`` (graded by
  a model): evals' basic evals accept one completion function, model-graded ones take
  ``model,grader``, so one `oaievalset` command cannot run both kinds.
- ``completion_fns/<model>.yaml``: ``bb-<model>`` for every model in the config, our
  `BenchbridgeCompletionFn` with the model spec as its args (env-var names, never secrets). The
  ``bb-`` prefix keeps evals from routing a model named like an OpenAI model (``gpt-4``,
  ``gpt-4o``) to the OpenAI API instead of to our class.
- ``modelgraded/bb_*.yaml``: our own grader specs, English and Chinese (every file of `grader_specs/`
  beside this module). evals refuses duplicate names, so they cannot be called ``fact``.

`run(out)` runs one ``oaieval`` process per (model, eval) with the record file inside ``out``
(``records/<model>/<eval>.jsonl``, log in ``logs/``), and `collect(out)` turns each record file's
``final_report`` line into records:

- benchmark = the dataset name, subset = "", metric = ``<method>_<report key>``:
  ``match_accuracy``, ``includes_accuracy``, ``fuzzy_match_accuracy`` (primary),
  ``fuzzy_match_f1_score``, ``<method>_bootstrap_std`` (evals writes ``boostrap_std``: the spread of
  the accuracy over random half-size subsamples, not a standard error, so it is its own record);
  model-graded: ``<method>_score`` (primary, the mean choice score) and ``<method>_count_<choice>``
  (``<method>_count_invalid`` for evals' ``__invalid__``; scale = samples graded), judge = grader.
- values are exactly the numbers evals wrote; token usage goes to the primary record's `extra`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from bridges._errors import BenchbridgeError
from bridges.datasets import Dataset, McqSample, QaSample
from bridges.frameworks import Bridge, RunContext
from bridges.frameworks.openai_evals.byo import UserRegistries, imported_registries
from bridges.frameworks.openai_evals.samples import dataset_rows, merge, method_samples, sample_rows
from bridges.frameworks.parity import conversation
from bridges.frameworks.processes import child_env, run_child
from bridges.models import ModelSpec, OpenAISpec, answer_identity
from bridges.records import Record, Sample
from bridges.secrets import referenced_env, scrub_file, secret_values, spec_secret_names

COMPLETION_FN_CLASS = "bridges.frameworks.openai_evals.completion:BenchbridgeCompletionFn"
SPECS_DIR = Path(__file__).parent / "grader_specs"  # every *.yaml there is copied into the registry
METHODS_FILE = Path(__file__).parent / "methods.yaml"
FN_PREFIX = "bb-"
KINDS = {"qa", "mcq"}
DEFAULT_METHODS = {"qa": ["match", "includes", "fuzzy_match"], "mcq": ["match"]}
REGISTRY_DIRS = ("data", "evals", "eval_sets", "completion_fns", "modelgraded")
_FORMAT = 1  # bump when what a record file means changes, so older ones are not reused


@dataclass(frozen=True)
class ScoringMethod:
    """One way evals scores a sample: an eval class and, for model-graded ones, a grader spec."""

    eval_class: str
    primary_key: str  # the final_report key a board column shows
    spec: str | None = None  # modelgraded spec in our registry
    eval_type: str | None = None  # None for specs that carry their own answer prompt (Chinese)
    criteria: str | None = None  # closed-QA criterion, passed as modelgraded_spec_args

    @property
    def model_graded(self) -> bool:
        return self.spec is not None

    def eval_args(self, samples_jsonl: str) -> dict[str, Any]:
        args: dict[str, Any] = {"samples_jsonl": samples_jsonl}
        if self.spec:
            args["modelgraded_spec"] = self.spec
        if self.eval_type:
            args["eval_type"] = self.eval_type
        if self.criteria:
            args["modelgraded_spec_args"] = {"criteria": self.criteria}
        return args


def _load_methods() -> dict[str, ScoringMethod]:
    """The scoring methods: `methods.yaml`, data beside the grader specs it names."""
    table = yaml.safe_load(METHODS_FILE.read_text(encoding="utf-8"))
    return {str(name): ScoringMethod(**fields) for name, fields in table.items()}


METHODS: dict[str, ScoringMethod] = _load_methods()

MCQ_INSTRUCTION = "Answer with the letter of the correct option only."


class OpenAIEvalsOptions(BaseModel):
    """`frameworks.openai_evals` in a run config."""

    model_config = ConfigDict(extra="forbid")

    methods: list[str] | None = Field(
        None, description="scoring methods for every dataset; default: match, includes, fuzzy_match (mcq: match)"
    )
    datasets: dict[str, list[str]] = Field(default_factory=dict, description="per-dataset methods")
    grader: str | None = Field(None, description="the config model that grades model-graded evals")
    models: list[str] | None = Field(None, description="models to evaluate; default: all but the grader")
    eval_set: str | None = Field(None, description="eval set name; default: the config name")
    max_samples: int | None = Field(None, ge=1, description="default: the config's max_samples")
    # Measured on 2 busy cores: 9 python-model evals 41 s -> 22 s at 2; 4 tiny-HF evals 54 s -> 29 s.
    # Each process spends ~1.2 s waiting on evals' OpenAI model listing and seconds importing.
    parallel: int = Field(2, ge=1, description="oaieval processes at once")
    threads: int | None = Field(None, ge=1, description="EVALS_THREADS; default: the models' batch/concurrency")
    eval_timeout_s: float | None = Field(None, gt=0, description="kill an oaieval process after this long")
    # A team's own registries, run as written (byo.py): their evals, grader specs and eval sets.
    registries: list[str] | None = Field(None, description="evals registry folders, each with evals/")
    evals: list[str] | None = Field(None, description="evals or eval sets of `registries`; default: their sets")


@dataclass(frozen=True)
class PlannedEval:
    dataset: Dataset
    method_name: str
    method: ScoringMethod

    @property
    def name(self) -> str:
        return f"{self.dataset.name}.{self.method_name}"


@dataclass(frozen=True)
class Job:
    """One `oaieval` process: a model on an eval (with the grader for model-graded ones)."""

    model: ModelSpec
    grader: ModelSpec | None
    plan: PlannedEval

    @property
    def completion_fns(self) -> str:
        names = [self.model.name] + ([self.grader.name] if self.grader else [])
        return ",".join(FN_PREFIX + n for n in names)

    def record_path(self, out_dir: Path) -> Path:
        return out_dir / "records" / self.model.name / f"{self.plan.name}.jsonl"

    def meta_path(self, out_dir: Path) -> Path:
        return out_dir / "records" / self.model.name / f"{self.plan.name}.meta.json"

    def log_path(self, out_dir: Path) -> Path:
        return out_dir / "logs" / self.model.name / f"{self.plan.name}.log"


class OpenAIEvalsBridge(Bridge):
    name = "openai_evals"
    distribution = "evals"
    kinds = frozenset(KINDS)
    Options = OpenAIEvalsOptions

    def __init__(self, ctx: RunContext) -> None:
        super().__init__(ctx)
        self.options: OpenAIEvalsOptions  # parsed with `Options` by Bridge.__init__
        self.opts = self.options
        self._secrets: list[str] = []  # values masked in oaieval's logs and records (set by `run`)
        key = f"{self.config.path}: frameworks.{self.name}"
        self.byo: UserRegistries | None = None
        if self.opts.registries:  # the registries' evals, instead of evals made from our datasets
            self.byo = UserRegistries(self, key)
            self.candidates, self.grader = self.byo.candidates, self.byo.grader
            return
        if self.opts.evals:
            raise BenchbridgeError(f"{key}.evals: names evals of `registries`; list the registries they are in")
        datasets = {ds.name: ds for ds in self.config.datasets_for(self.name, KINDS)}
        if not datasets:
            raise BenchbridgeError(f"{key}: no qa or mcq datasets are configured for this framework")
        imported = imported_registries(list(datasets.values()), self.opts)
        if imported:  # datasets imported from a registry still there: its own evals and grader specs run
            self.byo = UserRegistries(self, key, imported)
            self.candidates, self.grader = self.byo.candidates, self.byo.grader
            return
        for i, method in enumerate(self.opts.methods or []):
            _check_method(method, f"{key}.methods[{i}]")
        for ds_name, methods in self.opts.datasets.items():
            if ds_name not in datasets:
                raise BenchbridgeError(
                    f"{key}.datasets.{ds_name}: no qa or mcq dataset named {ds_name!r} in this config's datasets "
                    f"(have {', '.join(datasets)})"
                )
            for i, method in enumerate(methods):
                _check_method(method, f"{key}.datasets.{ds_name}[{i}]")
        self.plans = [
            PlannedEval(ds, m, METHODS[m])
            for ds in datasets.values()
            for m in dict.fromkeys(self._methods_for(ds))  # listed twice is still one eval
        ]
        if not self.plans:
            raise BenchbridgeError(f"{key}.datasets: every dataset's method list is empty; nothing to evaluate")
        self.grader = None
        if self.opts.grader:
            self.grader = self.config.model(self.opts.grader, f"frameworks.{self.name}.grader")
        if self.grader is None and any(p.method.model_graded for p in self.plans):
            graded = sorted({p.method_name for p in self.plans if p.method.model_graded})
            raise BenchbridgeError(
                f"{key}.grader: required for the model-graded method(s) {', '.join(graded)} "
                f"(name one of the config's models: {', '.join(m.name for m in self.config.models)})"
            )
        if self.opts.models is not None:
            picked = {
                n: self.config.model(n, f"frameworks.{self.name}.models[{i}]") for i, n in enumerate(self.opts.models)
            }
            self.candidates = list(picked.values())
        else:
            self.candidates = [m for m in self.config.models if self.grader is None or m.name != self.grader.name]
        if not self.candidates:
            raise BenchbridgeError(f"{key}.models: no model to evaluate (the only model is the grader)")
        self.eval_set = self.opts.eval_set or self.config.name
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", self.eval_set):
            raise BenchbridgeError(f"{key}.eval_set: {self.eval_set!r} must be letters, digits, _ . -")
        self._check_builtin_collisions(key)

    def _methods_for(self, ds: Dataset) -> list[str]:
        """`datasets.<name>` (an empty list leaves the dataset out), else `methods`, else the kind's default."""
        if ds.name in self.opts.datasets:
            return self.opts.datasets[ds.name]
        return self.opts.methods if self.opts.methods is not None else DEFAULT_METHODS[ds.kind]

    # ----------------------------------------------------------------- names

    @property
    def graded_set(self) -> str:
        return f"{self.eval_set}-modelgraded"

    def _check_builtin_collisions(self, key: str) -> None:
        """evals loads its own registry too and refuses duplicate names: catch them before any run."""
        builtin = _builtin_registry_names()
        for plan in self.plans:
            if plan.name in builtin["evals"]:
                raise BenchbridgeError(
                    f"{key}: eval {plan.name!r} (dataset {plan.dataset.name}) is also a built-in evals eval; "
                    "rename the dataset"
                )
        for name in (self.eval_set, self.graded_set):
            if name in builtin["eval_sets"]:
                raise BenchbridgeError(f"{key}.eval_set: {name!r} is a built-in evals eval set; choose another name")

    def jobs(self) -> list[Job]:
        return [
            Job(model, self.grader if plan.method.model_graded else None, plan)
            for model in self.candidates
            for plan in self.plans
        ]

    # ----------------------------------------------------------------- prepare

    def prepare(self, out_dir: Path) -> list[Path]:
        out_dir = Path(out_dir)
        if self.byo:
            return self.byo.prepare(out_dir)
        for sub in REGISTRY_DIRS:  # a registry rewritten in place must not keep a previous config's evals
            shutil.rmtree(out_dir / sub, ignore_errors=True)
        written: list[Path] = []
        for ds in {p.dataset.name: p.dataset for p in self.plans}.values():
            path = out_dir / "data" / ds.name / "samples.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("w", encoding="utf-8") as fh:
                parity = ds if self.config.prompt_mode(self.name) == "parity" else None
                for sample in ds.samples:
                    fh.write(json.dumps(evals_sample(sample, parity), ensure_ascii=False) + "\n")
            written.append(path)
            entries = {
                p.name: {"class": p.method.eval_class, "args": p.method.eval_args(f"{ds.name}/samples.jsonl")}
                for p in self.plans
                if p.dataset.name == ds.name
            }
            written.append(write_yaml(out_dir / "evals" / f"{ds.name}.yaml", entries))
        sets = {self.eval_set: [p.name for p in self.plans if not p.method.model_graded]}
        sets[self.graded_set] = [p.name for p in self.plans if p.method.model_graded]
        written.append(
            write_yaml(
                out_dir / "eval_sets" / f"{self.eval_set}.yaml", {k: {"evals": v} for k, v in sets.items() if v}
            )
        )
        for model in self.config.models:
            entry = {FN_PREFIX + model.name: {"class": COMPLETION_FN_CLASS, "args": {"model": model.public_dict()}}}
            written.append(write_yaml(out_dir / "completion_fns" / f"{model.name}.yaml", entry))
        (out_dir / "modelgraded").mkdir(parents=True, exist_ok=True)
        for spec_file in sorted(SPECS_DIR.glob("*.yaml")):
            target = out_dir / "modelgraded" / spec_file.name
            shutil.copyfile(spec_file, target)
            written.append(target)
        readme = out_dir / "README.md"
        readme.write_text(self._readme(out_dir.resolve(), sets), encoding="utf-8")
        written.append(readme)
        return written

    def _readme(self, registry: Path, sets: dict[str, list[str]]) -> str:
        model = self.candidates[0].name
        bin_dir = Path(sys.executable).parent
        lines = [
            f"# OpenAI evals registry for `{self.config.name}`",
            "",
            f"Written by `benchbridge prepare` (evals {self.version()}). Completion functions are "
            f"`{FN_PREFIX}<model>` for the models {', '.join(m.name for m in self.config.models)}; "
            "they run through benchbridge's model layer, so `benchbridge` must be importable (and so must the "
            "modules of `python` models: run from the folder you run benchbridge from, or set `PYTHONPATH`).",
            "",
            "evals imports an OpenAI client on start-up and needs `OPENAI_API_KEY` set to something; for "
            "local models any value works. `oaievalset` starts `oaieval` from `PATH`, so put the "
            "environment's `bin` first:",
            "",
            "```sh",
            f'export PATH="{bin_dir}:$PATH"',
            'export OPENAI_API_KEY="${OPENAI_API_KEY:-dummy}" USE_TF=0',
        ]
        for m in self.config.models:
            if isinstance(m, OpenAISpec):
                key_env = m.api_key_env
                lines.append(f"export {key_env}=...   # model {m.name} reads its key from here (never written)")
        if sets.get(self.eval_set):
            lines += [
                f"# evals scored by rule ({len(sets[self.eval_set])}): one completion function",
                f"oaievalset --registry_path {registry} {FN_PREFIX}{model} {self.eval_set} --no-resume",
            ]
        if sets.get(self.graded_set) and self.grader:
            lines += [
                "# model-graded evals: the LAST completion function is the grader",
                f"oaievalset --registry_path {registry} {FN_PREFIX}{model},{FN_PREFIX}{self.grader.name} "
                f"{self.graded_set} --no-resume",
            ]
        lines += [
            "```",
            "",
            "`oaievalset` writes each eval's record to `/tmp/evallogs/` and keeps its progress in "
            "`/tmp/oaievalset/` (`--no-resume` ignores it). One eval, with the record where you want it:",
            "",
            "```sh",
            f"oaieval --registry_path {registry} {FN_PREFIX}{model} {self.plans[0].name} "
            f"--record_path ./{self.plans[0].name}.jsonl",
            "```",
            "",
            "`benchbridge run CONFIG --only openai_evals` runs the same evals with the records inside its run "
            "folder and reads their `final_report` lines into the results store.",
            "",
            "| eval | dataset | method | class | grader spec |",
            "|---|---|---|---|---|",
        ]
        for p in self.plans:
            lines.append(
                f"| `{p.name}` | {p.dataset.name} ({p.dataset.kind}, {len(p.dataset.samples)}) | {p.method_name} "
                f"| `{p.method.eval_class}` | {p.method.spec or ''} |"
            )
        lines.append("")
        return "\n".join(lines)

    # ----------------------------------------------------------------- run

    def validate(self) -> None:
        if not self.oaieval.exists():
            raise BenchbridgeError(
                f"{self.oaieval}: not found; install OpenAI evals into this environment "
                "(pip install 'benchbridge[frameworks]' -c constraints.txt)"
            )
        self._environment()  # an openai model's key not set: found before anything is written

    @property
    def oaieval(self) -> Path:
        return Path(sys.executable).parent / "oaieval"

    def execute(self, out_dir: Path) -> None:
        if self.byo:
            return self.byo.execute(out_dir)
        env = self._environment()
        todo = []
        for job in self.jobs():
            key = self._job_key(job, out_dir)
            if not self.ctx.force and self._reuse(job, key, out_dir):
                self.ctx.progress(f"[{self.name}] {job.model.name} {job.plan.name}: finished before, reused")
                continue
            todo.append((job, key))

        def run_one(item: tuple[Job, str]) -> None:
            self._run_job(item[0], item[1], out_dir, self.oaieval, env)

        self._secrets = secret_values(spec_secret_names(self.config.models))
        with ThreadPoolExecutor(max(1, min(self.opts.parallel, len(todo) or 1))) as pool:
            list(pool.map(run_one, todo))

    def _environment(self) -> dict[str, str]:
        """The oaieval processes' environment: this venv's executables, importable project code, and
        a real OpenAI key only when an `openai` model is involved."""
        from bridges.secrets import read_secret

        env = child_env()
        involved = {m.name: m for m in [*self.candidates, *([self.grader] if self.grader else [])]}.values()
        openai_models = [m for m in involved if m.kind == "openai"]
        for m in openai_models:
            assert isinstance(m, OpenAISpec)  # kind "openai"
            key_env = m.api_key_env
            secret = read_secret(key_env)
            if secret is None:
                raise BenchbridgeError(
                    f"model {m.name}: api_key_env: ${key_env} is not set (set it in the environment or .env)"
                )
            env[key_env] = secret
        if openai_models and read_secret("OPENAI_API_KEY"):
            env["OPENAI_API_KEY"] = read_secret("OPENAI_API_KEY") or ""
        else:
            # evals builds an OpenAI client at import and needs a value; no real key leaves this process.
            env["OPENAI_API_KEY"] = "dummy-no-openai-model-in-this-run"
        env.update(referenced_env(involved))  # python args' ${VAR}: through the environment, never a file
        threads = self.opts.threads or max(max(m.batch_size, m.limits.max_concurrency) for m in involved)
        env["EVALS_THREADS"] = str(threads)
        return env

    def _job_key(self, job: Job, out_dir: Path) -> str:
        """What determines a record file: reused only if all of it is unchanged."""
        samples = out_dir / "data" / job.plan.dataset.name / "samples.jsonl"
        spec_text = (SPECS_DIR / f"{job.plan.method.spec}.yaml").read_text("utf-8") if job.plan.method.spec else ""
        payload = {
            "format": _FORMAT,
            "evals": self.version(),
            "model": job.model.public_dict(),
            "grader": job.grader.public_dict() if job.grader else None,
            # What the response cache keys answers by (python source, hf files, resolved args): a changed
            # model or grader is asked again, never shown with an earlier version's results.
            "identity": answer_identity(job.model),
            "grader_identity": answer_identity(job.grader) if job.grader else None,
            "class": job.plan.method.eval_class,
            "args": job.plan.method.eval_args(""),
            "samples": hashlib.sha256(samples.read_bytes()).hexdigest(),
            "spec": spec_text,
            "max_samples": self.max_samples,
            "seed": self.config.cfg.seed,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]

    @property
    def max_samples(self) -> int | None:
        return self.opts.max_samples or self.config.cfg.max_samples

    def _reuse(self, job: Job, key: str, out_dir: Path) -> bool:
        """A finished record with the same key, in this folder or an earlier run's, is used again."""
        here = job.meta_path(out_dir)
        rel = here.relative_to(out_dir)
        candidates = [here]
        work_dir = self.config.work_dir
        if work_dir.is_dir():
            earlier = [p / self.name / rel for p in work_dir.iterdir() if (p / self.name / rel).is_file()]
            earlier = [p for p in earlier if p.resolve() != here.resolve()]
            candidates += sorted(earlier, key=lambda p: p.stat().st_mtime, reverse=True)
        for meta_path in candidates:
            if not meta_path.is_file():
                continue
            meta = json.loads(meta_path.read_text("utf-8"))
            record = meta_path.with_name(meta_path.name.replace(".meta.json", ".jsonl"))
            if meta.get("key") != key or read_record_file(record).final_report is None:
                continue
            if meta_path != here:
                job.record_path(out_dir).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(record, job.record_path(out_dir))
                meta = {**meta, "reused_from": str(record)}
                write_json(here, meta)
            return True
        return False

    def _run_job(self, job: Job, key: str, out_dir: Path, oaieval: Path, env: dict[str, str]) -> None:
        record, log, meta_path = job.record_path(out_dir), job.log_path(out_dir), job.meta_path(out_dir)
        for p in (record, log, meta_path):
            p.parent.mkdir(parents=True, exist_ok=True)
        record.unlink(missing_ok=True)
        cmd = [
            str(oaieval),
            job.completion_fns,
            job.plan.name,
            "--registry_path",
            str(out_dir),
            "--record_path",
            str(record),
            "--seed",
            str(self.config.cfg.seed),
        ]
        if self.max_samples:
            cmd += ["--max_samples", str(self.max_samples)]
        self.ctx.progress(f"[{self.name}] {job.model.name} {job.plan.name}: running")
        started = time.monotonic()
        error = None
        result = run_child(cmd, log=log, env=env, timeout=self.opts.eval_timeout_s)
        returncode = result.returncode
        if result.timed_out:
            error = f"oaieval timed out after {self.opts.eval_timeout_s:g} s (log: {log})"
        # oaieval's log and record may quote a key (an upstream's 401 echoing the header): masked
        # before anything reads them.
        for path in (log, record):
            scrub_file(path, self._secrets)
        if error is None and returncode != 0:
            error = f"oaieval exited with code {returncode}: {last_error_line(log)} (log: {log})"
        if error is None and read_record_file(record).final_report is None:
            error = f"oaieval wrote no final_report to {record} (log: {log})"
        seconds = round(time.monotonic() - started, 2)
        meta = {
            "key": key,
            "model": job.model.name,
            "grader": job.grader.name if job.grader else None,
            "eval": job.plan.name,
            "command": cmd,
            "returncode": returncode,
            "seconds": seconds,
            "error": error,
        }
        write_json(meta_path, meta)
        status = "ok" if error is None else f"FAILED: {error}"
        self.ctx.progress(f"[{self.name}] {job.model.name} {job.plan.name}: {status} ({seconds:.1f}s)")

    # ----------------------------------------------------------------- collect

    def collect(self, out_dir: Path) -> list[Record]:
        out_dir = Path(out_dir).resolve()
        if self.byo:
            return self.byo.collect(out_dir)
        records: list[Record] = []
        for job in self.jobs():
            records += self._collect_job(job, out_dir)
        return records

    def collect_samples(self, out_dir: Path) -> list[Sample]:
        """Per model and dataset, one row per sample with the scores of every method whose eval
        finished (the record file of a failed eval gives none: its failed record says why)."""
        out_dir = Path(out_dir).resolve()
        if self.byo:
            return self.byo.collect_samples(out_dir)
        grouped: dict[tuple[str, str], dict[str, dict[int, dict[str, Any]]]] = {}
        system_prompts = {m.name: m.system_prompt for m in self.config.models}
        datasets_rows = {p.dataset.name: sample_rows([evals_sample(s) for s in p.dataset.samples]) for p in self.plans}
        for job in self.jobs():
            if any(r.status != "ok" for r in self._collect_job(job, out_dir)):
                continue
            entries = method_samples(
                job.record_path(out_dir), job.plan.method_name, job.grader.name if job.grader else None
            )
            grouped.setdefault((job.model.name, job.plan.dataset.name), {})[job.plan.method_name] = entries
        samples: list[Sample] = []
        for (model, dataset), per_method in grouped.items():
            data_file = out_dir / "data" / dataset / "samples.jsonl"
            # The data file evals indexed; a folder without it (reports copied alone): the config's dataset,
            # from which `prepare` writes that file in the same order.
            rows = dataset_rows(data_file) if data_file.is_file() else datasets_rows[dataset]
            samples += merge(
                per_method,
                rows,
                run_id=self.ctx.run_id,
                model=model,
                benchmark=dataset,
                system_prompt=system_prompts.get(model),
            )
        return samples

    def _collect_job(self, job: Job, out_dir: Path) -> list[Record]:
        path = job.record_path(out_dir)
        plan = job.plan
        base: dict[str, Any] = {
            "model": job.model.name,
            "benchmark": plan.dataset.name,
            "judge": job.grader.name if job.grader else None,
            "details_path": str(path),
        }
        extra: dict[str, Any] = {"eval": plan.name, "method": plan.method_name, "completion_fns": job.completion_fns}
        primary_metric = f"{plan.method_name}_{plan.method.primary_key}"
        meta_path = job.meta_path(out_dir)
        meta = json.loads(meta_path.read_text("utf-8")) if meta_path.is_file() else {}
        if meta.get("reused_from"):
            extra["reused_from"] = meta["reused_from"]
        parsed = read_record_file(path)
        report = parsed.final_report
        error = meta.get("error")
        if report is not None and not _is_number(report.get(plan.method.primary_key)):
            error = f"{path}: final_report has no number for {plan.method.primary_key!r}: {report}"
        if error or report is None:
            error = error or f"{path}: no record with a final_report (the eval did not run or did not finish)"
            return [self.record(**base, metric=primary_metric, status="failed", error=error, primary=True, extra=extra)]
        extra["evals_run_id"] = parsed.run_id
        n = parsed.n_samples
        counts = [v for k, v in report.items() if k.startswith("counts/") and _is_number(v)]
        if counts:  # model-graded: evals scores an invalid grade as the lowest choice; the board shows them
            extra.update(n_invalid=int(report.get("counts/__invalid__", 0)), n_graded=int(sum(counts)))
        usage = {k: v for k, v in report.items() if k.startswith("usage_")}
        out = []
        for key, value in report.items():
            if key in usage or not _is_number(value):
                continue
            metric, fields = metric_for(plan.method_name, plan.method.spec, key, n)
            is_primary = key == plan.method.primary_key
            out.append(
                self.record(
                    **base,
                    metric=metric,
                    value=value,
                    primary=is_primary,
                    n_samples=n,
                    extra={**extra, "report_key": key, **({"usage": usage} if is_primary and usage else {})},
                    **fields,
                )
            )
        return out


# --------------------------------------------------------------------- helpers


def _check_method(method: str, key: str) -> None:
    if method not in METHODS:
        raise BenchbridgeError(f"{key}: unknown scoring method {method!r}; known: {', '.join(METHODS)}")


def evals_sample(sample: QaSample | McqSample | Any, parity: Dataset | None = None) -> dict[str, Any]:
    """A canonical sample as an evals sample: ``{"input": [chat], "ideal": str | [str], "id"}``; with
    `parity` (the sample's dataset) the input is its canonical conversation (`bridges.frameworks.parity`)."""
    if parity is not None and isinstance(sample, QaSample | McqSample):
        return {"input": conversation(parity, sample), "ideal": _ideal(sample), "id": sample.id}
    if isinstance(sample, QaSample):
        answers = sample.answers
        ideal: str | list[str] = answers[0] if len(answers) == 1 else list(answers)
        return {"input": [m.model_dump() for m in sample.messages], "ideal": ideal, "id": sample.id}
    if isinstance(sample, McqSample):
        options = "\n".join(f"{letter}. {text}" for letter, text in zip(sample.letters, sample.choices, strict=True))
        text = f"{sample.question}\n\n{options}\n\n{MCQ_INSTRUCTION}"
        return {"input": [{"role": "user", "content": text}], "ideal": sample.answer, "id": sample.id}
    raise TypeError(f"OpenAI evals takes qa and mcq samples, not {type(sample).__name__}")


def _ideal(sample: QaSample | McqSample) -> str | list[str]:
    if isinstance(sample, McqSample):
        return sample.answer
    return sample.answers[0] if len(sample.answers) == 1 else list(sample.answers)


@dataclass
class RecordFile:
    spec: dict[str, Any] | None
    final_report: dict[str, Any] | None
    run_id: str | None
    n_samples: int


def read_record_file(path: Path) -> RecordFile:
    """An evals record: line 1 the spec, a `final_report` line (not always the last), events."""
    spec = report = run_id = None
    samples: set[str] = set()
    if not path.is_file():
        return RecordFile(None, None, None, 0)
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a killed process
            if "spec" in obj:
                spec = obj["spec"]
            elif "final_report" in obj:
                report, run_id = obj["final_report"], obj.get("run_id")
            elif obj.get("type") in ("match", "metrics") and obj.get("sample_id") is not None:
                samples.add(obj["sample_id"])
    return RecordFile(spec, report, run_id, len(samples))


def metric_for(method: str, spec: str | None, key: str, n_samples: int) -> tuple[str, dict[str, Any]]:
    """final_report key -> (metric name, record fields)."""
    if key.startswith("counts/"):
        choice = key.split("/", 1)[1]
        scores = choice_scores(spec) if spec else {}
        # More of a choice is better when it scores above the worst choice (e.g. fact C, not D).
        better = choice in scores and scores[choice] > min(scores.values())
        name = "invalid" if choice == "__invalid__" else re.sub(r"[^A-Za-z0-9_]", "_", choice)
        # A count's full scale is the number of samples graded, so value_100 is the share of them.
        return f"{method}_count_{name}", {"scale": float(max(n_samples, 1)), "higher_is_better": better}
    if key == "boostrap_std":  # sic: evals' spelling
        return f"{method}_bootstrap_std", {"higher_is_better": False}
    return f"{method}_{re.sub(r'[^A-Za-z0-9_]', '_', key)}", {}


def choice_scores(spec: str) -> dict[str, float]:
    """The `choice_scores` of one of our grader specs (package data)."""
    data = yaml.safe_load((SPECS_DIR / f"{spec}.yaml").read_text(encoding="utf-8"))
    return {str(k): float(v) for k, v in (data[spec].get("choice_scores") or {}).items()}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value  # NaN != NaN


def last_error_line(log: Path) -> str:
    """The exception line of a traceback in the log, else its last line."""
    lines = [ln.strip() for ln in log.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    for line in reversed(lines):
        if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Failure|Interrupt)\b(:|$)", line):
            return line[:500]
    return lines[-1][:500] if lines else "(empty log)"


def _builtin_registry_names() -> dict[str, set[str]]:
    """Names in the installed evals registry (and ~/.evals), read from its YAML without importing evals."""
    names: dict[str, set[str]] = {"evals": set(), "eval_sets": set()}
    spec = importlib.util.find_spec("evals")
    roots = [Path.home() / ".evals"]
    if spec and spec.origin:
        roots.insert(0, Path(spec.origin).parent / "registry")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    for root in roots:
        for kind in names:
            for f in sorted((root / kind).glob("*.yaml")) if (root / kind).is_dir() else []:
                try:
                    data = yaml.load(f.read_text(encoding="utf-8"), Loader=loader)
                except yaml.YAMLError:
                    continue  # evals itself would fail on it; not ours to report here
                if isinstance(data, dict):
                    names[kind] |= set(data)
    return names


def write_json(path: Path, data: Any) -> None:
    """Written whole or not at all: a later run decides from it whether to reuse a record."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)


def write_yaml(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path

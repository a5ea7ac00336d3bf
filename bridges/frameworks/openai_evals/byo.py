"""A team's own OpenAI evals registry, run as written: `frameworks.openai_evals.registries: [PATH]` and
`evals: [eval or eval-set names]`.

Their eval classes, their `modelgraded/` specs (and evals' built-in ones such as `fact`), their
`eval_sets/` are used as they are; benchbridge adds only a registry of completion functions
(`completion_fns/<model>.yaml`, `bb-<model>`) in the run folder, so oaieval is called as the team
would call it by hand, once per (model, eval): `oaieval bb-<model>[,bb-<grader>] <eval>
--registry_path <theirs>... --registry_path <ours> --record_path ...`. A model-graded eval gets the
configured grader as its last completion function. Records are read with `benchbridge collect`'s
reader of evals record logs (benchmark = the eval's base name, metric = `<split>_<report key>`).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from bridges._errors import BenchbridgeError, did_you_mean
from bridges.datasets import Dataset
from bridges.models import ModelSpec
from bridges.records import Record, Sample, failure

if TYPE_CHECKING:
    from bridges.frameworks.openai_evals.bridge import OpenAIEvalsBridge


@dataclass(frozen=True)
class RegistryEval:
    name: str  # as the registry names it (an alias such as `capitals.match`, or a full id)
    registry: Path
    model_graded: bool


def _yaml_files(folder: Path) -> list[Path]:
    return sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]) if folder.is_dir() else []


def _load(path: Path, key: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8-sig"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise BenchbridgeError(f"{path}{line}: {key}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    return data if isinstance(data, dict) else {}


def read_registries(paths: list[Path], key: str) -> tuple[dict[str, RegistryEval], dict[str, list[str]]]:
    """Every eval (by each name it can be called by) and eval set the registries define."""
    evals: dict[str, RegistryEval] = {}
    sets: dict[str, list[str]] = {}
    for i, root in enumerate(paths):
        where = f"{key}.registries[{i}]"
        if not (root / "evals").is_dir():
            raise BenchbridgeError(
                f"{where}: {root}: no evals/ folder; give the registry folder that holds evals/*.yaml "
                "(with data/, modelgraded/, eval_sets/ beside it)"
            )
        entries: dict[str, Any] = {}
        for f in _yaml_files(root / "evals"):
            entries.update({str(k): v for k, v in _load(f, where).items() if isinstance(v, dict)})
        for name, entry in entries.items():
            target, seen = entry, {name}
            while "id" in target and str(target["id"]) in entries and str(target["id"]) not in seen:
                seen.add(str(target["id"]))
                target = entries[str(target["id"])]
            cls = str(target.get("class", ""))
            args = target.get("args") or {}
            graded = "modelgraded" in cls or "modelgraded_spec" in args
            evals[name] = RegistryEval(name, root, graded)
        for f in _yaml_files(root / "eval_sets"):
            for name, entry in _load(f, where).items():
                if isinstance(entry, dict) and isinstance(entry.get("evals"), list):
                    sets[str(name)] = [str(e) for e in entry["evals"]]
    return evals, sets


def pick_evals(
    names: list[str] | None, evals: dict[str, RegistryEval], sets: dict[str, list[str]], key: str
) -> list[RegistryEval]:
    """The evals named (an eval set is its evals), in order, each once; none named: every eval set's
    evals, else every eval the registries define by its shortest name."""
    if not names:
        names = list(sets) or sorted({min((n for n in evals if evals[n] == e), key=len) for e in evals.values()})
    picked: dict[str, RegistryEval] = {}
    for i, name in enumerate(names):
        members = sets.get(name, [name])
        for member in members:
            if member not in evals:
                hint = did_you_mean(member, [*evals, *sets])
                within = f" (in eval set {name!r})" if name in sets else ""
                raise BenchbridgeError(
                    f"{key}.evals[{i}]: {member!r}{within} is no eval or eval set of the registries; {hint}"
                    f"they define {', '.join(sorted([*sets, *evals])[:20])}"
                )
            picked.setdefault(member, evals[member])
    return list(picked.values())


@dataclass(frozen=True)
class ByoJob:
    model: ModelSpec
    grader: ModelSpec | None
    eval: RegistryEval

    @property
    def completion_fns(self) -> str:
        from bridges.frameworks.openai_evals.bridge import FN_PREFIX

        return ",".join(FN_PREFIX + m.name for m in [self.model, *([self.grader] if self.grader else [])])

    def record_path(self, out_dir: Path) -> Path:
        return out_dir / "records" / self.model.name / f"{self.eval.name}.jsonl"

    def log_path(self, out_dir: Path) -> Path:
        return out_dir / "logs" / self.model.name / f"{self.eval.name}.log"


class UserRegistries:
    """What the bridge does when `registries` is set: plan, prepare, execute and collect their evals."""

    def __init__(
        self,
        bridge: OpenAIEvalsBridge,
        key: str,
        imported: tuple[list[Path], list[str], dict[str, str]] | None = None,
    ) -> None:
        self.bridge = bridge
        opts = bridge.opts
        # `imported`: the registries datasets were imported from, their evals and eval -> dataset name
        self.paths = imported[0] if imported else [bridge.config.resolve(p) for p in opts.registries or []]
        self.benchmarks = imported[2] if imported else {}
        evals, sets = read_registries(self.paths, key)
        self.evals = pick_evals(imported[1] if imported else opts.evals, evals, sets, key)
        self.grader = bridge.config.model(opts.grader, f"frameworks.{bridge.name}.grader") if opts.grader else None
        graded = [e.name for e in self.evals if e.model_graded]
        if graded and self.grader is None:
            raise BenchbridgeError(
                f"{key}.grader: required for the registry's model-graded eval(s) {', '.join(graded)} "
                f"(name one of the config's models: {', '.join(m.name for m in bridge.config.models)})"
            )
        if opts.models is not None:
            self.candidates = [
                bridge.config.model(n, f"frameworks.{bridge.name}.models[{i}]") for i, n in enumerate(opts.models)
            ]
        else:
            self.candidates = [m for m in bridge.config.models if self.grader is None or m.name != self.grader.name]
        if not self.candidates:
            raise BenchbridgeError(f"{key}.models: no model to evaluate (the only model is the grader)")

    def jobs(self) -> list[ByoJob]:
        return [ByoJob(m, self.grader if e.model_graded else None, e) for m in self.candidates for e in self.evals]

    def prepare(self, out_dir: Path) -> list[Path]:
        """Our completion functions as a registry beside theirs, and the by-hand commands."""
        from bridges.frameworks.openai_evals.bridge import COMPLETION_FN_CLASS, FN_PREFIX, write_yaml

        written = []
        for model in self.bridge.config.models:
            entry = {FN_PREFIX + model.name: {"class": COMPLETION_FN_CLASS, "args": {"model": model.public_dict()}}}
            written.append(write_yaml(out_dir / "completion_fns" / f"{model.name}.yaml", entry))
        registries = " ".join(f"--registry_path {p}" for p in [*self.paths, out_dir.resolve()])
        lines = [
            "# Your OpenAI evals registries, run as written",
            "",
            "benchbridge adds only `completion_fns/` here (its models as `bb-<model>`). By hand, one eval:",
            "",
            "```sh",
            'export OPENAI_API_KEY="${OPENAI_API_KEY:-dummy}" USE_TF=0',
            *(f"oaieval {job.completion_fns} {job.eval.name} {registries}" for job in self.jobs()),
            "```",
            "",
        ]
        readme = out_dir / "README.md"
        readme.write_text("\n".join(lines), encoding="utf-8")
        return [*written, readme]

    def execute(self, out_dir: Path) -> None:
        from concurrent.futures import ThreadPoolExecutor

        from bridges.frameworks.openai_evals.bridge import last_error_line, read_record_file, write_json
        from bridges.frameworks.processes import run_child
        from bridges.secrets import scrub_file, secret_values, spec_secret_names

        bridge = self.bridge
        env = bridge._environment()
        secrets = secret_values(spec_secret_names(bridge.config.models))

        def run_one(job: ByoJob) -> None:
            record, log = job.record_path(out_dir), job.log_path(out_dir)
            for p in (record, log):
                p.parent.mkdir(parents=True, exist_ok=True)
            record.unlink(missing_ok=True)
            cmd = [str(bridge.oaieval), job.completion_fns, job.eval.name]
            for path in [*self.paths, out_dir]:
                cmd += ["--registry_path", str(path)]
            cmd += ["--record_path", str(record), "--seed", str(bridge.config.cfg.seed)]
            if bridge.max_samples:
                cmd += ["--max_samples", str(bridge.max_samples)]
            bridge.ctx.progress(f"[{bridge.name}] {job.model.name} {job.eval.name}: running")
            started = time.monotonic()
            result = run_child(cmd, log=log, env=env, timeout=bridge.opts.eval_timeout_s)
            for path in (log, record):
                scrub_file(path, secrets)
            error = None
            if result.timed_out:
                error = f"oaieval timed out after {bridge.opts.eval_timeout_s:g} s (log: {log})"
            elif result.returncode != 0:
                error = f"oaieval exited with code {result.returncode}: {last_error_line(log)} (log: {log})"
            elif read_record_file(record).final_report is None:
                error = f"oaieval wrote no final_report to {record} (log: {log})"
            seconds = round(time.monotonic() - started, 2)
            meta = {"eval": job.eval.name, "command": cmd, "returncode": result.returncode, "error": error}
            write_json(record.with_name(f"{job.eval.name}.meta.json"), {**meta, "seconds": seconds})

        with ThreadPoolExecutor(max(1, min(bridge.opts.parallel, len(self.jobs())))) as pool:
            list(pool.map(run_one, self.jobs()))

    def _read(self, out_dir: Path) -> tuple[list[Record], list[Sample]]:
        import json

        from bridges.collect import evals_report
        from bridges.frameworks.openai_evals.bridge import read_record_file

        bridge = self.bridge
        records: list[Record] = []
        finished: dict[str, list[Path]] = {}
        for job in self.jobs():
            record = job.record_path(out_dir)
            meta_path = record.with_name(f"{job.eval.name}.meta.json")
            meta = json.loads(meta_path.read_text("utf-8")) if meta_path.is_file() else {}
            if meta.get("error") or read_record_file(record).final_report is None:
                error = meta.get("error") or f"{record}: no record with a final_report (the eval did not run)"
                records.append(
                    failure(
                        run_id=bridge.ctx.run_id,
                        model=job.model.name,
                        framework=bridge.name,
                        framework_version=bridge.version(),
                        benchmark=self.benchmarks.get(job.eval.name, job.eval.name.split(".")[0]),
                        error=error,
                        judge=job.grader.name if job.grader else None,
                        config_hash=bridge.ctx.config_hash,
                        extra={"eval": job.eval.name, "registry": str(job.eval.registry)},
                    )
                )
                continue
            report = evals_report([record], record, job.model.name)
            judge = job.grader.name if job.grader else None
            for fields in report.records:
                extra = {**fields.get("extra", {}), "registry": str(job.eval.registry)}
                benchmark = self.benchmarks.get(job.eval.name, fields["benchmark"])
                records.append(bridge.record(**{**fields, "benchmark": benchmark, "judge": judge, "extra": extra}))
            finished.setdefault(job.model.name, []).append(record)
        samples: list[Sample] = []
        for model, files in finished.items():  # one row per sample with every eval's scores
            for s in evals_report(files, out_dir, model).samples:
                graded = s.judge.model_copy(update={"model": self.grader.name}) if s.judge and self.grader else s.judge
                benchmark = next((d for e, d in self.benchmarks.items() if e.split(".")[0] == s.benchmark), s.benchmark)
                update = {"run_id": bridge.ctx.run_id, "judge": graded, "benchmark": benchmark}
                samples.append(s.model_copy(update=update))
        return records, samples

    def collect(self, out_dir: Path) -> list[Record]:
        return self._read(out_dir)[0]

    def collect_samples(self, out_dir: Path) -> list[Sample]:
        return self._read(out_dir)[1]


_IMPORTED = re.compile(r"^OpenAI evals registry (.+): data/(.+)$")  # the card source the importer writes


def imported_registries(datasets: list[Dataset], opts: Any) -> tuple[list[Path], list[str], dict[str, str]] | None:
    """An imported registry keeps its evals: when every dataset came from `datasets import --from
    openai-evals REGISTRY` (card source and `openai-evals:eval=` tags), that registry is still there and
    the config names no methods, the registries' own evals run (their classes and grader specs)."""
    if opts.methods is not None or opts.datasets:
        return None
    paths: list[Path] = []
    names: list[str] = []
    benchmarks: dict[str, str] = {}
    for ds in datasets:
        found = _IMPORTED.match(ds.card.source)
        evals = [t.split("=", 1)[1] for t in ds.card.tags if t.startswith("openai-evals:eval=")]
        if not found or not evals or not (Path(found.group(1)) / "evals").is_dir():
            return None
        root = Path(found.group(1))
        if root not in paths:
            paths.append(root)
        for name in evals:
            names.append(name)
            benchmarks[name] = ds.name
    return (paths, names, benchmarks) if paths else None

"""The `scoring` framework: benchbridge generates through its model layer and scores with its own scorers.

It is a bridge like the four frameworks (registered in FRAMEWORKS), so the runner, the results store,
the board, the samples and the intervals need no special case: `prepare` writes `plan.json` (what will be
asked and how it is scored), `execute` asks each evaluated model (response cache, limits) and scores,
writing `responses.jsonl` and `results.json`, and `collect`/`collect_samples` read `results.json`.

    frameworks:
      scoring:
        models: [smollm2]            # the evaluated models (default: every model no scorer uses as judge)
        samples_per_problem: 3       # answers per code problem (pass@k needs k <= this)
        code_generation: {temperature: 0.8, max_new_tokens: 256}
        scorers:
          - rouge
          - {name: judge, model: smollm2-judge, rubric: rubrics/mine.yaml}
          - {name: pass_at_k, k: [1, 3]}
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bridges._errors import BenchbridgeError
from bridges._files import loc_text
from bridges.datasets import Dataset
from bridges.frameworks import Bridge, model_messages
from bridges.records import Judgement, Record, Sample, failure
from bridges.scoring._base import SCORERS, Item, Score, Scorer

CODE_INSTRUCTION = (
    "Complete the following Python function. Answer with the whole function in one ```python code block.\n\n"
)
RESULTS_FILE = "results.json"
RESPONSES_FILE = "responses.jsonl"
PLAN_FILE = "plan.json"


class CodeGeneration(BaseModel):
    model_config = ConfigDict(extra="forbid")
    temperature: float = Field(0.8, ge=0)  # n distinct draws per problem need sampling
    max_new_tokens: int = Field(256, ge=1)


class ScoringOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    models: list[str] | None = None
    samples_per_problem: int = Field(3, ge=1)
    code_generation: CodeGeneration = Field(default_factory=CodeGeneration)
    scorers: list[str | dict[str, Any]] = Field(min_length=1)


def scorer_class(name: str, key: str) -> type[Scorer]:
    """A registered scorer by name, or a user's `package.module:Class` (a Scorer subclass) imported now."""
    if ":" not in name:
        return SCORERS.get(name, key=key)
    from bridges._registry import import_target

    cls = import_target(name)
    if not (isinstance(cls, type) and issubclass(cls, Scorer)):
        raise BenchbridgeError(f"{key}: {name!r} is not a Scorer subclass (bridges.scoring.Scorer)")
    return cls


def build_scorers(config: Any, entries: Sequence[str | dict[str, Any]], only: Sequence[str] = ()) -> list[Scorer]:
    """The configured scorers (of `only`, when given), each with its options checked: an unknown scorer or a
    bad option is one line naming the config key."""
    out = []
    names = []
    for i, entry in enumerate(entries):
        raw = {"name": entry} if isinstance(entry, str) else dict(entry)
        key = f"frameworks.scoring.scorers.{i}"
        at = config.where("frameworks", "scoring", "scorers", i)
        name = raw.pop("name", None)
        if not isinstance(name, str):
            raise BenchbridgeError(f"{at}: {key}.name: missing (a scorer: {', '.join(SCORERS.names())})")
        cls = scorer_class(name, f"{at}: {key}.name")
        names.append(name)
        if only and name not in only:
            continue
        try:
            options = cls.Options.model_validate(raw)
        except ValidationError as exc:
            err = exc.errors()[0]
            raise BenchbridgeError(f"{at}: {key}.{loc_text(err['loc'])}: {err['msg']}") from None
        out.append(cls(options, config, ("frameworks", "scoring", "scorers", i)))
    for name in only:
        if name not in names:
            SCORERS.get(name, key="--scorer")  # unknown anywhere: the registry's message with a suggestion
            raise BenchbridgeError(
                f"{config.path}: --scorer {name}: not configured under frameworks.scoring.scorers "
                f"(configured: {', '.join(names)})"
            )
    return out


def items_from(dataset: Dataset, outputs: dict[str, list[str]]) -> list[Item]:
    """The dataset's samples with the answers given for them (by sample id); samples without answers are left out."""
    items = []
    language = "zh" if dataset.card.language.startswith("zh") else dataset.card.language
    for s in dataset.samples:
        if s.id not in outputs:
            continue
        if dataset.kind == "code":
            code = s.model_dump(include={"prompt", "entry_point", "tests", "setup"})
            messages = [{"role": "user", "content": CODE_INSTRUCTION + s.prompt}]  # type: ignore[union-attr]
            items.append(Item(s.id, "code", messages, outputs[s.id], [], "code", language, code))
        else:
            messages = [m.model_dump() for m in s.messages]  # type: ignore[union-attr]
            items.append(
                Item(s.id, "gen", messages, outputs[s.id], list(s.references), s.task, language)  # type: ignore[union-attr]
            )
    return items


def score_items(scorers: Sequence[Scorer], items: list[Item]) -> tuple[dict[str, list[Score]], dict[str, str]]:
    """Every applicable scorer's scores of `items` (by scorer name), and the error of each scorer that failed."""
    scores: dict[str, list[Score]] = {}
    errors: dict[str, str] = {}
    kind = items[0].kind if items else ""
    for sc in scorers:
        if kind not in sc.kinds:
            continue
        try:
            scores[sc.name] = sc.score(items)
        except BenchbridgeError as exc:  # e.g. the judge's upstream refused: that scorer's cells fail
            errors[sc.name] = str(exc)
    return scores, errors


def records_and_samples(
    bridge: Bridge,
    scorers: Sequence[Scorer],
    model: str,
    dataset: str,
    items: list[Item],
    scores: dict[str, list[Score]],
    errors: dict[str, str],
    system_prompt: str | None,
) -> tuple[list[Record], list[Sample]]:
    """Records (one per metric: the mean of its valid per-sample values, invalid counted apart) and one
    sample row per item carrying every metric's 0-1 score (value / scale), so intervals come from them."""
    records: list[Record] = []
    per_item: list[dict[str, Any]] = [{"scores": {}, "raw": {}, "invalid": False, "judge": None} for _ in items]
    kind = items[0].kind if items else ""
    for sc in scorers:
        if kind not in sc.kinds:
            continue
        version = f"{bridge.version()} {sc.identity()}"
        extra_base = {"scorer": sc.identity()}

        def failed(metric: str, error: str, extra: dict[str, Any], sc: Scorer = sc, version: str = version) -> Record:
            return failure(
                run_id=bridge.ctx.run_id,
                model=model,
                framework=bridge.name,
                framework_version=version,
                benchmark=dataset,
                error=f"scorer {sc.name}: {error}",
                metric=metric,
                judge=sc.judge(),
                config_hash=bridge.ctx.config_hash,
                extra=extra,
            )

        if sc.name in errors:
            records += [failed(metric.name, errors[sc.name], extra_base) for metric in sc.metrics()]
            continue
        got = scores.get(sc.name, [])
        for metric in sc.metrics():
            values = [s.values[metric.name] for s in got if metric.name in s.values]
            if not values:
                continue  # e.g. a pairwise metric no task of this dataset uses
            valid = [v for v in values if v is not None]
            n_invalid = len(values) - len(valid)
            extra = {**extra_base, **({"n_invalid": n_invalid, "n_graded": len(values)} if sc.judge() else {})}
            if not valid:
                first = next((s.reasoning for s in got if s.invalid and s.reasoning), "") or ""
                why = (
                    f"no parsable verdict in {len(values)}/{len(values)} answers (invalid, not 0); the rubric "
                    f"must ask for the format it parses. First reply: {first[:300]!r}"
                )
                records.append(failed(metric.name, why, extra))
                continue
            records.append(
                bridge.record(
                    model=model,
                    benchmark=dataset,
                    metric=metric.name,
                    value=sum(valid) / len(valid),
                    scale=metric.scale,
                    higher_is_better=metric.higher_is_better,
                    primary=metric.primary,
                    n_samples=len(valid),
                    judge=sc.judge(),
                    framework_version=version,
                    extra=extra,
                )
            )
            for row, s in zip(per_item, got, strict=True):
                if metric.name in s.values:
                    v = s.values[metric.name]
                    row["scores"][metric.name] = None if v is None else v / metric.scale
                    row["raw"][metric.name] = v
        for row, s in zip(per_item, got, strict=True):
            row["invalid"] = row["invalid"] or s.invalid
            if sc.judge():
                row["judge"] = Judgement(model=str(sc.judge()), verdict=s.verdict, reasoning=s.reasoning)
            if s.extra:
                row.setdefault("scorer_extra", {})[sc.name] = s.extra
    samples = [
        Sample(
            run_id=bridge.ctx.run_id,
            model=model,
            framework=bridge.name,
            benchmark=dataset,
            sample_id=item.sample_id,
            messages=model_messages(item.messages, system_prompt),
            output=item.outputs[0] if item.outputs else None,
            references=item.references,
            scores=row["scores"],
            invalid=row["invalid"],
            judge=row["judge"],
            extra={
                "outputs": item.outputs,
                "task": item.task,
                "raw": row["raw"],
                **({"scorers": row["scorer_extra"]} if "scorer_extra" in row else {}),
            },
        )
        for item, row in zip(items, per_item, strict=True)
    ]
    return records, samples


class ScoringBridge(Bridge):
    name: ClassVar[str] = "scoring"
    distribution: ClassVar[str] = "benchbridge"
    kinds: ClassVar[frozenset[str]] = frozenset({"gen", "code"})
    Options: ClassVar[type[BaseModel]] = ScoringOptions

    def __init__(self, ctx: Any, only_scorers: Sequence[str] = ()) -> None:
        super().__init__(ctx)
        opts: ScoringOptions = self.options  # type: ignore[assignment]
        self.scorers = build_scorers(self.config, opts.scorers, only_scorers)
        judges = {sc.judge() for sc in self.scorers if sc.judge()}
        if opts.models is not None:
            self.models = [self.config.model(n, f"frameworks.scoring.models[{i}]") for i, n in enumerate(opts.models)]
        else:
            self.models = [m for m in self.config.models if m.name not in judges]
        if not self.models:
            raise BenchbridgeError(
                f"{self.config.where('frameworks', 'scoring')}: frameworks.scoring: no model to "
                "evaluate (every model is a judge); list them in frameworks.scoring.models"
            )
        self.datasets = self.config.datasets_for(self.name, self.kinds)
        for i, sc in enumerate(self.scorers):
            if not any(ds.kind in sc.kinds for ds in self.datasets):
                raise BenchbridgeError(
                    f"{self.config.where('frameworks', 'scoring', 'scorers', i)}: frameworks.scoring.scorers.{i}: "
                    f"{sc.name} scores {'/'.join(sorted(sc.kinds))} datasets and the config has none"
                )
        for ds in self.datasets:
            if ds.kind == "code":
                for sc in self.scorers:
                    k = max(getattr(sc.options, "k", [0]))
                    if k > opts.samples_per_problem:
                        raise BenchbridgeError(
                            f"{self.config.where('frameworks', 'scoring')}: frameworks.scoring.samples_per_problem: "
                            f"{opts.samples_per_problem} answers cannot estimate pass@{k}; raise it to {k} or more"
                        )

    @classmethod
    def version(cls) -> str:
        import importlib.metadata

        try:
            return importlib.metadata.version("benchbridge")
        except importlib.metadata.PackageNotFoundError:
            return "dev"

    def prepare(self, out_dir: Path) -> list[Path]:
        out_dir.mkdir(parents=True, exist_ok=True)
        opts: ScoringOptions = self.options  # type: ignore[assignment]
        plan = {
            "models": [m.name for m in self.models],
            "datasets": [{"name": ds.name, "kind": ds.kind, "path": str(ds.path)} for ds in self.datasets],
            "samples_per_problem": opts.samples_per_problem,
            "code_generation": opts.code_generation.model_dump(),
            "scorers": [
                {"name": sc.name, "identity": sc.identity(), "options": sc.options.model_dump(mode="json")}
                for sc in self.scorers
            ],
            "by_hand": f"benchbridge run {self.config.path} --only scoring",
        }
        path = out_dir / PLAN_FILE
        path.write_text(json.dumps(plan, indent=2, ensure_ascii=False), encoding="utf-8")
        return [path]

    def generate(self, dataset: Dataset, spec: Any) -> dict[str, list[str]]:
        """The evaluated model's answers, by sample id (n per code problem), through the model layer."""
        from bridges.models import ChatRequest, as_messages, get_model

        opts: ScoringOptions = self.options  # type: ignore[assignment]
        ids: list[str] = []
        requests = []
        for s in dataset.samples[: self.config.cfg.max_samples]:  # the config's max_samples, like every framework
            if dataset.kind == "code":
                msg = as_messages([{"role": "user", "content": CODE_INSTRUCTION + s.prompt}])  # type: ignore[union-attr]
                gen = opts.code_generation
                for _ in range(opts.samples_per_problem):  # identical unseeded sampled requests: n draws
                    ids.append(s.id)
                    requests.append(ChatRequest(msg, max_new_tokens=gen.max_new_tokens, temperature=gen.temperature))
            else:
                ids.append(s.id)
                requests.append(ChatRequest(as_messages([m.model_dump() for m in s.messages])))  # type: ignore[union-attr]
        answers = get_model(spec).generate(requests)
        out: dict[str, list[str]] = {}
        for sid, resp in zip(ids, answers, strict=True):
            out.setdefault(sid, []).append(resp.text)
        return out

    def execute(self, out_dir: Path) -> None:
        records: list[Record] = []
        samples: list[Sample] = []
        with (out_dir / RESPONSES_FILE).open("w", encoding="utf-8") as fh:
            for spec in self.models:
                for ds in self.datasets:
                    self.ctx.progress(f"[{self.name}] {spec.name} on {ds.name}: generating")
                    outputs = self.generate(ds, spec)
                    for sid, outs in outputs.items():
                        fh.write(
                            json.dumps(
                                {"model": spec.name, "dataset": ds.name, "id": sid, "outputs": outs}, ensure_ascii=False
                            )
                            + "\n"
                        )
                    items = items_from(ds, outputs)
                    self.ctx.progress(f"[{self.name}] {spec.name} on {ds.name}: scoring")
                    scores, errors = score_items(self.scorers, items)
                    recs, smps = records_and_samples(
                        self,
                        self.scorers,
                        spec.name,
                        ds.name,
                        items,
                        scores,
                        errors,
                        getattr(spec, "system_prompt", None),
                    )
                    records += recs
                    samples += smps
        result = {
            "records": [r.model_dump(mode="json") for r in records],
            "samples": [s.model_dump(mode="json") for s in samples],
        }
        (out_dir / RESULTS_FILE).write_text(json.dumps(result, ensure_ascii=False), encoding="utf-8")

    def _results(self, out_dir: Path) -> dict[str, Any]:
        path = out_dir / RESULTS_FILE
        try:
            return json.loads(path.read_text("utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise BenchbridgeError(f"{path}: cannot read the scoring results: {exc}") from None

    def collect(self, out_dir: Path) -> list[Record]:
        return [Record.model_validate(r) for r in self._results(out_dir)["records"]]

    def collect_samples(self, out_dir: Path) -> list[Sample]:
        return [Sample.model_validate(s) for s in self._results(out_dir)["samples"]]

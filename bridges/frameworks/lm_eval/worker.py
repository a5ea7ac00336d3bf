"""Runs one lm-eval job (one model, its tasks) the way the `lm_eval` CLI does, and saves its files.

`bridges.frameworks.lm_eval.bridge` writes a job JSON per model and runs
``python -m bridges.frameworks.lm_eval.worker JOB`` (a subprocess, so a crash or a big model's memory
stays out of the caller). This module imports lm-eval at its top: it is only imported in that
process (or when a caller asks for in-process).

It also registers the ``benchbridge-python`` lm-eval model: a `python` model spec answered through
the project's model layer (`bridges.models.get_model`). Such a model generates text but cannot
score loglikelihoods, so `multiple_choice` tasks are not given to it (see `cannot_run`).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("USE_TF", "0")  # evals installs tensorflow; transformers would import it (~8 s)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import lm_eval.models  # noqa: E402, F401  (lm-eval's own models, registered lazily only into an empty registry)
from lm_eval import simple_evaluate  # noqa: E402
from lm_eval.api.group import Group  # noqa: E402
from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.api.model import LM  # noqa: E402
from lm_eval.api.registry import register_model  # noqa: E402
from lm_eval.api.task import Task  # noqa: E402
from lm_eval.loggers import EvaluationTracker  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402
from lm_eval.utils import handle_non_serializable  # noqa: E402

from bridges.frameworks.serving import model_for  # noqa: E402
from bridges.models import ChatRequest, as_messages, parse_model_spec  # noqa: E402

PYTHON_MODEL = "benchbridge-python"
SKIPPED_FILE = "skipped.json"


@register_model(PYTHON_MODEL)
class BenchbridgePythonLM(LM):
    """An lm-eval model whose generations come from `get_model(spec)` (a `python` model spec).

    With ``apply_chat_template`` lm-eval hands us the chat (system prompt, few-shot turns, question)
    as JSON, like its API models do, so the model layer receives real messages, not a flattened prompt.
    """

    def __init__(self, spec: str | dict[str, Any], batch_size: int | str | None = None, **_: Any) -> None:
        super().__init__()
        raw = json.loads(spec) if isinstance(spec, str) else spec
        self.spec = parse_model_spec(raw, where="lm-eval model_args.spec")
        self.model = model_for(self.spec)  # the run's served model (loaded once per run), or the layer here

    @property
    def tokenizer_name(self) -> str:
        return f"{PYTHON_MODEL}-{self.spec.identity()}"

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        return "benchbridge: JSON chat messages, answered through the model layer"

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        # A system prompt is the task description, which ends in a blank line for plain-text prompts.
        messages = [{**m, "content": m["content"].rstrip()} if m["role"] == "system" else m for m in chat_history]
        return json.dumps(messages, ensure_ascii=False)

    @staticmethod
    def _messages(context: str) -> list[dict[str, str]] | str:
        if context.startswith("[{"):
            return json.loads(context)
        return context  # no chat template applied: one user prompt

    def generate_until(self, requests: list[Instance], disable_tqdm: bool = False) -> list[str]:
        chat_requests = []
        for req in requests:
            context, gen_kwargs = req.args
            until = gen_kwargs.get("until") or []
            max_new = gen_kwargs.get("max_gen_toks")
            chat_requests.append(
                ChatRequest(
                    as_messages(self._messages(context)),
                    max_new_tokens=int(max_new) if max_new else None,
                    temperature=float(gen_kwargs["temperature"]) if "temperature" in gen_kwargs else None,
                    stop=tuple([until] if isinstance(until, str) else until),
                )
            )
        answers = [r.text for r in self.model.generate(chat_requests)]
        for req, answer in zip(requests, answers, strict=True):
            self.cache_hook.add_partial("generate_until", req.args, answer)
        return answers

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        raise NotImplementedError(
            f"a `python` model ({self.spec.name}) only generates text; it cannot score loglikelihoods "
            "(multiple_choice tasks). benchbridge runs its mcq datasets as the generate variant (<task>_gen)."
        )

    def loglikelihood_rolling(self, requests: list[Instance]) -> list[float]:
        raise NotImplementedError(f"a `python` model ({self.spec.name}) cannot score loglikelihoods")


def _leaf_tasks(objs: list[Task | Group]) -> list[Task]:
    return [t for o in objs for t in (o.get_all_tasks() if isinstance(o, Group) else [o])]


def cannot_run(objs: list[Task | Group], can_score: bool) -> str | None:
    """Why a model that cannot score loglikelihoods cannot run `objs`, or None when it can."""
    if can_score:
        return None
    scoring = sorted(
        {f"{t.task_name} ({t.OUTPUT_TYPE})" for t in _leaf_tasks(objs) if t.OUTPUT_TYPE != "generate_until"}
    )
    if not scoring:
        return None
    return (
        "this model only generates text and cannot score loglikelihoods, which lm-eval task(s) "
        f"{', '.join(scoring[:5])} need"
    )


def load_tasks(job: dict[str, Any], manager: TaskManager) -> tuple[list[Task | Group], dict[str, str]]:
    """Loads each requested task/group; a missing built-in dataset or unknown name becomes a skip reason."""
    loaded: list[Task | Group] = []
    skipped: dict[str, str] = {}
    for name in job["tasks"]:
        if name not in manager.task_index:
            skipped[name] = f"unknown lm-eval task, group or tag {name!r}"
            continue
        try:
            found = manager.load([name])
        except (OSError, ValueError) as exc:  # datasets: DatasetNotFoundError, ConnectionError (offline)
            skipped[name] = (
                f"lm-eval task {name!r} could not load its data ({type(exc).__name__}: {str(exc)[:300]}). "
                "Runs are offline (HF_DATASETS_OFFLINE=1): a built-in task's dataset must already be in the "
                "Hugging Face datasets cache (HF_DATASETS_CACHE, default ~/.cache/huggingface/datasets); fill it "
                f"where there is network (`lm_eval run --model dummy --tasks {name} --limit 1`) and copy it here"
            )
            continue
        groups = found.get("groups", {})
        top: list[Task | Group] = [groups[name]] if name in groups else list(found["tasks"].values())
        reason = cannot_run(top, job["can_score"])
        if reason:
            skipped[name] = reason
            continue
        loaded.extend(top)
    return loaded, skipped


def run_job(job: dict[str, Any]) -> Path | None:
    """Runs the job; writes lm-eval's results and samples files and `skipped.json`; returns the results file."""
    output = Path(job["output_path"])
    output.parent.mkdir(parents=True, exist_ok=True)
    # our task folder, then the team's own (frameworks.lm_eval.include_paths), as repeated --include_path
    include = [job["include_path"], *job.get("include_paths", [])]
    manager = TaskManager(include_path=include, include_defaults=job["include_defaults"])
    tasks, skipped = load_tasks(job, manager)
    (output.parent / SKIPPED_FILE).write_text(json.dumps(skipped, indent=2, ensure_ascii=False), "utf-8")
    if not tasks:
        return None
    seed = job["seed"]
    tracker = EvaluationTracker(output_path=str(output))
    results = simple_evaluate(
        model=job["model"],
        model_args=job["model_args"],
        tasks=tasks,
        batch_size=job["batch_size"],
        device=job["device"],
        limit=job["limit"],
        log_samples=job["log_samples"],
        evaluation_tracker=tracker,
        system_instruction=job["system_instruction"],
        apply_chat_template=job["apply_chat_template"],
        gen_kwargs=job["gen_kwargs"],
        task_manager=manager,
        random_seed=seed,
        numpy_random_seed=seed,
        torch_random_seed=seed,
        fewshot_random_seed=seed,
    )
    if results is None:
        raise RuntimeError("lm-eval returned no results")
    samples = results.pop("samples", None)
    before = set(output.parent.glob("results_*.json"))
    tracker.save_results_aggregated(results=results, samples=samples)
    if samples is not None:
        for task_name in results["configs"]:
            tracker.save_results_samples(task_name=task_name, samples=samples[task_name])
    written = sorted(set(output.parent.glob("results_*.json")) - before)
    if not written:  # lm-eval logs and swallows a failed save
        raise RuntimeError(f"lm-eval did not write its results file under {output.parent}")
    return written[-1]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m bridges.frameworks.lm_eval.worker JOB.json", file=sys.stderr)
        return 2
    written = run_job(json.loads(Path(args[0]).read_text(encoding="utf-8")))  # an exception exits 1
    if written is not None:
        results = json.loads(written.read_text(encoding="utf-8"))["results"]
        print(
            f"results: {written}\n" + json.dumps(results, indent=1, default=handle_non_serializable, ensure_ascii=False)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

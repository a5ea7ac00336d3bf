"""Local vs Ray executor: wall time for 8 and 32 units of 2 s each, and what Ray adds per unit.

    .venv/bin/python benchmarks/executor_scale.py [--units 8,32] [--unit-s 2] [--nodes 2] [--slots 4]

A unit is one framework x model of a suite: here `scale_probe`, a framework defined in this script (a
plain evaluator: it asks its model each of qa_capitals' 8 questions through benchbridge's model layer and
scores exact match), on `python` models of fixed latency (`tests/_executor_models.py`, asleep per prompt:
CPU-light), so the times show scheduling overhead and parallelism, not model compute. The response cache
is off: every unit asks its model for real.

- local: the `local` executor (one unit per framework: its models one after another, as benchbridge
  always ran them), on this machine.
- ray: the `ray` executor on a local cluster of `--nodes` nodes x `--slots` CPUs (`ray start`, on
  loopback), after one warm-up suite (Ray starts its worker processes on first use).

Ideal for Ray = ceil(units / (nodes x slots)) x unit time; per-unit overhead = (wall - ideal) / waves,
the time Ray and benchbridge add to each unit (shipping it, serving its model in the worker, returning
and storing its records). Criteria (issue 16): per-unit overhead <= 0.5 s, 32 units <= 12 s.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]
os.environ.setdefault("USE_TF", "0")

from bridges import load_config, make_bridges, new_run_id  # noqa: E402
from bridges.executors import ExecutorSettings, make_executor  # noqa: E402
from bridges.executors.local_cluster import LocalRayCluster  # noqa: E402
from bridges.frameworks import FRAMEWORKS, Bridge  # noqa: E402
from bridges.models import ChatRequest, configure_cache  # noqa: E402
from bridges.records import Record  # noqa: E402

QA = ROOT / "custom_datasets" / "qa_capitals"


class ScaleProbe(Bridge):
    """A minimal real evaluator: each qa question asked of each model, exact match against the answers."""

    name = "scale_probe"
    distribution = "benchbridge"
    kinds = frozenset({"qa"})

    def prepare(self, out_dir: Path) -> list[Path]:
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / "questions.json"
        samples = [s for ds in self.config.datasets for s in ds.samples]
        questions = [{"id": s.id, "q": s.question, "answers": s.answers} for s in samples]
        path.write_text(json.dumps(questions), encoding="utf-8")
        return [path]

    def execute(self, out_dir: Path) -> None:
        from bridges.frameworks.serving import model_for

        questions = json.loads((out_dir / "questions.json").read_text(encoding="utf-8"))
        answers = {}
        for spec in self.config.models:
            model = model_for(spec)
            answers[spec.name] = [
                model.generate([ChatRequest((("user", q["q"]),), max_new_tokens=16)])[0].text for q in questions
            ]
        (out_dir / "answers.json").write_text(json.dumps(answers), encoding="utf-8")

    def collect(self, out_dir: Path) -> list[Record]:
        questions = json.loads((out_dir / "questions.json").read_text(encoding="utf-8"))
        answers = json.loads((out_dir / "answers.json").read_text(encoding="utf-8"))
        return [
            self.record(
                model=model,
                benchmark="qa_capitals",
                metric="exact_match",
                value=sum(a.strip() in q["answers"] for a, q in zip(got, questions, strict=True)) / len(questions),
                n_samples=len(questions),
                primary=True,
            )
            for model, got in answers.items()
        ]


FRAMEWORKS.register(ScaleProbe.name)(ScaleProbe)


def suite(folder: Path, units: int, unit_s: float) -> Path:
    latency = unit_s / 8  # 8 questions a unit
    lines = [f"name: scale{units}", "work_dir: runs", "models:"]
    for i in range(units):
        args = {"datasets": [str(QA)], "log": str(folder / "calls.jsonl"), "latency_s": latency, "tag": f"m{i}"}
        lines += [f"  - name: m{i}", "    kind: python", "    target: tests._executor_models:SlowKeyModel"]
        lines += ["    batch_size: 1", f"    args: {json.dumps(args)}"]
    lines += ["datasets:", f"  - path: {QA}", "frameworks:", "  scale_probe: {}"]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "run.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def timed(path: Path, settings: ExecutorSettings, parallel: int) -> tuple[float, int]:
    """Wall seconds of the executor on the suite (records stored by this process), and records stored."""
    from leaderboards.store import ResultsStore

    config = load_config(path)
    run_id = new_run_id()
    bridges = make_bridges(config, None, {"run_id": run_id, "config_hash": config.config_hash()})
    store = ResultsStore(config.results_db).open()
    t0 = time.monotonic()
    outcomes = make_executor(settings).run(bridges, store, config.work_dir / run_id, lambda m: None, parallel)
    wall = time.monotonic() - t0
    bad = [o.error for o in outcomes if o.status != "ok"]
    if bad:
        raise SystemExit(f"suite failed: {bad[0]}")
    return wall, sum(len(o.records) for o in outcomes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", default="8,32")
    parser.add_argument("--unit-s", type=float, default=2.0)
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--skip-local", action="store_true", help="Ray only (local takes units x unit-s)")
    args = parser.parse_args()
    counts = [int(n) for n in args.units.split(",")]
    sys.path[:0] = [str(ROOT)]  # tests._executor_models, for the driver's imports
    configure_cache(enabled=False)  # every unit asks its model: nothing answered from an earlier run
    slots = args.nodes * args.slots
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    with tempfile.TemporaryDirectory(prefix="bb-scale-") as tmp, LocalRayCluster([args.slots] * args.nodes) as cluster:
        ray_settings = ExecutorSettings(kind="ray", address=cluster.address)
        import ray

        ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
        try:
            timed(suite(Path(tmp) / "warm", slots, 0.2), ray_settings, slots)  # Ray starts its workers
            print(f"{'units':>5} {'executor':>8} {'wall s':>7} {'ideal s':>7} {'overhead/unit s':>15} records")
            for n in counts:
                for name, settings, parallel, ideal in (
                    ("local", ExecutorSettings(kind="local"), slots, n * args.unit_s),
                    ("ray", ray_settings, slots, math.ceil(n / slots) * args.unit_s),
                ):
                    if name == "local" and args.skip_local:
                        continue
                    wall, records = timed(suite(Path(tmp) / f"{name}{n}", n, args.unit_s), settings, parallel)
                    waves = n if name == "local" else math.ceil(n / slots)
                    over = (wall - ideal) / waves
                    print(f"{n:>5} {name:>8} {wall:>7.1f} {ideal:>7.1f} {over:>15.2f} {records}", flush=True)
        finally:
            ray.shutdown()
    print(f"load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

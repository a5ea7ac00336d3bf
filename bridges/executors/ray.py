"""The Ray executor: each framework x model unit is a Ray task, placed by Ray on any node of a cluster.

What travels and what stays:
- A task carries its unit (the loaded config cut to the unit's models, with every dataset's samples in
  it) through Ray's object store, so datasets need not be on the worker's disk. Files a config names by
  path (an `hf` model's folder, OpenCompass's `data_dir`) must be at the same path on every node (a
  shared file system), as must the response cache file when units are to share answers.
- A worker runs the framework in a temporary folder of its own, serving the unit's models itself (loaded
  once per unit), and returns the unit's records, per-sample rows and files (native reports and logs, as
  one tar archive). The driver alone writes them: the results store and `<run dir>/<framework>/<model>/`.
- The response cache is the same SQLite file for the driver and every worker (its path and the run's
  session go with the task): each answer is written the moment it arrives, so a unit lost with its node
  and run again elsewhere asks its models only what the lost attempt had not got. That holds for nodes
  sharing one machine's disk (the tests' cluster); SQLite's WAL must not live on a network file system,
  so on separate machines give each node a local `cache.path`: a unit rerun on another node then asks
  again what it had asked on the lost one (finished units are never rerun either way).
- A unit lost with its node or worker is run again by Ray on another node, up to `max_retries` times
  (system failures only: a framework's own failure is a stored result, never retried). Results are
  fetched and stored as each unit ends, so a finished unit is never asked for again when a node dies later.

Secrets are not shipped: a worker reads an `api_key_env` from its own environment or `.env`.
"""

from __future__ import annotations

import copy
import io
import json
import os
import shutil
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bridges._errors import BenchbridgeError
from bridges.executors import Executor, ExecutorSettings
from bridges.records import Record, Sample, clip_error, now_iso

if TYPE_CHECKING:
    from bridges._config import LoadedConfig
    from bridges._runner import FrameworkOutcome
    from bridges.frameworks import Bridge
    from leaderboards.store import ResultsStore

# The driver's variables a worker needs: the response cache's path and session, offline switches, threads.
# Never the run's own model endpoint (a worker serves its unit's models) and never a secret.
SHIPPED_PREFIXES = ("BENCHBRIDGE_CACHE", "BENCHBRIDGE_NO_CACHE", "HF_", "TRANSFORMERS_", "USE_TF")
# BENCHBRIDGE_ENGINE_KEY: the key of the run's vLLM/SGLang servers, made for the run (not a user's secret).
SHIPPED_NAMES = (
    *("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TOKENIZERS_PARALLELISM"),
    "BENCHBRIDGE_ENGINE_KEY",
)


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise BenchbridgeError(
            "executor ray: the ray package is not installed; pip install 'benchbridge[ray]' "
            "(scripts/setup.sh installs it)"
        ) from None
    return ray


@dataclass
class UnitJob:
    """One unit as it travels to a worker."""

    framework: str
    bridge_class: type[Bridge]  # by reference, or by value when defined in a script: a worker needs no registry
    label: str  # "<framework>" or "<framework>.<model>"
    folder: str  # its place under the run folder: "<framework>" or "<framework>/<model>"
    config: LoadedConfig  # cut to the unit's models
    run_id: str
    config_hash: str
    force: bool
    env: dict[str, str]
    import_paths: list[str]


@dataclass
class UnitResult:
    """What a worker returns: everything the driver stores, and the files it writes into the run folder."""

    manifest: dict[str, Any]
    records: list[Record]
    samples: list[Sample]
    status: str
    seconds: float
    error: str | None
    workdir: str  # the worker's folder for the unit, named in records' texts until relocated
    files: bytes  # tar of the unit's framework folder and its model loads log
    node: str = ""
    pid: int = 0


class _Collected:
    """The worker's stand-in for the results store: `run_framework` stores here, the driver stores for real."""

    def __init__(self) -> None:
        self.saved: tuple[dict[str, Any], list[Record], list[Sample]] | None = None

    def add_run(self, manifest: dict[str, Any], records: list[Record], samples: Sequence[Sample] = ()) -> int:
        self.saved = (manifest, list(records), list(samples))
        return 0


@contextmanager
def _environ(values: Mapping[str, str], unset: Sequence[str]) -> Iterator[None]:
    """`values` set and `unset` removed for the block (a worker process runs many units, one at a time)."""
    from bridges._parallel import scoped_environ

    with scoped_environ(values):
        removed = {name: os.environ.pop(name) for name in unset if name in os.environ}
        try:
            yield
        finally:
            os.environ.update(removed)


def run_unit(job: UnitJob) -> UnitResult:
    """Runs in a Ray worker: the unit's framework on its models, in a folder of its own."""
    from bridges._runner import run_framework
    from bridges.frameworks import RunContext
    from bridges.frameworks.serving import ENV_KEY, ENV_MODELS, ENV_URL, run_service
    from bridges.models import ENV_LOADS, LOADS_FILE, response_cache

    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="benchbridge-unit-"))
    saved_path = list(sys.path)
    sys.path[:0] = [p for p in job.import_paths if p not in sys.path]
    env = {**job.env, ENV_LOADS: str(tmp / LOADS_FILE), "PYTHONPATH": os.pathsep.join(job.import_paths)}
    unset = [n for n in ("BENCHBRIDGE_NO_CACHE", ENV_URL, ENV_KEY, ENV_MODELS) if n not in env]
    try:
        with _environ(env, unset), run_service(job.config.models, job.import_paths):
            ctx = RunContext(config=job.config, run_id=job.run_id, config_hash=job.config_hash, force=job.force)
            bridge = job.bridge_class(ctx)
            collected = _Collected()
            outcome = run_framework(bridge, collected, tmp)  # type: ignore[arg-type]  # add_run is all it uses
            response_cache().flush()  # this worker lives on: its counts are filed now, not at its exit
        assert collected.saved is not None
        manifest, records, samples = collected.saved
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            for child in sorted(tmp.iterdir()):
                tar.add(child, arcname=child.name)
        import ray

        return UnitResult(
            manifest=manifest,
            records=records,
            samples=samples,
            status=outcome.status,
            seconds=time.monotonic() - started,
            error=outcome.error,
            workdir=str(tmp),
            files=buffer.getvalue(),
            node=ray.get_runtime_context().get_node_id() if ray.is_initialized() else "",
            pid=os.getpid(),
        )
    finally:
        sys.path[:] = saved_path
        shutil.rmtree(tmp, ignore_errors=True)


def model_split(bridge: Bridge) -> bool:
    """A framework is split into a unit per model unless its options name a config model (a grader, a
    judge, a reference): such a framework needs all its models in one unit."""
    options = json.dumps(bridge.options.model_dump(mode="json"))
    return len(bridge.config.models) > 1 and not any(json.dumps(m.name) in options for m in bridge.config.models)


def unit_config(config: LoadedConfig, models: Sequence[Any]) -> LoadedConfig:
    """The config with only `models` (a shallow copy: datasets and settings shared, the hash unchanged)."""
    cut = copy.copy(config)
    cut.models = list(models)
    cut.doc = None  # line numbers are for the driver's errors; the YAML tree need not travel
    return cut


def unit_options(config: LoadedConfig, models: Sequence[Any], default_cpus: float) -> dict[str, Any]:
    """Ray task options from the unit's models' `resources:` (the largest ask of each resource)."""
    asks: dict[str, float] = {}
    for spec in models:
        for name, amount in (getattr(spec, "resources", None) or {}).items():
            asks[name] = max(asks.get(name, 0.0), float(amount))
    options: dict[str, Any] = {"num_cpus": asks.pop("num_cpus", default_cpus)}
    for name in ("num_gpus", "memory"):
        if name in asks:
            options[name] = asks.pop(name)
    if asks:
        options["resources"] = asks
    return options


def shipped_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith(SHIPPED_PREFIXES) or k in SHIPPED_NAMES}


def relocate_texts(result: UnitResult, final: Path) -> None:
    """Records and samples name the worker's folder (a failure's log path): they name the run folder."""
    old = str(Path(result.workdir) / result.manifest["framework"])
    swap = json.dumps(old)[1:-1], json.dumps(str(final))[1:-1]
    result.records = [Record.model_validate_json(r.model_dump_json().replace(*swap)) for r in result.records]
    result.samples = [Sample.model_validate_json(s.model_dump_json().replace(*swap)) for s in result.samples]
    if result.error:
        result.error = result.error.replace(old, str(final))
    if result.manifest.get("error"):
        result.manifest["error"] = result.manifest["error"].replace(old, str(final))


def place_files(result: UnitResult, run_dir: Path, folder: str) -> None:
    """The unit's files into `<run dir>/<folder>/`, its model loads appended to the run's log."""
    from bridges.models import LOADS_FILE

    final = run_dir / folder
    run_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".unit.", dir=run_dir) as unpack:
        with tarfile.open(fileobj=io.BytesIO(result.files), mode="r:gz") as tar:
            tar.extractall(unpack, filter="data")
        framework_dir = Path(unpack) / result.manifest["framework"]
        final.parent.mkdir(parents=True, exist_ok=True)
        if framework_dir.exists():
            if final.exists():
                shutil.rmtree(final)  # a retried unit's earlier copy: only the attempt that finished counts
            os.replace(framework_dir, final)
        loads = Path(unpack) / LOADS_FILE
        if loads.is_file():
            with (run_dir / LOADS_FILE).open("a", encoding="utf-8") as out:
                out.write(loads.read_text(encoding="utf-8"))


@dataclass
class _Unit:
    bridge: Bridge
    job: UnitJob
    options: dict[str, Any]
    started: str = field(default_factory=now_iso)


class RayExecutor(Executor):
    """Units as Ray tasks: see the module docstring."""

    def __init__(self, settings: ExecutorSettings) -> None:
        import_ray()  # not installed: one line before the run starts
        super().__init__(settings)

    def units(self, bridges: Sequence[Bridge]) -> list[_Unit]:
        from bridges.frameworks.processes import import_paths

        env, paths = shipped_env(), import_paths()
        units = []
        for bridge in bridges:
            config, ctx = bridge.config, bridge.ctx
            groups = [[m] for m in config.models] if model_split(bridge) else [list(config.models)]
            for models in groups:
                split = len(groups) > 1
                label = f"{bridge.name}.{models[0].name}" if split else bridge.name
                folder = f"{bridge.name}/{models[0].name}" if split else bridge.name
                job = UnitJob(
                    bridge.name,
                    type(bridge),
                    label,
                    folder,
                    unit_config(config, models),
                    ctx.run_id,
                    ctx.config_hash,
                    ctx.force,
                    env,
                    paths,
                )
                units.append(_Unit(bridge, job, unit_options(config, models, self.settings.num_cpus)))
        return units

    @contextmanager
    def connected(self) -> Iterator[Any]:
        ray = import_ray()
        if ray.is_initialized():  # a caller's own connection (a test, a notebook): used and left open
            yield ray
            return
        address = None if self.settings.address == "local" else self.settings.address
        try:
            ray.init(
                address=address,
                namespace=self.settings.namespace,
                log_to_driver=False,
                include_dashboard=False if address is None else None,
                configure_logging=False,
            )
        except ConnectionError as exc:
            raise BenchbridgeError(
                f"executor.address: {self.settings.address}: no Ray cluster there ({exc}); start one with "
                "`ray start --head` or give its address (host:port or ray://host:port)"
            ) from None
        try:
            yield ray
        finally:
            ray.shutdown()

    def run(
        self,
        bridges: Sequence[Bridge],
        store: ResultsStore,
        run_dir: Path,
        progress: Callable[[str], None],
        max_parallel: int,
    ) -> list[FrameworkOutcome]:
        units = self.units(bridges)
        results: dict[int, UnitResult] = {}
        with self.connected() as ray:
            task = ray.remote(run_unit)
            refs = {}
            for i, unit in enumerate(units):
                options = {**unit.options, "max_retries": self.settings.max_retries, "retry_exceptions": False}
                refs[task.options(name=unit.job.label, **options).remote(unit.job)] = i
                progress(f"[{unit.job.label}] starting")
            pending = list(refs)
            try:
                while pending:
                    done, pending = ray.wait(pending, num_returns=1)
                    for ref in done:
                        i = refs[ref]
                        results[i] = self.fetch(ray, ref, units[i])
                        self.store(results[i], units[i], store, run_dir, progress)
            except BaseException:
                for ref in pending:
                    ray.cancel(ref, force=True)
                raise
        return self.outcomes(bridges, units, results)

    def fetch(self, ray: Any, ref: Any, unit: _Unit) -> UnitResult:
        """The unit's result, or its stored failure when Ray gave up on it (retries spent, worker crashed)."""
        try:
            result: UnitResult = ray.get(ref)
            return result
        except ray.exceptions.RayError as exc:
            cause = " ".join(str(exc).split())
            tries = self.settings.max_retries
            error = clip_error(f"executor ray: unit {unit.job.label} lost after {tries} retries: {cause}")
            bridge, ctx = unit.bridge, unit.bridge.ctx
            records = bridge.failed_everywhere(error, unit.job.config.models)
            from bridges._runner import manifest

            info = manifest(unit.job.config, bridge, ctx.run_id, unit.started, "failed", error)
            return UnitResult(info, records, [], "failed", 0.0, error, "", b"")

    def store(
        self, result: UnitResult, unit: _Unit, store: ResultsStore, run_dir: Path, progress: Callable[[str], None]
    ) -> None:
        if result.files:
            relocate_texts(result, run_dir / unit.job.folder)
            place_files(result, run_dir, unit.job.folder)
        manifest = {**result.manifest, "executor": {"kind": "ray", "node": result.node, "unit": unit.job.label}}
        store.add_run(manifest, result.records, result.samples)
        progress(f"[{unit.job.label}] {result.status} in {result.seconds:.1f}s, {len(result.records)} records")

    def outcomes(
        self, bridges: Sequence[Bridge], units: Sequence[_Unit], results: Mapping[int, UnitResult]
    ) -> list[FrameworkOutcome]:
        """One outcome per framework, its units' records in model order, as the local executor gives."""
        from bridges._runner import FrameworkOutcome

        out = []
        for bridge in bridges:
            mine = [results[i] for i, u in enumerate(units) if u.bridge is bridge]
            errors = [r.error for r in mine if r.error]
            out.append(
                FrameworkOutcome(
                    bridge.name,
                    "failed" if any(r.status != "ok" for r in mine) else "ok",
                    [rec for r in mine for rec in r.records],
                    max((r.seconds for r in mine), default=0.0),
                    "\n".join(errors) or None,
                )
            )
        return out

"""`benchbridge prepare` and `benchbridge run`: config -> bridges -> records -> results store."""

from __future__ import annotations

import functools
import importlib.metadata
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bridges._config import LoadedConfig
from bridges._errors import BenchbridgeError, FrameworkFailure
from bridges._files import check_dir_writable, path_kind
from bridges._parallel import default_max_parallel, scoped_environ, unit_threads
from bridges.frameworks import FRAMEWORKS, Bridge, RunContext
from bridges.frameworks.processes import import_paths, log_excerpt, stopping_children_on_signals
from bridges.frameworks.serving import run_service
from bridges.models import ENV_LOADS, ENV_SESSION, LOADS_FILE, CacheReport, cache_report, configure_cache
from bridges.records import Record, Sample, clip_error, now_iso
from bridges.secrets import mask, scrub_tree, spec_secret_names

if TYPE_CHECKING:
    from leaderboards.store import ResultsStore

KEY_PACKAGES = ("benchbridge", "torch", "transformers", "datasets", "numpy", "pandas")


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


def selected_frameworks(config: LoadedConfig, only: list[str] | None) -> list[str]:
    names = list(config.cfg.frameworks)
    if only:
        for name in only:
            FRAMEWORKS.get(name, key="--only")
            if name not in names:
                raise BenchbridgeError(f"{config.path}: frameworks.{name}: not configured (--only {name})")
        names = [n for n in names if n in only]
    if not names:
        raise BenchbridgeError(f"{config.path}: frameworks: none configured")
    return names


def make_bridges(config: LoadedConfig, only: list[str] | None, ctx_kw: dict[str, Any]) -> list[Bridge]:
    """Builds (and so validates) every selected bridge before anything is written."""
    ctx = RunContext(config=config, **ctx_kw)
    return [FRAMEWORKS.get(name)(ctx) for name in selected_frameworks(config, only)]


def relocate(paths: list[Path], tmp: Path, out: Path) -> None:
    """Native artifacts name files by absolute path (lm-eval data_files, OpenCompass paths): written
    under the temp dir, they must name their final place once the temp dir is renamed to `out`."""
    for path in paths:
        if not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # binary artifact: holds no paths we wrote
        if str(tmp) in text:
            path.write_text(text.replace(str(tmp), str(out)), encoding="utf-8")


PREPARED_MARKER = ".benchbridge-prepared"


def _owned_by_prepare(out: Path) -> set[str]:
    """The framework folders an earlier `prepare` wrote into `out`; refuses a folder it did not write.

    `out` may be absent or empty; otherwise it must hold our marker, and only the folders the marker
    lists may be replaced: `prepare` never deletes what it did not write.
    """
    if out.exists() and not out.is_dir():
        raise BenchbridgeError(f"--out: {out} is a file; give a folder (new, empty, or from an earlier prepare)")
    if not out.exists() or not any(out.iterdir()):
        return set()
    marker = out / PREPARED_MARKER
    if not marker.is_file():
        raise BenchbridgeError(
            f"--out: {out} is not empty and was not written by `benchbridge prepare` (no {PREPARED_MARKER}); "
            "give a new or empty folder"
        )
    try:
        owned = json.loads(marker.read_text(encoding="utf-8")).get("frameworks")
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        owned = None
    if not isinstance(owned, list) or not all(isinstance(f, str) for f in owned):
        raise BenchbridgeError(f"{marker}: not a benchbridge prepare marker; give a new or empty --out folder")
    return set(owned)


def prepare(config: LoadedConfig, out: Path, only: list[str] | None = None) -> dict[str, list[Path]]:
    """Writes each framework's native artifacts under `out/<framework>/`, all or nothing.

    Only folders named in `out`'s marker (written by an earlier `prepare`) are ever replaced.
    """
    out = out.resolve()
    check_dir_writable(out, "--out")
    owned = _owned_by_prepare(out)
    config.materialize_models()  # native configs name the built-in model's converted folder
    check_models(config)
    bridges = make_bridges(config, only, {"run_id": "prepared", "config_hash": config.config_hash()})
    for bridge in bridges:
        if (out / bridge.name).exists() and bridge.name not in owned:
            raise BenchbridgeError(
                f"--out: {out / bridge.name} exists and was not written by `benchbridge prepare`; "
                "move it away or give another --out"
            )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name[:50]}.", dir=out.parent))
    written: dict[str, list[Path]] = {}
    try:
        for bridge in bridges:
            paths = bridge.prepare(tmp / bridge.name)
            relocate(paths, tmp, out)
            # A secret interpolated into a spec (a system prompt, a URL) is masked: artifacts hold names, not values.
            scrub_tree(tmp / bridge.name, spec_secret_names(config.models))
            written[bridge.name] = [out / p.relative_to(tmp) for p in paths]
        frameworks = sorted(owned | set(written))
        marker = {"written_by": "benchbridge prepare", "config": str(config.path), "frameworks": frameworks}
        (tmp / PREPARED_MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        if out.exists():
            for child in list(tmp.iterdir()):
                target = out / child.name
                if target.exists():
                    # Moved aside first, so `target` is never half gone; only our own folders get here.
                    trash = Path(tempfile.mkdtemp(prefix=".replaced.", dir=tmp))
                    os.replace(target, trash / child.name)
                os.replace(child, target)
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return written


ERROR_LOG = "benchbridge-error.log"  # a framework's unexpected exception, with its traceback
SQLITE_HEADER = b"SQLite format 3\x00"
SMOKE_TIMEOUT_S = 20.0


def check_models(config: LoadedConfig) -> None:
    """Before anything runs or is prepared: every `python` model's target (and `imports`) imports and
    is callable, with the paths the frameworks will have; an `hf` model's local folders (path,
    tokenizer_path, peft_path) and an `openai` model's tokenizer_path exist (hub ids like `org/name`
    are left to the frameworks). `board` and `publish` load configs too, and need none of this."""
    import sys

    from bridges.models import PythonSpec, check_local_path, resolve_target

    for i, spec in enumerate(config.models):
        key = f"{config.where('models', i)}: models[{i}]"
        for attr in ("path", "tokenizer_path", "peft_path"):
            value = getattr(spec, attr, None)
            if isinstance(value, str) and (spec.kind == "hf" or attr == "tokenizer_path"):
                check_local_path(value, f"{key}.{attr}")
    saved = list(sys.path)
    sys.path[:0] = [p for p in import_paths() if p not in sys.path]
    try:
        for i, spec in enumerate(config.models):
            if isinstance(spec, PythonSpec):
                resolve_target(spec, f"{config.where('models', i, 'target')}: models[{i}].target")
    finally:
        sys.path[:] = saved


def smoke_python_models(config: LoadedConfig, progress: Callable[[str], None]) -> None:
    """One short prompt to each `python` model before any framework starts, with a timeout: a model that
    raises or answers with the wrong type is exit 2 here, not exit 1 from deep inside a framework. Asked in
    this process, where the run serves the model to the frameworks (`bridges.frameworks.serving`), so the
    check loads it once for the whole run. The prompt goes through the response cache, so an unchanged
    model is asked once, not once per run. Too slow (a model that loads weights) is not an error: the
    check is skipped and the run goes on."""
    import threading

    from bridges.models import SMOKE_PROMPT, ChatRequest, PythonSpec, get_model

    # The check's cache lookups are not this run's: its cache report counts the frameworks' requests.
    session = os.environ.pop(ENV_SESSION, None)
    try:
        for i, spec in enumerate(config.models):
            if not isinstance(spec, PythonSpec):
                continue
            outcome: list[BaseException | None] = []

            def ask(spec: PythonSpec = spec, outcome: list[BaseException | None] = outcome) -> None:
                try:
                    get_model(spec).generate([ChatRequest((("user", SMOKE_PROMPT),), max_new_tokens=8)])
                    outcome.append(None)
                except BaseException as raised:  # noqa: BLE001 - user code, SystemExit included: reported below
                    outcome.append(raised)

            thread = threading.Thread(target=ask, name=f"check-{spec.name}", daemon=True)
            thread.start()
            thread.join(SMOKE_TIMEOUT_S)
            if not outcome:
                progress(
                    f"[preflight] {spec.name}: no answer to a one-prompt check in {SMOKE_TIMEOUT_S:.0f}s; not checked"
                )
                continue
            exc = outcome[0]
            if exc is not None:
                message = " ".join(str(exc).split())
                cause = message if isinstance(exc, BenchbridgeError) else f"{type(exc).__name__}: {message}"
                raise BenchbridgeError(
                    f"{config.where('models', i)}: models[{i}] ({spec.name}): failed a one-prompt check "
                    f"before any framework ran: {cause}"
                )
    finally:
        if session is not None:
            os.environ[ENV_SESSION] = session


def check_sqlite_path(path: Path, key: str, what: str) -> None:
    """`path` is an SQLite file we may write, or nothing yet in a folder we may create it in."""
    kind = path_kind(path, key)
    if kind == "dir":
        raise BenchbridgeError(f"{key}: {path} is a folder; give the path of {what}")
    if kind == "file":
        try:
            with path.open("rb") as fh:
                head = fh.read(len(SQLITE_HEADER))
        except OSError as exc:
            raise BenchbridgeError(f"{key}: {path}: cannot read it ({exc.strerror})") from None
        if head and head != SQLITE_HEADER:
            raise BenchbridgeError(f"{key}: {path} is not an SQLite database; give a new path or {what}")
        if not os.access(path, os.W_OK):
            raise BenchbridgeError(f"{key}: {path} is not writable")
    else:
        check_dir_writable(path.parent, key)


def check_run_paths(config: LoadedConfig) -> None:
    """`work_dir`, `results_db` and `cache.path` are what they must be, before anything is written."""
    check_dir_writable(config.work_dir, f"{config.where('work_dir')}: work_dir")
    key = f"{config.where('results_db')}: results_db" if config.cfg.results_db else f"{config.path}: results_db"
    check_sqlite_path(config.results_db, key, "a benchbridge results file (e.g. results.sqlite)")
    if config.cache_path is not None:
        key = f"{config.where('cache', 'path')}: cache.path"
        check_sqlite_path(config.cache_path, key, "a response cache file (e.g. responses.sqlite)")


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def package_versions(extra: tuple[str, ...] = ()) -> dict[str, str]:
    """The installed versions of the key packages and `extra` (those not installed left out)."""
    return {dist: v for dist in (*KEY_PACKAGES, *extra) if (v := _installed_version(dist)) is not None}


@functools.cache  # once per process: reading dist metadata cost ~0.08 s per unit under load (Ray executor)
def _installed_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


@dataclass
class FrameworkOutcome:
    framework: str
    status: str
    records: list[Record]
    seconds: float
    error: str | None = None


@dataclass
class RunOutcome:
    run_id: str
    run_dir: Path
    db: Path
    frameworks: list[FrameworkOutcome] = field(default_factory=list)
    cache: CacheReport | None = None  # hits, misses and tokens saved by the response cache, all processes

    @property
    def ok(self) -> bool:
        return all(f.status == "ok" for f in self.frameworks)


def manifest(config: LoadedConfig, bridge: Bridge, run_id: str, started: str, status: str, error: str | None) -> dict:
    return {
        "run_id": run_id,
        "framework": bridge.name,
        "framework_version": bridge.version(),
        "config_name": config.name,
        "config_path": str(config.path),
        "config_hash": config.config_hash(),
        "datasets": {ds.name: ds.content_hash for ds in config.datasets},
        "dataset_cards": {ds.name: ds.card.model_dump() for ds in config.datasets},
        "models": [m.public_dict() for m in config.models],
        "packages": package_versions((bridge.distribution,)),
        "seed": config.cfg.seed,
        "prompt_mode": config.prompt_mode(bridge.name),  # of canonical datasets; built-in ones are native
        "git_commit": git_commit(),
        "started": started,
        "finished": now_iso(),
        "status": status,
        "error": error,
    }


def mark_prompt_mode(records: list[Record], config: LoadedConfig, framework: str) -> None:
    """Each record says which prompt mode produced it: the config's for canonical datasets, `native` for a
    framework's built-in benchmarks (their prompts are the framework's own in either mode)."""
    mode = config.prompt_mode(framework)
    canonical = {ds.name for ds in config.datasets}
    for r in records:
        r.extra.setdefault("prompt_mode", mode if r.benchmark in canonical else "native")


def run_framework(
    bridge: Bridge, store: ResultsStore, run_dir: Path, progress: Callable[[str], None] = lambda m: None
) -> FrameworkOutcome:
    """One framework's part of a run, stored as soon as it ends.

    Errors by phase: anything raised once the framework started (a `BenchbridgeError` such as a 401
    while it generates or a missing executable, a `FrameworkFailure`, a bug raising RuntimeError) is
    this framework's stored failure with its log excerpt, and the run goes on to the others (exit 1).
    Only Ctrl-C/SIGTERM (BaseException) end the run. Bad input is found before, by `make_bridges`.
    """
    config, ctx = bridge.config, bridge.ctx
    started = now_iso()
    t0 = datetime.now(UTC)
    progress(f"[{bridge.name}] starting")
    error = None
    records: list[Record] = []
    samples: list[Sample] = []
    try:
        records = bridge.run(run_dir / bridge.name)
        # Read after the run, stored with its records in one transaction (a parse error is this framework's failure).
        samples = bridge.collect_samples(run_dir / bridge.name)
        mark_prompt_mode(records, config, bridge.name)
    except FrameworkFailure as exc:
        error = f"{exc}\n{exc.log_excerpt}".strip()
    except BenchbridgeError as exc:  # found while running: this framework's failure, not bad input
        error = str(exc)
    except Exception as exc:  # noqa: BLE001 - not swallowed: stored as the failure, traceback in the run folder
        log = run_dir / bridge.name / ERROR_LOG
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(mask(traceback.format_exc()), encoding="utf-8")
        error = f"{type(exc).__name__}: {exc} (traceback: {log})\n{log_excerpt(log)}"
    if error is not None:
        error = clip_error(mask(error))
        samples = []
        records = bridge.failed_everywhere(error, config.models)
    status = "failed" if error or any(r.status == "failed" for r in records) else "ok"
    if error is None and status == "failed":
        error = "; ".join(sorted({(r.error or "")[:300] for r in records if r.status == "failed"}))
    store.add_run(manifest(config, bridge, ctx.run_id, started, status, error), records, samples)
    seconds = (datetime.now(UTC) - t0).total_seconds()
    progress(f"[{bridge.name}] {status} in {seconds:.1f}s, {len(records)} records")  # the form RunProgress reads
    return FrameworkOutcome(bridge.name, status, records, seconds, error)


def run(
    config: LoadedConfig,
    only: list[str] | None = None,
    *,
    force: bool = False,
    progress: Callable[[str], None] = lambda m: None,
    cache: bool = True,
    max_parallel: int | None = None,
    executor: str | None = None,
) -> RunOutcome:
    """Runs each selected framework; each one's records are stored as soon as it ends.

    `cache=False` (`--no-cache`) bypasses the response cache. The cache choice and the run id are
    put in the environment, so framework subprocesses use the same cache and their counts add up.
    Frameworks run up to `max_parallel` at once (`--max-parallel`, else the config's `max_parallel`,
    else one per core), started in config order; `outcome.frameworks` keeps that order. `executor`
    (`--executor`: `local`, `ray`, `ray@ADDRESS`) overrides the config's `executor:` (bridges/executors/).
    """
    from bridges.executors import executor_settings, make_executor
    from bridges.executors.engines import check_engines, serving_engines
    from leaderboards.store import ResultsStore

    run_id = new_run_id()
    # Pre-flight: everything checkable is checked before a framework starts or a file is written
    # (the paths and imports before the cache choice goes into this process's environment).
    check_run_paths(config)
    config.materialize_models()  # a built-in model is converted now (once), not when the config loads
    check_models(config)
    # Made now, so an executor that cannot work here (ray not installed) is one line before anything runs.
    units_executor = make_executor(executor_settings(executor, "--executor") if executor else config.cfg.executor)
    check_engines(config.models, lambda i: config.where("models", i))  # vLLM/SGLang: package and GPU here
    configure_cache(config.cache_path, enabled=cache and config.cfg.cache.enabled, session=run_id)
    config_hash = config.config_hash()
    bridges = make_bridges(
        config, only, {"run_id": run_id, "config_hash": config_hash, "force": force, "progress": progress}
    )
    parallel = max_parallel or config.cfg.max_parallel or default_max_parallel(len(bridges))
    run_dir = config.work_dir / run_id
    outcome = RunOutcome(run_id, run_dir, config.results_db)
    fresh_work_dir = not config.work_dir.exists()
    # Every model a framework asks through benchbridge is served from here, loaded once for the run, and
    # every load by benchbridge's processes is logged in the run folder.
    with (
        serving_engines(config, run_dir, progress) as served,  # `serve:` models behind their engines' servers
        scoped_environ({ENV_LOADS: str(run_dir / LOADS_FILE), **unit_threads(parallel)}),
        run_service(config.models, import_paths()),
    ):
        if served:  # the frameworks ask the engines' endpoints: bridges built again on the served specs
            bridges = [type(b)(b.ctx) for b in bridges]
        try:
            smoke_python_models(config, progress)
        except BenchbridgeError:  # bad input: nothing stays written, the check's load log included
            shutil.rmtree(config.work_dir if fresh_work_dir else run_dir, ignore_errors=True)
            raise
        store = ResultsStore(config.results_db).open()  # creates the schema now: a bad file fails here
        with stopping_children_on_signals():  # Ctrl-C/SIGTERM end the frameworks' process groups first
            outcome.frameworks = units_executor.run(bridges, store, run_dir, progress, parallel)
    outcome.cache = cache_report(run_id)
    return outcome

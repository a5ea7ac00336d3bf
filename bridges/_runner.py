"""`benchbridge prepare` and `benchbridge run`: config -> bridges -> records -> results store."""

from __future__ import annotations

import importlib.metadata
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bridges._config import LoadedConfig
from bridges._errors import BenchbridgeError, FrameworkFailure
from bridges._records import Record, failure, now_iso
from bridges.frameworks import FRAMEWORKS, Bridge, RunContext
from bridges.models import CacheReport, cache_report, configure_cache

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


def prepare(config: LoadedConfig, out: Path, only: list[str] | None = None) -> dict[str, list[Path]]:
    """Writes each framework's native artifacts under `out/<framework>/`, all or nothing."""
    bridges = make_bridges(config, only, {"run_id": "prepared", "config_hash": config.config_hash()})
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    written: dict[str, list[Path]] = {}
    try:
        for bridge in bridges:
            paths = bridge.prepare(tmp / bridge.name)
            relocate(paths, tmp, out)
            written[bridge.name] = [out / p.relative_to(tmp) for p in paths]
        if out.exists():
            for child in tmp.iterdir():
                target = out / child.name
                if target.exists():
                    shutil.rmtree(target) if target.is_dir() else target.unlink()
                os.replace(child, target)
            tmp.rmdir()
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return written


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
    versions = {}
    for dist in (*KEY_PACKAGES, *extra):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


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
        "git_commit": git_commit(),
        "started": started,
        "finished": now_iso(),
        "status": status,
        "error": error,
    }


def run(
    config: LoadedConfig,
    only: list[str] | None = None,
    *,
    force: bool = False,
    progress: Callable[[str], None] = lambda m: None,
    cache: bool = True,
) -> RunOutcome:
    """Runs each selected framework; each one's records are stored as soon as it ends.

    `cache=False` (`--no-cache`) bypasses the response cache. The cache choice and the run id are
    put in the environment, so framework subprocesses use the same cache and their counts add up.
    """
    from leaderboards.store import ResultsStore

    run_id = new_run_id()
    configure_cache(config.cache_path, enabled=cache and config.cfg.cache.enabled, session=run_id)
    config_hash = config.config_hash()
    bridges = make_bridges(
        config, only, {"run_id": run_id, "config_hash": config_hash, "force": force, "progress": progress}
    )
    run_dir = config.work_dir / run_id
    store = ResultsStore(config.results_db)
    outcome = RunOutcome(run_id, run_dir, config.results_db)
    for bridge in bridges:
        started = now_iso()
        t0 = datetime.now(UTC)
        progress(f"[{bridge.name}] starting")
        error = None
        try:
            records = bridge.run(run_dir / bridge.name)
        except FrameworkFailure as exc:
            error = f"{exc}\n{exc.log_excerpt}".strip()
            records = [
                failure(
                    run_id=run_id,
                    model=m.name,
                    framework=bridge.name,
                    framework_version=bridge.version(),
                    benchmark="*",
                    error=error,
                    config_hash=config_hash,
                )
                for m in config.models
            ]
        status = "failed" if error or any(r.status == "failed" for r in records) else "ok"
        if error is None and status == "failed":
            error = "; ".join(sorted({(r.error or "")[:300] for r in records if r.status == "failed"}))
        store.add_run(manifest(config, bridge, run_id, started, status, error), records)
        seconds = (datetime.now(UTC) - t0).total_seconds()
        outcome.frameworks.append(FrameworkOutcome(bridge.name, status, records, seconds, error))
        progress(f"[{bridge.name}] {status} in {seconds:.1f}s, {len(records)} records")
    outcome.cache = cache_report(run_id)
    return outcome

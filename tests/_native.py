"""The checked-in native reports (tests/fixtures/native/, written by the real frameworks through
scripts/regenerate_native_reports.py), laid out where each bridge's `collect()` reads them.

`native_run(framework, tmp_path)` writes the config the script ran (with this checkout's paths),
copies the framework's report files into `<work_dir>/<run id>/<framework>/` with the script's fixed
paths turned back into real ones, and returns the bridge built on that config: no framework runs.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from bridges import load_config
from bridges.frameworks import FRAMEWORKS, Bridge, RunContext

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "regenerate_native_reports.py"


def _script() -> ModuleType:
    name = "regenerate_native_reports"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, SCRIPT)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


REGEN = _script()
FIXTURES: Path = REGEN.FIXTURES


@dataclass
class Native:
    bridge: Bridge
    out_dir: Path  # the framework's run folder, holding the copied reports

    def path(self, rel: str) -> Path:
        return self.out_dir / rel


def native_run(framework: str, tmp_path: Path) -> Native:
    work = tmp_path / "work"
    work.mkdir()
    REGEN.inputs(work)
    config = load_config(REGEN.write_config(framework, work))
    out_dir = work / framework / REGEN.RUN_ID / framework
    source = FIXTURES / framework
    for src in sorted(p for p in source.rglob("*") if p.is_file()):
        target = out_dir / src.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(REGEN.localize(src.read_text(encoding="utf-8"), work), encoding="utf-8")
    bridge = FRAMEWORKS.get(framework)(RunContext(config=config, run_id=REGEN.RUN_ID, config_hash="native"))
    return Native(bridge, out_dir)

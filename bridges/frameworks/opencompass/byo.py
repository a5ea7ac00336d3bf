"""A team's own OpenCompass python config, run with benchbridge's models: `frameworks.opencompass.configs:
[PATH]` (and `config_models: replace | add`).

The config is loaded as OpenCompass loads it (`mmengine.config.Config.fromfile`, its `read_base()`
imports included) inside the config benchbridge writes; its `datasets` are kept as they are, its `models`
are replaced by benchbridge's (or kept beside them with `config_models: add`), and the run's runner
and work dir are benchbridge's. Results are read from OpenCompass's summary with `benchbridge
collect`'s reader: benchmark = the dataset abbr (`<group>-<subset>` abbrs as subsets of a group row).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from bridges._config import LoadedConfig
from bridges._errors import BenchbridgeError
from bridges.records import Record, Sample

if TYPE_CHECKING:
    from bridges.frameworks.opencompass.bridge import OpenCompassBridge


def check_configs(config: LoadedConfig, paths: list[str]) -> list[Path]:
    key = f"{config.path}: frameworks.opencompass.configs"
    found = []
    for i, raw in enumerate(paths):
        path = config.resolve(raw)
        if not path.is_file() or path.suffix != ".py":
            raise BenchbridgeError(f"{key}[{i}]: {path} is not an OpenCompass python config file (.py)")
        text = path.read_text(encoding="utf-8", errors="replace")
        if "datasets" not in text:
            raise BenchbridgeError(f"{key}[{i}]: {path} defines no `datasets`; give a config with datasets to run")
        found.append(path)
    return found


def config_code(paths: list[Path], add_models: bool) -> tuple[list[str], list[str], list[str]]:
    """(code lines run in the written config, dataset entries, model entries) for the team's configs."""
    code, datasets, models = [], [], []
    for i, path in enumerate(paths):
        var = f"_user{i}"
        code += [
            f"{var} = _UserConfig.fromfile({str(path)!r})  # configs[{i}], loaded as OpenCompass loads it",
            f"{var}_datasets = list({var}.get('datasets', []))",
            f"{var}_models = list({var}.get('models', []))" if add_models else "",
            f"del {var}",
        ]
        datasets.append(f"*{var}_datasets")
        if add_models:
            models.append(f"*{var}_models")
    head = ["from mmengine.config import Config as _UserConfig", *[c for c in code if c], "del _UserConfig"]
    return head, datasets, models


def user_records(bridge: OpenCompassBridge, work: Path, ours: set[str]) -> tuple[list[Record], list[Sample]]:
    """Records and samples of the summary rows that are the team's datasets (not benchbridge's own)."""
    from bridges.collect import read_opencompass

    report = read_opencompass(work, None)
    records = []
    for fields in report.records:
        abbr = (fields.get("extra") or {}).get("opencompass_abbr") or fields["benchmark"]
        if abbr in ours or fields["benchmark"] in ours:
            continue
        extra: dict[str, Any] = {**(fields.get("extra") or {}), "config": "frameworks.opencompass.configs"}
        records.append(bridge.record(**{**fields, "extra": extra}))
    kept = {(r.benchmark, r.subset) for r in records}
    samples = [
        s.model_copy(update={"run_id": bridge.ctx.run_id}) for s in report.samples if (s.benchmark, s.subset) in kept
    ]
    return records, samples

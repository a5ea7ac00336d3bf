"""A team's own lm-eval task folder, run as written: `frameworks.lm_eval.include_paths: [DIR]` and
`tasks: [names]`. The folders go to lm-eval's `TaskManager` beside benchbridge's own task folder (as
`--include_path` does by hand), the named tasks and groups run for every model, and their results are
records named by lm-eval's own task names (a group's tasks as its subsets)."""

from __future__ import annotations

import re
from pathlib import Path

from bridges._config import LoadedConfig
from bridges._errors import BenchbridgeError, did_you_mean

# lm-eval YAML may hold `!function` tags that yaml.safe_load refuses: names are read line by line.
_NAME = re.compile(r"^(?:task|group|tag):\s*['\"]?([^'\"\s#]+)", re.M)


def task_names(folder: Path) -> set[str]:
    """The task, group and tag names the YAML files under `folder` define."""
    names: set[str] = set()
    for path in sorted([*folder.rglob("*.yaml"), *folder.rglob("*.yml")]):
        names |= set(_NAME.findall(path.read_text(encoding="utf-8", errors="replace")))
    return names


def check_task_folders(config: LoadedConfig, include_paths: list[str], tasks: list[str]) -> list[Path]:
    """The folders resolved against the config; each must exist, and each task must be defined in one."""
    key = f"{config.path}: frameworks.lm_eval"
    folders = []
    for i, raw in enumerate(include_paths):
        folder = config.resolve(raw)
        if not folder.is_dir():
            raise BenchbridgeError(f"{key}.include_paths[{i}]: {folder} is not a folder of lm-eval task YAML files")
        folders.append(folder)
    if tasks and not folders:
        raise BenchbridgeError(f"{key}.tasks: name tasks of include_paths; add the folders they are defined in")
    if folders and not tasks:
        raise BenchbridgeError(f"{key}.tasks: list the tasks or groups of include_paths to run")
    known = set().union(*(task_names(f) for f in folders)) if folders else set()
    for i, name in enumerate(tasks):
        if name not in known:
            hint = did_you_mean(name, known)
            raise BenchbridgeError(
                f"{key}.tasks[{i}]: {name!r} is no task or group in include_paths; {hint}"
                f"they define {', '.join(sorted(known)[:20]) or 'none'}"
            )
    return folders

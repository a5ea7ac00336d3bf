"""Run configs (`configs/*.yaml`): models x datasets x frameworks.

Relative paths resolve against the config file's folder: datasets, work_dir, results_db, cache.path, and
a model's `path`, `tokenizer_path` and `peft_path` when they name a local folder (a hub id such as
`org/name` stays as written). Loading is cheap: a `builtin:` model is converted only when a run, a
prepare or serve needs its folder (`LoadedConfig.materialize_models`), never by `board` or `publish`.
`${VAR}` and `${VAR:-default}` are replaced from the environment (and `.env`); a missing variable is an
error naming the key.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Collection
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bridges._errors import BenchbridgeError
from bridges._files import MAX_NAME, YamlDoc, loc_text, read_yaml
from bridges.datasets import Dataset, load_dataset
from bridges.executors import EXECUTORS, ExecutorSettings
from bridges.models import HFSpec, ModelSpec, OpenAISpec, check_builtin, materialize, parse_model_spec
from bridges.secrets import remember_secret_name

MODEL_PATH_FIELDS = ("path", "tokenizer_path", "peft_path")  # a model spec's local folders
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class DatasetRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str
    frameworks: list[str] | None = None  # None: every framework that can take its kind


class PublishSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    out: str | None = None
    title: str | None = None
    average_over: list[str] | None = None  # column ids; default all primary columns
    # README_OPENCOMPASS.md front matter (OpenCompass's dataset site); empty when not given
    description: str | None = None
    website: str | None = None
    github: str | None = None
    paper: str | None = None
    download_url: str | None = None
    organization: str = "benchbridge"  # who ran the evaluations (Every Eval Ever source_metadata)
    # AlpacaEval's published leaderboards bundled in its package, shown apart (leaderboards/references.py)
    reference_leaderboards: list[str] = Field(default_factory=list)

    @field_validator("reference_leaderboards")
    @classmethod
    def _bundled(cls, names: list[str]) -> list[str]:
        from leaderboards.references import check_names

        try:
            check_names(names, "reference_leaderboards")
        except BenchbridgeError as exc:  # pydantic names the file, line and key
            raise ValueError(str(exc).split(": ", 1)[1]) from None
        return names

    @field_validator("website", "github", "paper", "download_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        # These become links on the published page: a `javascript:` or `file:` URL must not.
        if value is None:
            return value
        scheme, _, rest = value.partition("://")
        if scheme.lower() not in ("http", "https") or not rest.strip("/"):
            raise ValueError(f"{value!r} is not an http(s) URL (write https://...)")
        return value


class CacheSettings(BaseModel):
    """The model layer's response cache (bridges/models/_cache.py)."""

    model_config = ConfigDict(extra="forbid")
    path: str | None = None  # default: $BENCHBRIDGE_CACHE, else ~/.cache/benchbridge/responses.sqlite
    enabled: bool = True  # false: answers are neither read from nor written to the cache


class RunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=MAX_NAME)
    description: str = ""
    work_dir: str = "runs"
    results_db: str | None = None  # default: <work_dir>/results.sqlite
    seed: int = 0
    max_samples: int | None = Field(None, ge=1)
    models: list[dict[str, Any]]
    datasets: list[DatasetRef] = Field(default_factory=list)
    frameworks: dict[str, dict[str, Any]] = Field(default_factory=dict)
    publish: PublishSettings = Field(default_factory=PublishSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    # Frameworks run at once by `benchbridge run` (`--max-parallel` overrides); default: one per core.
    max_parallel: int | None = Field(None, ge=1)
    # Where units run: local threads, or tasks on a Ray cluster (`--executor` overrides; bridges/executors/).
    executor: ExecutorSettings = Field(default_factory=ExecutorSettings)
    # How canonical datasets reach the model (bridges/frameworks/parity.py); `frameworks.<fw>.prompt_mode` overrides.
    prompt_mode: Literal["parity", "native"] = "parity"

    @field_validator("models")
    @classmethod
    def _some_model(cls, models: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not models:
            raise ValueError("empty; list at least one model (name, kind, ...)")
        return models


class LoadedConfig:
    """A validated config with its models parsed, datasets loaded and paths resolved."""

    def __init__(self, path: Path, raw: dict[str, Any], cfg: RunConfig, doc: YamlDoc | None = None) -> None:
        self.path = path
        self.raw = raw
        self.cfg = cfg
        self.base = path.parent
        self.doc = doc
        self.models: list[ModelSpec] = []
        for i, m in enumerate(cfg.models):
            spec = parse_model_spec(m, where=f"{self.where('models', i)}: models[{i}]")
            check_builtin(spec, f"{self.where('models', i, 'path')}: models[{i}].path")
            self.models.append(self._local_paths(spec))
        names = [m.name for m in self.models]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise BenchbridgeError(f"{path}: models: duplicate name(s) {', '.join(sorted(dupes))}")
        from bridges.frameworks import FRAMEWORKS

        self.datasets: list[Dataset] = []
        self.dataset_frameworks: dict[str, list[str] | None] = {}
        for i, ref in enumerate(cfg.datasets):
            for j, fw in enumerate(ref.frameworks or []):
                FRAMEWORKS.get(fw, key=f"{self.where('datasets', i, 'frameworks', j)}: datasets[{i}].frameworks[{j}]")
            try:
                ds = load_dataset(self.resolve(ref.path))
            except BenchbridgeError as exc:
                raise BenchbridgeError(f"{self.where('datasets', i, 'path')}: datasets[{i}].path: {exc}") from None
            self.datasets.append(ds)
            self.dataset_frameworks[ds.name] = ref.frameworks
        for fw in cfg.frameworks:
            FRAMEWORKS.get(fw, key=f"{self.where('frameworks', fw)}: frameworks.{fw}")
        EXECUTORS.get(cfg.executor.kind, key=f"{self.where('executor', 'kind')}: executor.kind")

    def _local_paths(self, spec: ModelSpec) -> ModelSpec:
        """The spec with its local folder fields resolved against the config's folder, as datasets are."""
        if not isinstance(spec, HFSpec | OpenAISpec):  # other kinds' fields may be anything (URLs, ids)
            return spec
        updates = {}
        for attr in MODEL_PATH_FIELDS:
            value = getattr(spec, attr, None)
            if isinstance(value, str) and (resolved := self.resolve_model_path(value)) != value:
                updates[attr] = resolved
        return spec.model_copy(update=updates) if updates else spec

    def resolve_model_path(self, value: str) -> str:
        """A relative local folder (starting with `.`, or two levels deep, or present beside the config)
        resolved against the config's folder; absolute, `~`, `builtin:` and hub ids (`org/name`) as written."""
        if value.startswith(("/", "~", "builtin:")) or "://" in value:
            return value
        looks_local = value.startswith(".") or value.count("/") >= 2 or (self.base / value).exists()
        return str((self.base / value).resolve()) if looks_local else value

    def materialize_models(self) -> None:
        """Built-in models get their local folder (converted on first use, ~45 s): runs, prepare, serve."""
        self.models = [materialize(m) for m in self.models]

    def where(self, *loc: Any) -> str:
        """`config:line` of the key at `loc` (the file alone when the line is unknown)."""
        return self.doc.where(loc) if self.doc is not None else str(self.path)

    def resolve(self, p: str | None) -> Path:
        if p is None:
            raise BenchbridgeError(f"{self.path}: a required path is missing")
        q = Path(os.path.expanduser(p))
        return q if q.is_absolute() else (self.base / q).resolve()

    @property
    def name(self) -> str:
        return self.cfg.name

    @property
    def work_dir(self) -> Path:
        return self.resolve(self.cfg.work_dir)

    @property
    def results_db(self) -> Path:
        return self.resolve(self.cfg.results_db) if self.cfg.results_db else self.work_dir / "results.sqlite"

    @property
    def cache_path(self) -> Path | None:
        """The config's response cache file, or None to keep `$BENCHBRIDGE_CACHE` / the default."""
        return self.resolve(self.cfg.cache.path) if self.cfg.cache.path else None

    def model(self, name: str, key: str) -> ModelSpec:
        for m in self.models:
            if m.name == name:
                return m
        raise BenchbridgeError(
            f"{self.path}: {key}: no model named {name!r} (have {', '.join(m.name for m in self.models)})"
        )

    def datasets_for(self, framework: str, kinds: Collection[str]) -> list[Dataset]:
        out = []
        for ds in self.datasets:
            allowed = self.dataset_frameworks.get(ds.name)
            if ds.kind in kinds and (allowed is None or framework in allowed):
                out.append(ds)
        return out

    def config_hash(self) -> str:
        """Hash of the resolved config and every dataset's content."""
        h = hashlib.sha256(json.dumps(self.raw, sort_keys=True, default=str).encode())
        for ds in self.datasets:
            h.update(ds.content_hash.encode())
        return h.hexdigest()[:16]

    def prompt_mode(self, framework: str) -> Literal["parity", "native"]:
        """`frameworks.<framework>.prompt_mode`, else the config's `prompt_mode` (default parity)."""
        mode = (self.cfg.frameworks.get(framework) or {}).get("prompt_mode", self.cfg.prompt_mode)
        if mode not in ("parity", "native"):
            at = self.where("frameworks", framework, "prompt_mode")
            raise BenchbridgeError(
                f"{at}: frameworks.{framework}.prompt_mode: {mode!r} is not a prompt mode; write parity or native"
            )
        return mode

    def framework_options(self, framework: str, options_model: type[BaseModel]) -> BaseModel:
        # prompt_mode is every framework's key (read by prompt_mode()), not one framework's option.
        raw = {k: v for k, v in (self.cfg.frameworks.get(framework) or {}).items() if k != "prompt_mode"}
        try:
            return options_model.model_validate(raw)
        except ValidationError as exc:
            err = exc.errors()[0]
            at = self.where("frameworks", framework, *err["loc"])
            raise BenchbridgeError(f"{at}: {loc_text(('frameworks', framework, *err['loc']))}: {err['msg']}") from None


def _interpolate(value: Any, path: Path, key: str, env: dict[str, str], keep_refs: bool = False) -> Any:
    """`${VAR}` replaced from `env`. A `python` model's `args` keep their references (`keep_refs`):
    they may hold secrets, which must not reach manifests or native configs; the process that builds
    the model resolves them (`bridges.secrets.resolve_env_refs`). Missing variables fail here all the same."""
    if isinstance(value, dict):
        python_args = value.get("kind") == "python" and isinstance(value.get("args"), dict)
        return {
            k: _interpolate(
                v, path, f"{key}.{k}" if key else str(k), env, keep_refs or (python_args and k == "args")
            )
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_interpolate(v, path, f"{key}[{i}]", env, keep_refs) for i, v in enumerate(value)]
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            var, default = m.group(1), m.group(2)
            if keep_refs:
                remember_secret_name(var)  # its value is masked in whatever this process prints or writes
            if var in env:
                return m.group(0) if keep_refs else env[var]
            if default is not None:
                return m.group(0) if keep_refs else default
            raise BenchbridgeError(f"{path}: {key}: environment variable ${{{var}}} is not set")

        return _ENV_REF.sub(sub, value)
    return value


def config_environment() -> dict[str, str]:
    """The variables a config's `${VAR}` and `api_key_env` see: the environment over `./.env`."""
    env = dict(os.environ)
    if Path(".env").is_file():
        from dotenv import dotenv_values

        env = {**{k: v for k, v in dotenv_values(".env").items() if v is not None}, **env}
    return env


def load_config(path: str | os.PathLike[str], overrides: dict[str, Any] | None = None) -> LoadedConfig:
    path = Path(path).resolve()
    doc = read_yaml(path, "config file")
    raw = doc.data
    if not isinstance(raw, dict):
        raise BenchbridgeError(f"{path}: expected a mapping at the top level (name, models, datasets, frameworks)")
    raw = _interpolate(raw, path, "", config_environment())
    for k, v in (overrides or {}).items():
        raw[k] = v
    try:
        cfg = RunConfig.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise BenchbridgeError(f"{doc.where(err['loc'])}: {loc_text(err['loc'])}: {err['msg']}") from None
    return LoadedConfig(path, raw, cfg, doc)

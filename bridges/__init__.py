"""benchbridge: one dataset and one model definition through four evaluation frameworks.

The public API, in the order data flows through it:

- datasets: `load_dataset`, `Dataset`, the `IMPORTERS` registry and its `@importer` decorator;
- models: `ModelSpec`, `get_model`, `Model`, `ChatRequest`/`ChatResponse`, the `MODEL_KINDS` registry
  (`MODEL_KINDS.register(name)(ModelKind(...))`) and `@python_model`;
- frameworks: `Bridge`, `RunContext`, the `FRAMEWORKS` registry and its `@framework` decorator;
- a run: `load_config` -> `prepare(config, out)` (native artifacts only) or `run(config)` (prepare, run,
  collect, store) -> `RunOutcome`;
- results: `Record` (one number or one failure) and `Sample` (one scored answer), in `bridges.records`.

Errors: `BenchbridgeError` (bad input, exit 2) and `FrameworkFailure` (a framework failed, exit 1).
Public submodules: `bridges.records`, `bridges.secrets`, `bridges.sqlite`, `bridges.serve`, `bridges.testing`,
`bridges.models`, `bridges.datasets`, `bridges.frameworks`. Names starting with `_` are private to their package.
"""

from bridges._config import LoadedConfig, PublishSettings, load_config
from bridges._errors import BenchbridgeError, FrameworkFailure, did_you_mean
from bridges._runner import FrameworkOutcome, RunOutcome, make_bridges, new_run_id, prepare, run
from bridges.datasets import IMPORTERS, Dataset, importer, load_dataset
from bridges.frameworks import FRAMEWORKS, Bridge, RunContext, framework
from bridges.models import (
    MODEL_KINDS,
    ChatRequest,
    ChatResponse,
    Model,
    ModelKind,
    ModelSpec,
    get_model,
    python_model,
)
from bridges.records import Judgement, Record, Sample

__all__ = [
    "FRAMEWORKS",
    "IMPORTERS",
    "MODEL_KINDS",
    "BenchbridgeError",
    "Bridge",
    "ChatRequest",
    "ChatResponse",
    "Dataset",
    "FrameworkFailure",
    "FrameworkOutcome",
    "Judgement",
    "LoadedConfig",
    "Model",
    "ModelKind",
    "ModelSpec",
    "PublishSettings",
    "Record",
    "RunContext",
    "RunOutcome",
    "Sample",
    "did_you_mean",
    "framework",
    "get_model",
    "importer",
    "load_config",
    "load_dataset",
    "make_bridges",
    "new_run_id",
    "prepare",
    "python_model",
    "run",
]

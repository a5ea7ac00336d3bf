"""benchbridge: one dataset and one model definition through four evaluation frameworks.

The public API is re-exported here; everything else lives in private modules.
"""

from bridges._config import LoadedConfig, load_config
from bridges._errors import BenchbridgeError, FrameworkFailure
from bridges._records import Judgement, Record, Sample
from bridges.datasets import Dataset, importer, load_dataset
from bridges.frameworks import Bridge, framework
from bridges.models import ChatRequest, ChatResponse, Model, ModelSpec, get_model, python_model

__all__ = [
    "BenchbridgeError",
    "Bridge",
    "ChatRequest",
    "ChatResponse",
    "Dataset",
    "FrameworkFailure",
    "Judgement",
    "LoadedConfig",
    "Model",
    "ModelSpec",
    "Record",
    "Sample",
    "framework",
    "get_model",
    "importer",
    "load_config",
    "load_dataset",
    "python_model",
]

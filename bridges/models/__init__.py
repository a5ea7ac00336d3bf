"""Model specs and the one model layer every bridge calls."""

from bridges.models._cache import CacheReport, cache_report, configure_cache, default_cache_path, response_cache
from bridges.models._layer import ChatRequest, ChatResponse, Model, TokenLogprob, as_messages, get_model
from bridges.models._python import python_model
from bridges.models._spec import (
    MODEL_KINDS,
    Generation,
    HFSpec,
    Limits,
    ModelKind,
    ModelSpec,
    OpenAISpec,
    PythonSpec,
    parse_model_spec,
)
from bridges.models._types import ModelRequestRejected, ModelUnavailable, RetryableModelError

__all__ = [
    "MODEL_KINDS",
    "CacheReport",
    "ChatRequest",
    "ChatResponse",
    "Generation",
    "HFSpec",
    "Limits",
    "Model",
    "ModelRequestRejected",
    "ModelUnavailable",
    "ModelKind",
    "ModelSpec",
    "OpenAISpec",
    "PythonSpec",
    "RetryableModelError",
    "TokenLogprob",
    "as_messages",
    "cache_report",
    "configure_cache",
    "default_cache_path",
    "get_model",
    "parse_model_spec",
    "python_model",
    "response_cache",
]

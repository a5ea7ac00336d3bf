"""Model specs and the one model layer every bridge calls."""

from bridges.models._builtin import cache_root, check_builtin, materialize
from bridges.models._cache import (
    ENV_SESSION,
    CacheReport,
    cache_report,
    configure_cache,
    default_cache_path,
    response_cache,
)
from bridges.models._hf import check_local_path
from bridges.models._layer import (
    ChatRequest,
    ChatResponse,
    Model,
    TokenLogprob,
    answer_identity,
    as_messages,
    get_model,
    with_system_prompt,
)
from bridges.models._loads import ENV_LOADS, LOADS_FILE, loads_by_ref, read_loads
from bridges.models._python import SMOKE_PROMPT, python_model, resolve_target
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
    "cache_root",
    "ENV_LOADS",
    "ENV_SESSION",
    "LOADS_FILE",
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
    "SMOKE_PROMPT",
    "TokenLogprob",
    "answer_identity",
    "as_messages",
    "cache_report",
    "check_builtin",
    "check_local_path",
    "configure_cache",
    "default_cache_path",
    "get_model",
    "loads_by_ref",
    "materialize",
    "parse_model_spec",
    "python_model",
    "read_loads",
    "resolve_target",
    "response_cache",
    "with_system_prompt",
]

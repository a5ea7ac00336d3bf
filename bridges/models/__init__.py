"""Model specs and the one model layer every bridge calls."""

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

__all__ = [
    "MODEL_KINDS",
    "ChatRequest",
    "ChatResponse",
    "Generation",
    "HFSpec",
    "Limits",
    "Model",
    "ModelKind",
    "ModelSpec",
    "OpenAISpec",
    "PythonSpec",
    "TokenLogprob",
    "as_messages",
    "get_model",
    "parse_model_spec",
    "python_model",
]

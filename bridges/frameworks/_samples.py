"""What the per-sample readers of every framework share."""

from __future__ import annotations

from typing import Any

from bridges.models import as_messages, with_system_prompt


def model_messages(messages: list[dict[str, Any]], system_prompt: str | None) -> list[dict[str, Any]]:
    """The messages a model answered through benchbridge's model layer got: the layer puts the
    model's own system prompt first (frameworks that call a model natively put it in their prompt,
    so their logged prompts carry it already). A sample's input is what the model was asked."""
    if not system_prompt:
        return messages
    return [{"role": r, "content": c} for r, c in with_system_prompt(as_messages(messages), system_prompt)]

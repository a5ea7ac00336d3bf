"""Code that runs INSIDE OpenCompass processes (imported by the configs that `.bridge` writes).

- `BenchbridgeModel`: an OpenCompass model whose `generate` goes through benchbridge's model layer,
  so `python` models (and anything else the layer serves) are reachable from OpenCompass.
- `ContainedRunner`: a local runner that runs every task in the OpenCompass process itself (no
  subprocess per task, so imports are paid once) but, unlike `--debug`, keeps OpenCompass's per-task
  contract: a task that raises is logged to its native `logs/<infer|eval>/<model>/<dataset>.out`
  file and reported as a failed task while the remaining tasks still run.

This module imports OpenCompass at the top: only OpenCompass's own processes import it.
"""

from __future__ import annotations

import json
import logging
import os
import time
import traceback
from typing import Any

from opencompass.models.base import BaseModel
from opencompass.models.base_api import APITemplateParser
from opencompass.registry import RUNNERS, TASKS
from opencompass.runners import LocalRunner
from opencompass.utils import get_logger, model_abbr_from_cfg
from opencompass.utils.prompt import PromptList

from bridges.frameworks.serving import model_for
from bridges.models import ChatRequest, as_messages, parse_model_spec

# OpenCompass prompt roles -> chat roles. SYSTEM stays a real system message (OpenCompass's HF default
# folds it into the user turn); the canonical qa datasets carry their system prompts this way.
_ROLES = {"HUMAN": "user", "BOT": "assistant", "SYSTEM": "system"}

CHAT_META_TEMPLATE = dict(
    round=[dict(role="HUMAN", api_role="HUMAN"), dict(role="BOT", api_role="BOT", generate=True)],
    reserved_roles=[dict(role="SYSTEM", api_role="SYSTEM")],
)


def prompt_to_messages(prompt: PromptList | str) -> list[dict[str, str]]:
    """One OpenCompass prompt (a string, or a PromptList of role turns) -> chat messages.

    Empty turns are dropped and consecutive turns of one role are joined, as OpenCompass does for
    its chat-template models.
    """
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    messages: list[dict[str, str]] = []
    for turn in prompt:
        role = _ROLES[turn["role"]]
        content = turn.get("prompt") or ""
        if not content:
            continue
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"] += "\n" + content
        else:
            messages.append({"role": role, "content": content})
    return messages


class BenchbridgeModel(BaseModel):
    """An OpenCompass model backed by `bridges.models.get_model(spec)`.

    Args:
        spec: the benchbridge model spec as plain JSON-compatible values (no secrets: env-var names).
        max_seq_len: reported to OpenCompass; the model layer does its own truncation.
        meta_template: OpenCompass meta template; default keeps HUMAN/BOT/SYSTEM as chat roles.
    """

    is_api = True  # prompts arrive as role turns (PromptList), like OpenCompass's API models

    def __init__(
        self,
        spec: dict[str, Any],
        path: str = "benchbridge",
        max_seq_len: int = 4096,
        meta_template: dict | None = None,
        **unused: Any,
    ) -> None:
        super().__init__(path=path, max_seq_len=max_seq_len, meta_template=meta_template)
        self.template_parser = APITemplateParser(meta_template or CHAT_META_TEMPLATE)
        plain = json.loads(json.dumps(spec))  # mmengine hands over ConfigDicts
        self.spec = parse_model_spec(plain, where=f"opencompass model {plain.get('name', '?')}")
        self.model = model_for(self.spec)  # the run's served model (loaded once per run), or the layer here

    def generate(self, inputs: list[PromptList | str], max_out_len: int, **kwargs: Any) -> list[str]:
        requests = [ChatRequest(as_messages(prompt_to_messages(p)), max_new_tokens=max_out_len) for p in inputs]
        return [r.text for r in self.model.generate(requests)]

    def get_token_len(self, prompt: str) -> int:
        # OpenCompass only uses this to budget prompt length; whitespace tokens are a fair estimate.
        messages = prompt_to_messages(prompt)
        return sum(len(m["content"].split()) for m in messages)


class _TaskLog(logging.Handler):
    """Copies OpenCompass log records into the task's own `.out` file while the task runs."""

    def __init__(self, stream: Any) -> None:
        super().__init__(logging.DEBUG)
        self.stream = stream
        self.setFormatter(logging.Formatter("%(asctime)s - %(name)s - %(levelname)s - %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.stream.write(self.format(record) + "\n")
        self.stream.flush()


@RUNNERS.register_module()
class ContainedRunner(LocalRunner):
    """LocalRunner that runs tasks one after another in this process, each failure contained.

    Same task objects and log paths as `LocalRunner`; what changes is that no `python task.py`
    subprocess is started (each costs ~10 s of imports on a small machine) and an infer task reuses
    the previous task's model when the model is the same, as `--debug` does.
    """

    def launch(self, tasks: list[dict[str, Any]]) -> list[tuple[str, int]]:
        status = []
        logger = get_logger()
        cur_model, cur_model_abbr = None, None
        for task_cfg in tasks:
            task = TASKS.build(dict(cfg=task_cfg, type=self.task_cfg["type"]))
            out_path = task.get_log_path(file_extension="out")
            os.makedirs(os.path.dirname(out_path), exist_ok=True)
            started = time.time()
            logger.info(f"launch {task.name} in-process")
            with open(out_path, "w", encoding="utf-8") as log_file:
                handler = _TaskLog(log_file)
                logger.addHandler(handler)
                try:
                    if "infer" in str(self.task_cfg["type"]).lower():
                        task.run(cur_model=cur_model, cur_model_abbr=cur_model_abbr)
                        cur_model, cur_model_abbr = task.model, model_abbr_from_cfg(task.model_cfg)
                    else:
                        task.run()
                    code = 0
                except Exception:  # noqa: BLE001 - a task's failure is its exit status, as with subprocesses
                    log_file.write(traceback.format_exc())
                    code = 1
                finally:
                    logger.removeHandler(handler)
            took = f"{time.time() - started:.1f}s (exit {code})"
            if code:
                logger.error(f"task {task.name} failed in {took}, see\n{out_path}")
            else:
                logger.info(f"task {task.name} finished in {took}")
            status.append((task.name, code))
        return status


__all__ = ["CHAT_META_TEMPLATE", "BenchbridgeModel", "ContainedRunner", "prompt_to_messages"]

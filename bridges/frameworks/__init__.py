"""Framework bridges. Each is a registry entry; its module imports its framework only when run."""

from bridges.frameworks._base import FRAMEWORKS, Bridge, RunContext, framework

# Built-in bridges, imported on first use so `benchbridge --help` loads no framework.
FRAMEWORKS.add_lazy("opencompass", "bridges.opencompass:OpenCompassBridge")
FRAMEWORKS.add_lazy("openai_evals", "bridges.openai_evals:OpenAIEvalsBridge")
FRAMEWORKS.add_lazy("alpaca_eval", "bridges.alpaca_eval:AlpacaEvalBridge")
FRAMEWORKS.add_lazy("lm_eval", "bridges.lm_eval:LMEvalBridge")

__all__ = ["FRAMEWORKS", "Bridge", "RunContext", "framework"]

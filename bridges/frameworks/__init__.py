"""Framework bridges. Each is a registry entry; its module imports its framework only when run."""

from bridges.frameworks._base import FRAMEWORKS, Bridge, RunContext, framework
from bridges.frameworks._samples import model_messages

# Built-in bridges, imported on first use so `benchbridge --help` loads no framework.
FRAMEWORKS.add_lazy("opencompass", "bridges.frameworks.opencompass.bridge:OpenCompassBridge")
FRAMEWORKS.add_lazy("openai_evals", "bridges.frameworks.openai_evals.bridge:OpenAIEvalsBridge")
FRAMEWORKS.add_lazy("alpaca_eval", "bridges.frameworks.alpaca_eval.bridge:AlpacaEvalBridge")
FRAMEWORKS.add_lazy("lm_eval", "bridges.frameworks.lm_eval.bridge:LMEvalBridge")
# Not a framework: benchbridge generating through its model layer and scoring (ROUGE, judges, pass@k...).
FRAMEWORKS.add_lazy("scoring", "bridges.scoring.bridge:ScoringBridge")

__all__ = ["FRAMEWORKS", "Bridge", "RunContext", "framework", "model_messages"]

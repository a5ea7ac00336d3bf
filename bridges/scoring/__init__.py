"""Scoring beside the frameworks' metrics: ROUGE, BLEU/chrF, semantic similarity, reward models, rubric
judges and pass@k, over responses generated through benchbridge's model layer or stored earlier.

Scorers are registry entries (imported on first use): built-ins below, third-party ones with
``@bridges.scoring.scorer("name")`` or an entry point in the group ``benchbridge.scorers``. The
`scoring` framework (bridges/scoring/bridge.py) generates and scores in a run; `benchbridge rescore`
scores stored answers again without asking the evaluated models.
"""

from bridges.scoring._base import SCORERS, Item, Metric, Score, Scorer, scorer

SCORERS.add_lazy("rouge", "bridges.scoring.text:Rouge")
SCORERS.add_lazy("bleu", "bridges.scoring.text:Bleu")
SCORERS.add_lazy("chrf", "bridges.scoring.text:Chrf")
SCORERS.add_lazy("semantic_similarity", "bridges.scoring.neural:SemanticSimilarity")
SCORERS.add_lazy("reward", "bridges.scoring.neural:Reward")
SCORERS.add_lazy("judge", "bridges.scoring.judge:Judge")
SCORERS.add_lazy("pass_at_k", "bridges.scoring.code:PassAtK")

__all__ = ["SCORERS", "Item", "Metric", "Score", "Scorer", "scorer"]

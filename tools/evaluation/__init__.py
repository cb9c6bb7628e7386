"""The evaluation stage: held-out metrics, thresholds, fairness, champion comparison, the evidence record.

``_tools`` holds the evaluation agent's tools.
"""

from mlops_supervisor.tools.evaluation._tools import beats_champion, evaluation_tools

__all__ = ["beats_champion", "evaluation_tools"]

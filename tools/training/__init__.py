"""The training stage: allow-listed estimators, a bounded seeded search, one MLflow run per candidate.

``_search`` plans the search against the policy before anything runs and fits each
candidate (preprocessing pipeline, scorers, cross-validation, refit) without touching
MLflow; ``_runs`` records the provenance and logs a parent run with one nested run per
candidate, then tags the best; ``_tools`` holds the experimentation agent's tools.
"""

from mlops_supervisor.tools.training._runs import TrainingContext, code_version, environment, train_candidates
from mlops_supervisor.tools.training._search import SearchPlan, TrainingData, plan_search
from mlops_supervisor.tools.training._tools import experimentation_tools

__all__ = [
    "SearchPlan",
    "TrainingContext",
    "TrainingData",
    "code_version",
    "environment",
    "experimentation_tools",
    "plan_search",
    "train_candidates",
]

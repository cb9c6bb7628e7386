"""The training stage: allow-listed estimators, a bounded seeded search, one MLflow run per candidate.

``_train`` plans the search against the policy before anything runs and fits and logs the
candidates; ``_tools`` holds the experimentation agent's tools.
"""

from mlops_supervisor.tools.training._tools import experimentation_tools
from mlops_supervisor.tools.training._train import (
    SearchPlan,
    TrainingContext,
    TrainingData,
    code_version,
    environment,
    plan_search,
    train_candidates,
)

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

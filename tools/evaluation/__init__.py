"""The evaluation stage: held-out metrics, thresholds, fairness, champion comparison, the evidence record.

Each job is a module of its own, testable alone:

- ``_inputs`` reads what an evaluation needs: the version, its training run and spec, and the
  test split that run made (checked against the digest it logged);
- ``_scoring`` loads the logged model, predicts on the test rows and computes the metrics and
  calibration (``LOSSES``, defined with the policy floors in ``policies.floors``, names the
  lower-is-better ones);
- ``_thresholds`` combines the policy's and the spec's thresholds (the stricter wins) and lists
  the metrics that miss them;
- ``_fairness`` computes per-group metrics and between-group differences per sensitive feature
  with fairlearn, against the policy's limits tightened by the spec;
- ``_champion`` judges a challenger against the version ``champion`` points at, on the same rows;
- ``_record`` builds the report and is the only writer to MLflow: the evaluation run with the
  report, markdown and plots, and the ``mlops.eval.*`` evidence tags on the version, which carry
  the floors the evaluation applied (task, thresholds, fairness limits, policy digest) so the
  gates can compare them with the floors in force;
- ``_tools`` holds the evaluation agent's tools and ``evaluate``, which runs the jobs in order
  and refuses a failed evaluation as a gate once it is recorded.
"""

from mlops_supervisor.policies.floors import LOSSES
from mlops_supervisor.tools.evaluation._champion import ChampionResult, beats_champion, compare_with_champion
from mlops_supervisor.tools.evaluation._fairness import (
    FairnessCheck,
    FeatureFairness,
    assess_fairness,
    fairness_failures,
    fairness_limits,
)
from mlops_supervisor.tools.evaluation._record import Recorded, build_report, record_evaluation, render_markdown
from mlops_supervisor.tools.evaluation._scoring import (
    LoadedModel,
    Scored,
    calibration,
    compute_metrics,
    predict,
)
from mlops_supervisor.tools.evaluation._thresholds import combined_thresholds, threshold_failures
from mlops_supervisor.tools.evaluation._tools import evaluation_tools

__all__ = [
    "LOSSES",
    "ChampionResult",
    "FairnessCheck",
    "FeatureFairness",
    "LoadedModel",
    "Recorded",
    "Scored",
    "assess_fairness",
    "beats_champion",
    "build_report",
    "calibration",
    "combined_thresholds",
    "compare_with_champion",
    "compute_metrics",
    "evaluation_tools",
    "fairness_failures",
    "fairness_limits",
    "predict",
    "record_evaluation",
    "render_markdown",
    "threshold_failures",
]

"""Champion comparison: whether a challenger beats the version ``champion`` points at, on the same rows.

``beats_champion`` and ``compare_with_champion`` judge metrics already computed;
``champion_comparison`` finds the champion in the registry and scores it on the challenger's
test split first.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, TypedDict

import pandas as pd

from mlops_supervisor.policies.floors import LOSSES
from mlops_supervisor.tools._spec import ChampionComparison, PipelineSpec
from mlops_supervisor.tools.evaluation._scoring import compute_metrics, score_model
from mlops_supervisor.tools.registry import aliased_version

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

__all__ = ["ChampionResult", "beats_champion", "champion_comparison", "compare_with_champion"]


class ChampionResult(TypedDict):
    """How the challenger fared against champion ``version`` on ``metric``; ``why`` is empty when it won."""

    version: int
    metric: str
    challenger: float
    champion: float
    passed: bool
    why: str


def beats_champion(
    metric: str, ours: float, theirs: float, rule: ChampionComparison, *, greater_is_better: bool
) -> tuple[bool, str]:
    """Whether a challenger's ``ours`` beats the champion's ``theirs`` by the rule's minimums.

    With both minimums at zero the challenger must simply not be worse. MLflow's
    ``validate_evaluation_results`` accepts only positive minimums, so it judges the rest.
    """
    import mlflow
    from mlflow.models import MetricThreshold
    from mlflow.models.evaluation import EvaluationResult
    from mlflow.models.evaluation.validation import ModelValidationFailedException

    if not rule.min_absolute_improvement and not rule.min_relative_improvement:
        worse = ours < theirs if greater_is_better else ours > theirs
        return (not worse, f"{ours:.4f} vs champion {theirs:.4f}" if worse else "")
    threshold = MetricThreshold(  # type: ignore[no-untyped-call]
        min_absolute_change=rule.min_absolute_improvement or None,
        min_relative_change=rule.min_relative_improvement or None,
        greater_is_better=greater_is_better,
    )
    try:
        mlflow.validate_evaluation_results(
            {metric: threshold},
            EvaluationResult(metrics={metric: ours}, artifacts={}),  # type: ignore[no-untyped-call]
            EvaluationResult(metrics={metric: theirs}, artifacts={}),  # type: ignore[no-untyped-call]
        )
    except ModelValidationFailedException as exc:
        return False, str(exc)
    return True, ""


def compare_with_champion(
    champion_version: int,
    ours: Mapping[str, float],
    theirs: Mapping[str, float],
    metric: str,
    rule: ChampionComparison,
) -> ChampionResult:
    """The challenger's metrics ``ours`` against the champion's ``theirs`` on ``metric`` (else the first one ``ours`` has)."""
    if metric not in ours:
        metric = next(iter(ours))
    passed, why = beats_champion(metric, ours[metric], theirs[metric], rule, greater_is_better=metric not in LOSSES)
    if not passed:
        why = f"does not beat champion version {champion_version} on {metric}: {why}"
    return {
        "version": champion_version,
        "metric": metric,
        "challenger": ours[metric],
        "champion": theirs[metric],
        "passed": passed,
        "why": why,
    }


def champion_comparison(
    client: MlflowClient,
    model: str,
    version: int,
    spec: PipelineSpec,
    test: pd.DataFrame,
    classes: list[str] | None,
    metrics: Mapping[str, float],
) -> ChampionResult | None:
    """``version`` (with ``metrics``) against ``model``'s champion scored on ``test``; ``None`` when there is none to beat."""
    champion = aliased_version(client, model)
    if champion is None or int(champion.version) == version:
        return None  # no champion yet, or this version is the champion: nothing to beat
    theirs = compute_metrics(
        score_model(champion.source, test, spec.data.target, classes), spec.training.task == "classification"
    )
    return compare_with_champion(int(champion.version), metrics, theirs, spec.training.metric, spec.evaluation.champion)

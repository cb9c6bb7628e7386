"""The evaluation agent's tools: ``evaluate_model`` and ``check_fairness``.

``evaluate`` runs the jobs in order: read the version's inputs (``_inputs``), score it on its
test split (``_scoring``), judge the thresholds (``_thresholds``), fairness (``_fairness``) and
the champion (``_champion``), build the report and record it (``_record``). A failed evaluation
is recorded, then refused as a gate.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from mlops_supervisor.policies import Decision, GateRefusedError, ReasonCode
from mlops_supervisor.tools.core import GovernedTool, ModelVersionArgs, ToolContext, to_json, using_store
from mlops_supervisor.tools.evaluation._champion import champion_comparison
from mlops_supervisor.tools.evaluation._fairness import assess_fairness, fairness_failures, fairness_limits
from mlops_supervisor.tools.evaluation._inputs import read_inputs
from mlops_supervisor.tools.evaluation._record import build_report, record_evaluation, summary
from mlops_supervisor.tools.evaluation._scoring import compute_metrics, score_model
from mlops_supervisor.tools.evaluation._thresholds import combined_thresholds, threshold_failures
from mlops_supervisor.tools.registry import report_digest

__all__ = ["evaluate", "evaluation_tools"]


def evaluate(ctx: ToolContext, model: str, version: int, *, log: bool = True) -> dict[str, Any]:
    """Evaluate ``model`` ``version``: its summary once recorded, or with ``log=False`` its report, recording nothing.

    Raises ``GateRefusedError`` (evaluation_failed) after recording a failed evaluation.
    """
    rules = ctx.policy.evaluation
    with using_store(ctx.store_uri) as client:
        inputs = read_inputs(client, ctx.workspace, model, version)
        spec, test, classes = inputs.spec, inputs.test, inputs.classes
        scored = score_model(inputs.model_uri, test, spec.data.target, classes)
        metrics = compute_metrics(scored, inputs.classification)
        thresholds = combined_thresholds(rules.floors(spec.training.task), spec.evaluation.thresholds)
        failures = threshold_failures(metrics, thresholds)
        # fairness metrics need classes: a regression applies no fairness limits, and records none
        limits = fairness_limits(rules.fairness, spec.evaluation.fairness) if inputs.classification else {}
        fairness = (
            assess_fairness(scored.y, scored.pred, test, spec.data.sensitive_features, limits)
            if inputs.classification
            else {}
        )
        failures += fairness_failures(fairness)
        champion = champion_comparison(client, model, version, spec, test, classes, metrics)
        if champion and not champion["passed"]:
            failures.append(champion["why"])
        report = build_report(
            model=model,
            version=version,
            task=spec.training.task,
            training_run=inputs.run.info.run_id,
            data_digest=inputs.tags.get("mlops.data.digest"),
            test_rows=len(test),
            metrics=metrics,
            thresholds=thresholds,
            fairness_limits=limits,
            champion=champion,
            fairness=fairness,
            scored=scored,
            failures=failures,
            max_age_hours=min(rules.max_age_hours, spec.evaluation.max_age_hours),
            evaluated_at=datetime.now(UTC),
            policy_digest=ctx.policy.digest,
        )
        digest = report_digest(report)
        if not log:
            return report
        experiment_id = inputs.run.info.experiment_id
        recorded = record_evaluation(
            client, report, digest, experiment_id=experiment_id, scored=scored, fairness=fairness
        )
    if failures:
        raise GateRefusedError(
            Decision.deny(
                "evaluate_model",
                ReasonCode.EVALUATION_FAILED,
                f"{model} version {version} failed its evaluation: {'; '.join(failures)}. The report is in "
                f"evaluation run {recorded.run_id}; nothing gets an alias.",
            )
        )
    return summary(report, digest, recorded)


def evaluation_tools(ctx: ToolContext) -> list[GovernedTool]:
    """evaluate_model and check_fairness."""

    def evaluate_model(model: str, version: int) -> str:
        return to_json(evaluate(ctx, model, version))

    def check_fairness(model: str, version: int) -> str:
        report = evaluate(ctx, model, version, log=False)
        return to_json({"model": model, "version": version, "fairness": report["fairness"]})

    return [
        GovernedTool.from_function(
            "evaluate_model",
            "Evaluate a registered version on its held-out test split: metrics, thresholds, "
            "the champion comparison and fairness; logs the report, plots and evidence.",
            ModelVersionArgs,
            evaluate_model,
            mutates=True,
        ),
        GovernedTool.from_function(
            "check_fairness",
            "Per-group metrics and fairness differences of a version on its test split (read-only; nothing is logged).",
            ModelVersionArgs,
            check_fairness,
            mutates=False,
        ),
    ]

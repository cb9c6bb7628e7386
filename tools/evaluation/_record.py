"""Recording: the evaluation report, the MLflow run that keeps it, and the evidence tags on the version.

``build_report`` assembles the report from the other jobs' results; ``record_evaluation``
logs it with its metrics, a markdown rendering and plots in an evaluation run and writes the
``mlops.eval.*`` tags the gates read onto the model version; ``summary`` is what the tool
answers afterwards. Only this module writes to MLflow.

The report and the tags both carry the floors the evaluation applied (its task, thresholds,
fairness limits and the digest of the policy it ran under): the gates compare them with the
floors in force when they run, so an evaluation under weaker floors is not evidence.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_supervisor.tools.evaluation._champion import ChampionResult
from mlops_supervisor.tools.evaluation._fairness import FeatureFairness
from mlops_supervisor.tools.evaluation._scoring import Scored, calibration

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

__all__ = ["Recorded", "build_report", "record_evaluation", "render_markdown", "render_plots", "summary"]


@dataclass(frozen=True)
class Recorded:
    """Where an evaluation was recorded: its MLflow run and the plot files logged under ``evaluation/plots``."""

    run_id: str
    plots: list[str]


def build_report(
    *,
    model: str,
    version: int,
    task: str,
    training_run: str,
    data_digest: str | None,
    test_rows: int,
    metrics: dict[str, float],
    thresholds: dict[str, float],
    fairness_limits: dict[str, float],
    champion: ChampionResult | None,
    fairness: Mapping[str, FeatureFairness],
    scored: Scored,
    failures: list[str],
    max_age_hours: float,
    evaluated_at: datetime,
    policy_digest: str,
) -> dict[str, Any]:
    """The evaluation report: what was scored, on which rows, against what, and whether it passed.

    ``thresholds`` and ``fairness_limits`` are the ones applied (the policy's tightened by the spec);
    ``policy_digest`` names the policy they came from.
    """
    positive = scored.positive_proba
    return {
        "model": model,
        "version": version,
        "task": task,
        "training_run": training_run,
        "data_digest": data_digest,
        "test_rows": test_rows,
        "metrics": metrics,
        "thresholds": thresholds,
        "fairness_limits": fairness_limits,
        "champion": champion,
        "fairness": {feature: result.as_report() for feature, result in fairness.items()},
        "calibration": calibration(scored.y, positive) if positive is not None else None,
        "failures": failures,
        "passed": not failures,
        "max_age_hours": max_age_hours,
        "evaluated_at": evaluated_at.isoformat(),
        "policy_sha256": policy_digest,
    }


def render_plots(directory: Path, scored: Scored, fairness: Mapping[str, FeatureFairness]) -> list[str]:
    """Write the confusion matrix (or, for regression, predicted against actual values), ROC and calibration
    curves (two classes) and per-group bars into ``directory``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.calibration import CalibrationDisplay
    from sklearn.metrics import ConfusionMatrixDisplay, PredictionErrorDisplay, RocCurveDisplay

    directory.mkdir(parents=True, exist_ok=True)
    made: list[str] = []

    def save(name: str) -> None:
        plt.tight_layout()
        plt.savefig(directory / name, dpi=90)
        plt.close("all")
        made.append(name)

    if scored.classification:
        ConfusionMatrixDisplay.from_predictions(scored.y, scored.pred)
        save("confusion_matrix.png")
    else:  # a confusion matrix of continuous values is an error in scikit-learn
        PredictionErrorDisplay.from_predictions(scored.y, scored.pred, kind="actual_vs_predicted")
        save("predicted_vs_actual.png")
    positive = scored.positive_proba
    if positive is not None:
        RocCurveDisplay.from_predictions(scored.y, positive)
        save("roc.png")
        CalibrationDisplay.from_predictions(scored.y, positive, n_bins=10)
        save("calibration.png")
    for feature, result in fairness.items():
        result.by_group.drop(columns=["count"]).plot.bar(figsize=(8, 4), title=f"per-group metrics by {feature}")
        save(f"groups_{feature}.png")
    return made


def render_markdown(report: Mapping[str, Any], plots: list[str]) -> str:
    """The report as a short markdown page: verdict, metrics against thresholds, fairness, champion, failures."""
    lines = [
        f"# Evaluation of {report['model']} version {report['version']}",
        "",
        f"**{'PASSED' if report['passed'] else 'FAILED'}** on {report['test_rows']} held-out rows "
        f"(data sha256 {str(report['data_digest'])[:12]}, training run {report['training_run']}).",
        "",
        f"Judged as a {report['task']} against the floors of policy sha256 {str(report['policy_sha256'])[:12]}.",
        "",
        "| metric | value | threshold |",
        "|---|---|---|",
    ]
    lines += [f"| {k} | {v:.4f} | {report['thresholds'].get(k, '')} |" for k, v in sorted(report["metrics"].items())]
    for feature, result in report["fairness"].items():
        lines += ["", f"## Fairness by {feature}", "", "| check | value | limit | passed |", "|---|---|---|---|"]
        lines += [f"| {k} | {c['value']:.4f} | {c['limit']} | {c['passed']} |" for k, c in result["checks"].items()]
    if report["champion"]:
        c = report["champion"]
        lines += [
            "",
            f"Champion version {c['version']}: {c['metric']} {c['champion']:.4f} vs {c['challenger']:.4f} "
            f"({'beaten' if c['passed'] else 'not beaten'}).",
        ]
    if report["failures"]:
        lines += ["", "## Failures", "", *[f"- {f}" for f in report["failures"]]]
    lines += ["", "## Plots", "", *[f"- plots/{p}" for p in plots]]
    return "\n".join(lines) + "\n"


def record_evaluation(
    client: MlflowClient,
    report: dict[str, Any],
    digest: str,
    *,
    experiment_id: str,
    scored: Scored,
    fairness: Mapping[str, FeatureFairness],
) -> Recorded:
    """Log ``report`` (sha256 ``digest``) in a new evaluation run of ``experiment_id`` and tag the version with it.

    MLflow's logging functions write to the process-wide tracking URI: call this inside ``using_store``.
    """
    with tempfile.TemporaryDirectory() as tmp:
        plots_dir = Path(tmp) / "plots"
        plots = render_plots(plots_dir, scored, fairness)
        run_id = _log_run(report, digest, experiment_id, plots_dir, plots)
    _tag_version(client, report, digest, run_id)
    return Recorded(run_id=run_id, plots=plots)


def _log_run(report: dict[str, Any], digest: str, experiment_id: str, plots_dir: Path, plots: list[str]) -> str:
    """The id of a new evaluation run holding the test metrics, the report (JSON and markdown) and the plots."""
    import mlflow

    with mlflow.start_run(
        experiment_id=experiment_id,
        run_name=f"evaluate-{report['model']}-v{report['version']}",
        tags={
            "mlops.role": "evaluation",
            "mlops.model.name": report["model"],
            "mlops.model.version": str(report["version"]),
            "mlops.training.run_id": report["training_run"],
            "mlops.eval.passed": str(report["passed"]).lower(),
            "mlops.eval.report_digest": digest,
        },
    ) as run:
        mlflow.log_metrics({f"test_{k}": v for k, v in report["metrics"].items()})
        mlflow.log_dict(report, "evaluation/report.json")
        mlflow.log_text(render_markdown(report, plots), "evaluation/report.md")
        mlflow.log_artifacts(str(plots_dir), "evaluation/plots")
    return str(run.info.run_id)


def _tag_version(client: MlflowClient, report: Mapping[str, Any], digest: str, run_id: str) -> None:
    """Write the evidence the gates read (``mlops.eval.*``) onto the evaluated model version."""
    version_tags = {
        "mlops.eval.run_id": run_id,
        "mlops.eval.passed": str(report["passed"]).lower(),
        "mlops.eval.report_digest": digest,
        "mlops.eval.at": report["evaluated_at"],
        "mlops.eval.failures": json.dumps(report["failures"]),
        "mlops.eval.max_age_hours": str(report["max_age_hours"]),
        "mlops.eval.task": report["task"],
        "mlops.eval.thresholds": json.dumps(report["thresholds"], sort_keys=True),
        "mlops.eval.fairness_limits": json.dumps(report["fairness_limits"], sort_keys=True),
        "mlops.eval.policy_sha256": report["policy_sha256"],
        **{f"mlops.eval.metric.{k}": str(v) for k, v in report["metrics"].items()},
    }
    for key, value in version_tags.items():
        client.set_model_version_tag(report["model"], str(report["version"]), key, value)


def summary(report: Mapping[str, Any], digest: str, recorded: Recorded) -> dict[str, Any]:
    """What ``evaluate_model`` answers once the evaluation is recorded."""
    return {
        "model": report["model"],
        "version": report["version"],
        "passed": report["passed"],
        "failures": report["failures"],
        "metrics": report["metrics"],
        "evaluation_run": recorded.run_id,
        "report_sha256": digest,
        "plots": [f"evaluation/plots/{p}" for p in recorded.plots],
        "fairness": {feature: result["checks"] for feature, result in report["fairness"].items()},
        "champion": report["champion"],
    }

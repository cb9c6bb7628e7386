"""The evaluation agent's tools: held-out metrics, thresholds, champion comparison, fairness, plots.

``evaluate_model`` scores a registered version on the test split its training run made
(read back from the workspace and checked against the digest the run logged), compares it
with the thresholds (the policy's floors, tightened by the spec), with the current
champion on the same rows, and across the spec's sensitive features with fairlearn. It
logs an evaluation run with the report and plots, and writes the evidence tags the gates
read onto the model version. A failed evaluation is recorded, then refused as a gate.
"""

from __future__ import annotations

import json
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from mlops_supervisor.policies import Decision, GateRefusedError, InvalidInputError, ReasonCode
from mlops_supervisor.tools._spec import PipelineSpec
from mlops_supervisor.tools.core import GovernedTool, ModelVersionArgs, ToolContext, to_json, using_store
from mlops_supervisor.tools.data import dataset_digest
from mlops_supervisor.tools.registry import aliased_version, report_digest

__all__ = ["evaluation_tools"]

_LOSSES = {"log_loss", "brier_score", "rmse", "mae", "expected_calibration_error"}


def _stricter(metric: str, a: float | None, b: float | None) -> float:
    """The stricter of two thresholds: the lower ceiling for a loss, the higher floor otherwise."""
    values = [v for v in (a, b) if v is not None]
    return min(values) if metric in _LOSSES else max(values)


def _calibration(y: np.ndarray, p: np.ndarray, bins: int = 10) -> dict[str, Any]:
    edges = np.linspace(0, 1, bins + 1)
    index = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    rows, ece = [], 0.0
    for b in range(bins):
        mask = index == b
        if mask.any():
            gap = abs(float(y[mask].mean()) - float(p[mask].mean()))
            ece += gap * mask.mean()
            rows.append(
                {
                    "bin": b,
                    "count": int(mask.sum()),
                    "predicted": round(float(p[mask].mean()), 4),
                    "observed": round(float(y[mask].mean()), 4),
                }
            )
    return {"expected_calibration_error": round(float(ece), 6), "bins": rows}


class _Evaluator:
    def __init__(self, ctx: ToolContext) -> None:
        self.ctx = ctx
        self.uri = ctx.store_uri

    def _context(self, client: Any, model: str, version: int) -> dict[str, Any]:
        try:
            mv = client.get_model_version(model, str(version))
        except Exception:  # noqa: BLE001 - MLflow's own exception for a missing version
            raise InvalidInputError(
                "unknown_model_version", f"there is no registered model {model!r} version {version}"
            ) from None
        tags = dict(mv.tags)
        run_id = tags.get("mlops.training.run_id")
        if not run_id:
            raise InvalidInputError("evidence_missing", f"{model} version {version} names no training run")
        run = client.get_run(run_id)
        with tempfile.TemporaryDirectory() as tmp:
            spec = PipelineSpec.model_validate(
                yaml.safe_load(Path(client.download_artifacts(run_id, "spec.yaml", tmp)).read_text("utf-8"))
            )
        rt = run.data.tags
        split_dir = Path(self.ctx.workspace) / "datasets" / rt["mlops.data.digest"] / "splits" / rt["mlops.split.key"]
        test_path = split_dir / "test.parquet"
        if not test_path.exists():
            raise InvalidInputError(
                "evidence_missing",
                f"the test split of {model} version {version} is not in this "
                f"workspace ({test_path}); run the data stage of its spec here",
            )
        test = pd.read_parquet(test_path)
        if dataset_digest(test) != rt.get("mlops.split.test.digest"):
            raise InvalidInputError(
                "evidence_inconsistent",
                f"the test split at {test_path} does not match the digest its training run logged",
            )
        return {"mv": mv, "tags": tags, "run": run, "spec": spec, "test": test}

    def _score(
        self, model_uri: str, test: pd.DataFrame, spec: PipelineSpec, classes: list[str] | None
    ) -> dict[str, Any]:
        import mlflow.sklearn
        from mlflow.models import get_model_info

        model = mlflow.sklearn.load_model(model_uri)
        features = [c.name for c in get_model_info(model_uri).signature.inputs]
        x = test[features].copy()
        for column in x.columns:
            if pd.api.types.is_numeric_dtype(x[column]) or pd.api.types.is_bool_dtype(x[column]):
                x[column] = x[column].astype("float64")
        target = test[spec.data.target]
        if classes is None:
            return {"model": model, "x": x, "y": target.to_numpy(float), "pred": model.predict(x), "proba": None}
        index = {c: i for i, c in enumerate(classes)}
        y = target.astype(str).map(index).to_numpy(int)
        proba = model.predict_proba(x) if hasattr(model, "predict_proba") else None
        return {"model": model, "x": x, "y": y, "pred": model.predict(x), "proba": proba}

    @staticmethod
    def _metrics(scored: dict[str, Any], classification: bool) -> dict[str, float]:
        from sklearn import metrics as m

        y, pred, proba = scored["y"], scored["pred"], scored["proba"]
        if not classification:
            return {
                "rmse": float(np.sqrt(m.mean_squared_error(y, pred))),
                "mae": float(m.mean_absolute_error(y, pred)),
                "r2": float(m.r2_score(y, pred)),
            }
        binary = (proba is not None and proba.shape[1] == 2) or len(np.unique(y)) <= 2
        avg = "binary" if binary else "macro"
        out = {
            "accuracy": float(m.accuracy_score(y, pred)),
            "precision": float(m.precision_score(y, pred, average=avg, zero_division=0)),
            "recall": float(m.recall_score(y, pred, average=avg, zero_division=0)),
            "f1": float(m.f1_score(y, pred, average=avg, zero_division=0)),
        }
        if proba is not None:
            out["roc_auc"] = float(
                m.roc_auc_score(y, proba[:, 1]) if binary else m.roc_auc_score(y, proba, multi_class="ovr")
            )
            out["log_loss"] = float(m.log_loss(y, proba, labels=list(range(proba.shape[1]))))
            if binary:
                out["brier_score"] = float(m.brier_score_loss(y, proba[:, 1]))
                out["expected_calibration_error"] = _calibration(y, proba[:, 1])["expected_calibration_error"]
        return {k: round(v, 6) for k, v in out.items()}

    def _fairness(self, spec: PipelineSpec, test: pd.DataFrame, scored: dict[str, Any]) -> dict[str, Any]:
        from fairlearn.metrics import (
            MetricFrame,
            count,
            demographic_parity_difference,
            equalized_odds_difference,
            false_positive_rate,
            selection_rate,
            true_positive_rate,
        )
        from sklearn.metrics import accuracy_score

        limits = {k: v for k, v in self.ctx.policy.evaluation.fairness.items()}
        for k, v in spec.evaluation.fairness.items():
            limits[k] = min(v, limits.get(k, v))
        out: dict[str, Any] = {}
        y, pred = scored["y"], scored["pred"]
        binary = len(np.unique(y)) <= 2
        for feature in spec.data.sensitive_features:
            groups = test[feature].astype(str)
            frame = MetricFrame(
                metrics={
                    "count": count,
                    "accuracy": accuracy_score,
                    "selection_rate": selection_rate,
                    **(
                        {"true_positive_rate": true_positive_rate, "false_positive_rate": false_positive_rate}
                        if binary
                        else {}
                    ),
                },
                y_true=y,
                y_pred=pred,
                sensitive_features=groups,
            )
            values = {
                "demographic_parity_difference": float(
                    demographic_parity_difference(y, pred, sensitive_features=groups)
                )
            }
            if binary:
                values["equalized_odds_difference"] = float(
                    equalized_odds_difference(y, pred, sensitive_features=groups)
                )
            checks = {
                k: {"value": round(v, 6), "limit": limits.get(k), "passed": limits.get(k) is None or v <= limits[k]}
                for k, v in values.items()
            }
            by_group = frame.by_group.reset_index().rename(columns={feature: "group"})
            out[feature] = {
                "checks": checks,
                "by_group": json.loads(by_group.to_json(orient="records")),
                "frame": frame,
            }
        return out

    def _plots(self, directory: Path, scored: dict[str, Any], fairness: dict[str, Any]) -> list[str]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from sklearn.calibration import CalibrationDisplay
        from sklearn.metrics import ConfusionMatrixDisplay, RocCurveDisplay

        directory.mkdir(parents=True, exist_ok=True)
        made = []
        y, pred, proba = scored["y"], scored["pred"], scored["proba"]

        def save(name: str) -> None:
            plt.tight_layout()
            plt.savefig(directory / name, dpi=90)
            plt.close("all")
            made.append(name)

        ConfusionMatrixDisplay.from_predictions(y, pred)
        save("confusion_matrix.png")
        if proba is not None and proba.shape[1] == 2:
            RocCurveDisplay.from_predictions(y, proba[:, 1])
            save("roc.png")
            CalibrationDisplay.from_predictions(y, proba[:, 1], n_bins=10)
            save("calibration.png")
        for feature, result in fairness.items():
            frame = result["frame"].by_group.drop(columns=["count"])
            frame.plot.bar(figsize=(8, 4), title=f"per-group metrics by {feature}")
            save(f"groups_{feature}.png")
        return made

    def evaluate(self, model: str, version: int, *, log: bool = True) -> dict[str, Any]:
        import mlflow

        with using_store(self.uri) as client:
            c = self._context(client, model, version)
            spec: PipelineSpec = c["spec"]
            classes = json.loads(c["tags"]["mlops.target.classes"]) if "mlops.target.classes" in c["tags"] else None
            classification = spec.training.task == "classification"
            scored = self._score(c["mv"].source, c["test"], spec, classes)
            metrics = self._metrics(scored, classification)
            thresholds: dict[str, float] = {}
            for name in set(self.ctx.policy.evaluation.thresholds) | set(spec.evaluation.thresholds):
                thresholds[name] = _stricter(
                    name, self.ctx.policy.evaluation.thresholds.get(name), spec.evaluation.thresholds.get(name)
                )
            failures = []
            for name, limit in sorted(thresholds.items()):
                value = metrics.get(name)
                if value is None:
                    failures.append(f"{name} could not be computed for this model (threshold {limit})")
                elif (value > limit) if name in _LOSSES else (value < limit):
                    failures.append(f"{name} {value:.4f} {'above' if name in _LOSSES else 'below'} {limit}")
            fairness = self._fairness(spec, c["test"], scored) if classification else {}
            for feature, result in fairness.items():
                for name, check in result["checks"].items():
                    if not check["passed"]:
                        failures.append(f"{name} by {feature} {check['value']:.4f} over {check['limit']}")
            champion = self._champion(client, model, version, spec, c["test"], classes, metrics, classification)
            if champion and not champion["passed"]:
                failures.append(champion["why"])
            now = datetime.now(UTC)
            report = {
                "model": model,
                "version": version,
                "training_run": c["run"].info.run_id,
                "data_digest": c["tags"].get("mlops.data.digest"),
                "test_rows": len(c["test"]),
                "metrics": metrics,
                "thresholds": thresholds,
                "champion": champion,
                "fairness": {f: {k: v for k, v in r.items() if k != "frame"} for f, r in fairness.items()},
                "calibration": _calibration(scored["y"], scored["proba"][:, 1])
                if scored["proba"] is not None and scored["proba"].shape[1] == 2
                else None,
                "failures": failures,
                "passed": not failures,
                "max_age_hours": min(self.ctx.policy.evaluation.max_age_hours, spec.evaluation.max_age_hours),
                "evaluated_at": now.isoformat(),
                "policy_sha256": self.ctx.policy.digest,
            }
            digest = report_digest(report)
            if not log:
                return report
            with tempfile.TemporaryDirectory() as tmp:
                plots = self._plots(Path(tmp) / "plots", scored, fairness)
                with mlflow.start_run(
                    experiment_id=c["run"].info.experiment_id,
                    run_name=f"evaluate-{model}-v{version}",
                    tags={
                        "mlops.role": "evaluation",
                        "mlops.model.name": model,
                        "mlops.model.version": str(version),
                        "mlops.training.run_id": c["run"].info.run_id,
                        "mlops.eval.passed": str(not failures).lower(),
                        "mlops.eval.report_digest": digest,
                    },
                ) as run:
                    mlflow.log_metrics({f"test_{k}": v for k, v in metrics.items()})
                    mlflow.log_dict(report, "evaluation/report.json")
                    mlflow.log_text(_markdown(report, plots), "evaluation/report.md")
                    mlflow.log_artifacts(str(Path(tmp) / "plots"), "evaluation/plots")
            version_tags = {
                "mlops.eval.run_id": run.info.run_id,
                "mlops.eval.passed": str(not failures).lower(),
                "mlops.eval.report_digest": digest,
                "mlops.eval.at": now.isoformat(),
                "mlops.eval.failures": json.dumps(failures),
                "mlops.eval.max_age_hours": str(report["max_age_hours"]),
                **{f"mlops.eval.metric.{k}": str(v) for k, v in metrics.items()},
            }
            for key, value in version_tags.items():
                client.set_model_version_tag(model, str(version), key, value)
        summary = {
            "model": model,
            "version": version,
            "passed": not failures,
            "failures": failures,
            "metrics": metrics,
            "evaluation_run": run.info.run_id,
            "report_sha256": digest,
            "plots": [f"evaluation/plots/{p}" for p in plots],
            "fairness": {f: r["checks"] for f, r in fairness.items()},
            "champion": champion,
        }
        if failures:
            raise GateRefusedError(
                Decision.deny(
                    "evaluate_model",
                    ReasonCode.EVALUATION_FAILED,
                    f"{model} version {version} failed its evaluation: {'; '.join(failures)}. The report is in "
                    f"evaluation run {run.info.run_id}; nothing gets an alias.",
                )
            )
        return summary

    def _champion(
        self,
        client: Any,
        model: str,
        version: int,
        spec: PipelineSpec,
        test: pd.DataFrame,
        classes: list[str] | None,
        metrics: dict[str, float],
        classification: bool,
    ) -> dict[str, Any] | None:
        champion = aliased_version(client, model)
        if champion is None:  # no champion yet: nothing to beat
            return None
        if int(champion.version) == version:
            return None
        theirs = self._metrics(self._score(champion.source, test, spec, classes), classification)
        metric = spec.training.metric if spec.training.metric in metrics else next(iter(metrics))
        passed, why = beats_champion(
            metric, metrics[metric], theirs[metric], spec.evaluation.champion, greater_is_better=metric not in _LOSSES
        )
        if not passed:
            why = f"does not beat champion version {champion.version} on {metric}: {why}"
        return {
            "version": int(champion.version),
            "metric": metric,
            "challenger": metrics[metric],
            "champion": theirs[metric],
            "passed": passed,
            "why": why,
        }


def beats_champion(metric: str, ours: float, theirs: float, rule: Any, *, greater_is_better: bool) -> tuple[bool, str]:
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


def _markdown(report: dict[str, Any], plots: list[str]) -> str:
    lines = [
        f"# Evaluation of {report['model']} version {report['version']}",
        "",
        f"**{'PASSED' if report['passed'] else 'FAILED'}** on {report['test_rows']} held-out rows "
        f"(data sha256 {str(report['data_digest'])[:12]}, training run {report['training_run']}).",
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


def evaluation_tools(ctx: ToolContext) -> list[GovernedTool]:
    """evaluate_model and check_fairness."""
    evaluator = _Evaluator(ctx)

    def evaluate_model(model: str, version: int) -> str:
        return to_json(evaluator.evaluate(model, version))

    def check_fairness(model: str, version: int) -> str:
        report = evaluator.evaluate(model, version, log=False)
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

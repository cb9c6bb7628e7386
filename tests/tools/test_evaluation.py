"""The evaluation jobs, each alone: scoring, thresholds, fairness, champion comparison and recording."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as m
from sklearn.linear_model import LogisticRegression

from mlops_supervisor.tools._spec import ChampionComparison
from mlops_supervisor.tools.core import using_store
from mlops_supervisor.tools.evaluation import (
    FeatureFairness,
    LoadedModel,
    Scored,
    assess_fairness,
    build_report,
    calibration,
    combined_thresholds,
    compare_with_champion,
    compute_metrics,
    fairness_failures,
    fairness_limits,
    predict,
    record_evaluation,
    render_markdown,
    threshold_failures,
)
from mlops_supervisor.tools.registry import report_digest, version_evidence

# y and pred for two groups of four rows, chosen so the fairness numbers are easy to check by hand:
# group a: selection rate 1, TPR 1, FPR 1; group b: selection rate 0.25, TPR 0.5, FPR 0.
# Demographic parity difference 0.75; equalized odds difference max(|1-0.5|, |1-0|) = 1.
FAIR_Y = np.array([1, 1, 0, 0, 1, 1, 0, 0])
FAIR_PRED = np.array([1, 1, 1, 1, 1, 0, 0, 0])
FAIR_TEST = pd.DataFrame({"sex": ["a"] * 4 + ["b"] * 4})


def _binary_scored(rows: int = 200, seed: int = 0) -> Scored:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, rows)
    p1 = np.clip(0.6 * y + 0.4 * rng.random(rows), 0.01, 0.99)
    return Scored(y=y, pred=(p1 >= 0.5).astype(int), proba=np.column_stack([1 - p1, p1]))


class _RecordingModel:
    """A model without predict_proba that keeps the frame it was asked to predict on."""

    def __init__(self) -> None:
        self.seen: pd.DataFrame | None = None

    def predict(self, x: pd.DataFrame) -> np.ndarray:
        self.seen = x
        return np.zeros(len(x), dtype=int)


# -- scoring ------------------------------------------------------------------------------------


def test_predict_feeds_signature_columns_as_float64_and_indexes_labels_by_class_order() -> None:
    """Only the signature's columns reach the model, numbers and booleans as float64; labels become class indexes."""
    test = pd.DataFrame(
        {"age": [30, 40, 50], "member": [True, False, True], "city": ["x", "y", "z"], "label": ["no", "yes", "no"]}
    )
    model = _RecordingModel()
    scored = predict(LoadedModel(model=model, features=["age", "member", "city"]), test, "label", ["yes", "no"])
    assert model.seen is not None
    assert list(model.seen.columns) == ["age", "member", "city"]
    assert [str(t) for t in model.seen.dtypes[:2]] == ["float64", "float64"]
    assert model.seen["city"].dtype == test["city"].dtype  # text is left as it was
    assert scored.y.tolist() == [1, 0, 1]
    assert scored.proba is None  # the model has no predict_proba


def test_predict_returns_class_probabilities_and_reads_a_regression_target_as_floats() -> None:
    """A classifier's probabilities come back one column per class; classes=None scores a regression, no probabilities."""
    x = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0], "t": ["0", "0", "1", "1"], "v": [1, 2, 3, 4]})
    classifier = LogisticRegression().fit(x[["a"]], [0, 0, 1, 1])
    scored = predict(LoadedModel(model=classifier, features=["a"]), x, "t", ["0", "1"])
    assert scored.proba is not None and scored.proba.shape == (4, 2)
    assert scored.positive_proba is not None
    np.testing.assert_allclose(scored.positive_proba, classifier.predict_proba(x[["a"]])[:, 1])
    regression = predict(LoadedModel(model=_RecordingModel(), features=["a"]), x, "v", None)
    assert regression.y.dtype == np.float64 and regression.y.tolist() == [1.0, 2.0, 3.0, 4.0]
    assert regression.proba is None and regression.positive_proba is None


def test_binary_metrics_match_scikit_learn_rounded_to_six_places() -> None:
    """Two classes: accuracy, precision, recall, f1, roc_auc, log_loss and brier_score equal scikit-learn's, rounded."""
    scored = _binary_scored()
    assert scored.proba is not None
    y, pred, p1 = scored.y, scored.pred, scored.proba[:, 1]
    assert compute_metrics(scored, classification=True) == {
        "accuracy": round(m.accuracy_score(y, pred), 6),
        "precision": round(m.precision_score(y, pred), 6),
        "recall": round(m.recall_score(y, pred), 6),
        "f1": round(m.f1_score(y, pred), 6),
        "roc_auc": round(m.roc_auc_score(y, p1), 6),
        "log_loss": round(m.log_loss(y, scored.proba), 6),
        "brier_score": round(m.brier_score_loss(y, p1), 6),
        "expected_calibration_error": calibration(y, p1)["expected_calibration_error"],
    }


def test_multiclass_metrics_are_macro_averaged_without_the_two_class_ones() -> None:
    """Three classes: macro precision/recall/f1, one-vs-rest roc_auc; no brier_score or calibration error."""
    rng = np.random.default_rng(1)
    y = np.repeat([0, 1, 2], 20)
    proba = rng.dirichlet(np.ones(3), size=60)
    proba[np.arange(60), y] += 1.0
    proba /= proba.sum(axis=1, keepdims=True)
    pred = proba.argmax(axis=1)
    pred[:5] = 2  # some mistakes, so the averages differ from 1
    metrics = compute_metrics(Scored(y=y, pred=pred, proba=proba), classification=True)
    assert metrics == {
        "accuracy": round(m.accuracy_score(y, pred), 6),
        "precision": round(m.precision_score(y, pred, average="macro"), 6),
        "recall": round(m.recall_score(y, pred, average="macro"), 6),
        "f1": round(m.f1_score(y, pred, average="macro"), 6),
        "roc_auc": round(m.roc_auc_score(y, proba, multi_class="ovr"), 6),
        "log_loss": round(m.log_loss(y, proba), 6),
    }


def test_regression_metrics_are_rmse_mae_and_r2_unrounded() -> None:
    """A regression gets rmse, mae and r2 exactly as scikit-learn computes them (no rounding)."""
    y = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    pred = np.array([1.1, 1.9, 3.3, 3.7, 5.123456789])
    assert compute_metrics(Scored(y=y, pred=pred, proba=None), classification=False) == {
        "rmse": float(np.sqrt(m.mean_squared_error(y, pred))),
        "mae": float(m.mean_absolute_error(y, pred)),
        "r2": float(m.r2_score(y, pred)),
    }


def test_calibration_bins_and_expected_calibration_error_by_hand() -> None:
    """Four rows in four bins: ECE is the row-weighted mean gap |observed - predicted| = (0.05+0.85+0.15+0.05)/4."""
    result = calibration(np.array([0, 1, 1, 1]), np.array([0.05, 0.15, 0.85, 0.95]))
    assert result == {
        "expected_calibration_error": 0.275,
        "bins": [
            {"bin": 0, "count": 1, "predicted": 0.05, "observed": 0.0},
            {"bin": 1, "count": 1, "predicted": 0.15, "observed": 1.0},
            {"bin": 8, "count": 1, "predicted": 0.85, "observed": 1.0},
            {"bin": 9, "count": 1, "predicted": 0.95, "observed": 1.0},
        ],
    }


# -- thresholds ---------------------------------------------------------------------------------


def test_spec_tightens_but_never_loosens_the_policy_thresholds() -> None:
    """Per metric the stricter wins: the higher floor for a score, the lower ceiling for a loss; the spec may add metrics."""
    combined = combined_thresholds({"roc_auc": 0.75, "log_loss": 0.5}, {"roc_auc": 0.7, "log_loss": 0.4, "f1": 0.6})
    assert combined == {"roc_auc": 0.75, "log_loss": 0.4, "f1": 0.6}
    assert combined_thresholds({"accuracy": 0.7}, {"accuracy": 0.9}) == {"accuracy": 0.9}


def test_threshold_failures_name_the_metric_its_value_and_the_threshold() -> None:
    """A score below its floor, a loss above its ceiling and a metric never computed fail, by name; the floor itself passes."""
    metrics = {"roc_auc": 0.7, "log_loss": 0.6, "accuracy": 0.7}
    thresholds = {"roc_auc": 0.75, "log_loss": 0.5, "accuracy": 0.7, "brier_score": 0.2}
    assert threshold_failures(metrics, thresholds) == [
        "brier_score could not be computed for this model (threshold 0.2)",
        "log_loss 0.6000 above 0.5",
        "roc_auc 0.7000 below 0.75",
    ]
    assert threshold_failures({"roc_auc": 0.8, "log_loss": 0.5}, {"roc_auc": 0.75, "log_loss": 0.5}) == []


# -- fairness -----------------------------------------------------------------------------------


def test_fairness_limits_take_the_smaller_of_policy_and_spec() -> None:
    """A spec can only lower a policy's difference limit, and can add a limit the policy lacks."""
    policy = {"demographic_parity_difference": 0.25, "equalized_odds_difference": 0.25}
    assert fairness_limits(policy, {"demographic_parity_difference": 0.4, "equalized_odds_difference": 0.1}) == {
        "demographic_parity_difference": 0.25,
        "equalized_odds_difference": 0.1,
    }
    assert fairness_limits({}, {"demographic_parity_difference": 0.3}) == {"demographic_parity_difference": 0.3}


def test_fairness_difference_above_its_limit_fails_with_a_message() -> None:
    """Equalized odds 1.0 over a 0.5 limit fails and is reported; demographic parity 0.75 under 0.8 passes."""
    limits = {"demographic_parity_difference": 0.8, "equalized_odds_difference": 0.5}
    result = assess_fairness(FAIR_Y, FAIR_PRED, FAIR_TEST, ["sex"], limits)
    assert result["sex"].checks == {
        "demographic_parity_difference": {"value": 0.75, "limit": 0.8, "passed": True},
        "equalized_odds_difference": {"value": 1.0, "limit": 0.5, "passed": False},
    }
    assert fairness_failures(result) == ["equalized_odds_difference by sex 1.0000 over 0.5"]


def test_fairness_reports_per_group_rows_and_passes_at_or_without_a_limit() -> None:
    """Per-group count, accuracy, selection and error rates by group; a difference equal to its limit, or unlimited, passes."""
    result = assess_fairness(FAIR_Y, FAIR_PRED, FAIR_TEST, ["sex"], {"demographic_parity_difference": 0.75})
    assert result["sex"].as_report() == {
        "checks": {
            "demographic_parity_difference": {"value": 0.75, "limit": 0.75, "passed": True},
            "equalized_odds_difference": {"value": 1.0, "limit": None, "passed": True},
        },
        "by_group": [
            {
                "group": "a",
                "count": 4.0,
                "accuracy": 0.5,
                "selection_rate": 1.0,
                "true_positive_rate": 1.0,
                "false_positive_rate": 1.0,
            },
            {
                "group": "b",
                "count": 4.0,
                "accuracy": 0.75,
                "selection_rate": 0.25,
                "true_positive_rate": 0.5,
                "false_positive_rate": 0.0,
            },
        ],
    }
    assert fairness_failures(result) == []


def test_multiclass_fairness_checks_demographic_parity_only() -> None:
    """With more than two classes there is no equalized odds check and no per-group true/false positive rates."""
    y = np.array([0, 1, 2, 0, 1, 2])
    pred = np.array([0, 1, 1, 1, 1, 2])
    result = assess_fairness(y, pred, pd.DataFrame({"g": ["x"] * 3 + ["y"] * 3}), ["g"], {})
    assert list(result["g"].checks) == ["demographic_parity_difference"]
    assert set(result["g"].rows[0]) == {"group", "count", "accuracy", "selection_rate"}


# -- champion comparison ------------------------------------------------------------------------


def test_challenger_worse_than_the_champion_fails_with_the_reason() -> None:
    """On the spec's metric a lower roc_auc than the champion's fails, naming the champion version and both values."""
    result = compare_with_champion(
        3, {"accuracy": 0.9, "roc_auc": 0.80}, {"accuracy": 0.8, "roc_auc": 0.85}, "roc_auc", ChampionComparison()
    )
    assert result == {
        "version": 3,
        "metric": "roc_auc",
        "challenger": 0.80,
        "champion": 0.85,
        "passed": False,
        "why": "does not beat champion version 3 on roc_auc: 0.8000 vs champion 0.8500",
    }


def test_a_loss_is_beaten_by_going_lower_and_a_missing_metric_falls_back_to_the_first() -> None:
    """A metric the challenger lacks falls back to its first (rmse here); a lower rmse beats the champion."""
    result = compare_with_champion(
        1, {"rmse": 1.0, "r2": 0.5}, {"rmse": 1.2, "r2": 0.6}, "roc_auc", ChampionComparison()
    )
    assert (result["metric"], result["passed"], result["why"]) == ("rmse", True, "")
    worse = compare_with_champion(1, {"rmse": 1.3}, {"rmse": 1.2}, "rmse", ChampionComparison())
    assert worse["passed"] is False


def test_a_minimum_improvement_not_reached_fails_through_mlflows_validator() -> None:
    """With a 0.01 absolute minimum, +0.005 fails with MLflow's explanation; +0.02 passes."""
    rule = ChampionComparison(min_absolute_improvement=0.01)
    short = compare_with_champion(2, {"roc_auc": 0.905}, {"roc_auc": 0.90}, "roc_auc", rule)
    assert short["passed"] is False
    assert short["why"].startswith(
        "does not beat champion version 2 on roc_auc: Metric roc_auc minimum absolute change check failed"
    )
    assert compare_with_champion(2, {"roc_auc": 0.92}, {"roc_auc": 0.90}, "roc_auc", rule)["passed"] is True


# -- recording ----------------------------------------------------------------------------------


def _report(scored: Scored, fairness: dict[str, FeatureFairness], failures: list[str], at: datetime) -> dict[str, Any]:
    return build_report(
        model="m",
        version=1,
        task="classification",
        training_run="train-run",
        data_digest="d" * 64,
        test_rows=len(scored.y),
        metrics={"roc_auc": 0.7, "accuracy": 0.8},
        thresholds={"roc_auc": 0.75},
        fairness_limits={"demographic_parity_difference": 0.25},
        champion=None,
        fairness=fairness,
        scored=scored,
        failures=failures,
        max_age_hours=24.0,
        evaluated_at=at,
        policy_digest="p" * 64,
    )


def test_report_keeps_its_keys_in_order_and_fails_with_any_failure() -> None:
    """The report's keys and order are fixed; passed is 'no failures'; calibration only for two-class probabilities."""
    at = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    fairness = assess_fairness(FAIR_Y, FAIR_PRED, FAIR_TEST, ["sex"], {})
    scored = _binary_scored(rows=8)
    report = _report(scored, fairness, ["roc_auc 0.7000 below 0.75"], at)
    assert list(report) == [
        "model",
        "version",
        "task",
        "training_run",
        "data_digest",
        "test_rows",
        "metrics",
        "thresholds",
        "fairness_limits",
        "champion",
        "fairness",
        "calibration",
        "failures",
        "passed",
        "max_age_hours",
        "evaluated_at",
        "policy_sha256",
    ]
    assert report["passed"] is False and report["evaluated_at"] == "2025-01-02T03:04:05+00:00"
    assert report["fairness"] == {"sex": fairness["sex"].as_report()}
    assert scored.proba is not None
    assert report["calibration"] == calibration(scored.y, scored.proba[:, 1])
    no_proba = _report(Scored(y=scored.y, pred=scored.pred, proba=None), {}, [], at)
    assert no_proba["passed"] is True and no_proba["calibration"] is None


def test_markdown_states_the_verdict_metrics_thresholds_and_failures() -> None:
    """The markdown page heads with FAILED, names the task and policy, rows each metric with its threshold, lists failures."""
    report = _report(_binary_scored(rows=8), {}, ["roc_auc 0.7000 below 0.75"], datetime(2025, 1, 1, tzinfo=UTC))
    text = render_markdown(report, ["confusion_matrix.png"])
    assert text.startswith("# Evaluation of m version 1\n\n**FAILED** on 8 held-out rows (data sha256 dddddddddddd,")
    assert "\n\nJudged as a classification against the floors of policy sha256 pppppppppppp.\n\n" in text
    assert "| accuracy | 0.8000 |  |\n| roc_auc | 0.7000 | 0.75 |" in text
    assert text.endswith("## Failures\n\n- roc_auc 0.7000 below 0.75\n\n## Plots\n\n- plots/confusion_matrix.png\n")


def test_recording_logs_the_evaluation_run_and_tags_the_version_as_the_gates_read_it(tmp_path: Path) -> None:
    """A real MLflow store: an evaluation run with metrics, report, markdown and plots; version tags the gates accept."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    scored = Scored(y=FAIR_Y, pred=FAIR_PRED, proba=_binary_scored(rows=8).proba)
    fairness = assess_fairness(FAIR_Y, FAIR_PRED, FAIR_TEST, ["sex"], {})
    at = datetime.now(UTC)
    with using_store(uri) as client:
        experiment = client.create_experiment("e", artifact_location=(tmp_path / "artifacts").as_uri())
        training = client.create_run(experiment)
        client.create_registered_model("m")
        client.create_model_version("m", source=(tmp_path / "model").as_uri(), run_id=training.info.run_id)
        report = _report(scored, fairness, [], at)
        report["training_run"] = training.info.run_id
        digest = report_digest(report)
        recorded = record_evaluation(client, report, digest, experiment_id=experiment, scored=scored, fairness=fairness)
        run = client.get_run(recorded.run_id)
        artifacts = {a.path for a in client.list_artifacts(recorded.run_id, "evaluation")}
        logged = json.loads(
            Path(client.download_artifacts(recorded.run_id, "evaluation/report.json", str(tmp_path))).read_text()
        )
        tags = client.get_model_version("m", "1").tags
        evidence = version_evidence(client, "m", 1).evaluation
    assert recorded.plots == ["confusion_matrix.png", "roc.png", "calibration.png", "groups_sex.png"]
    assert run.info.run_name == "evaluate-m-v1"
    assert {k: v for k, v in run.data.tags.items() if k.startswith("mlops.")} == {
        "mlops.role": "evaluation",
        "mlops.model.name": "m",
        "mlops.model.version": "1",
        "mlops.training.run_id": training.info.run_id,
        "mlops.eval.passed": "true",
        "mlops.eval.report_digest": digest,
    }
    assert run.data.metrics == {"test_roc_auc": 0.7, "test_accuracy": 0.8}
    assert artifacts == {"evaluation/report.json", "evaluation/report.md", "evaluation/plots"}
    assert logged == report and report_digest(logged) == digest
    assert {k: v for k, v in tags.items() if k.startswith("mlops.eval.")} == {
        "mlops.eval.run_id": recorded.run_id,
        "mlops.eval.passed": "true",
        "mlops.eval.report_digest": digest,
        "mlops.eval.at": at.isoformat(),
        "mlops.eval.failures": "[]",
        "mlops.eval.max_age_hours": "24.0",
        "mlops.eval.task": "classification",
        "mlops.eval.thresholds": '{"roc_auc": 0.75}',
        "mlops.eval.fairness_limits": '{"demographic_parity_difference": 0.25}',
        "mlops.eval.policy_sha256": "p" * 64,
        "mlops.eval.metric.roc_auc": "0.7",
        "mlops.eval.metric.accuracy": "0.8",
    }
    assert evidence is not None and evidence.consistent and evidence.passed
    assert (evidence.task, evidence.thresholds, evidence.fairness_limits, evidence.policy_digest) == (
        "classification",
        {"roc_auc": 0.75},
        {"demographic_parity_difference": 0.25},
        "p" * 64,
    )


@pytest.mark.parametrize("two_classes", [True, False])
def test_scored_positive_proba_only_for_two_class_probabilities(two_classes: bool) -> None:
    """positive_proba is the second probability column of a two-class model and None otherwise."""
    proba = np.array([[0.2, 0.8], [0.6, 0.4]]) if two_classes else np.array([[0.2, 0.3, 0.5], [0.1, 0.1, 0.8]])
    scored = Scored(y=np.array([1, 0]), pred=np.array([1, 0]), proba=proba)
    expected = [0.8, 0.4] if two_classes else None
    assert (scored.positive_proba.tolist() if scored.positive_proba is not None else None) == expected


def test_plots_of_a_regression_model_show_predicted_against_actual(tmp_path: Path) -> None:
    """A regressor gets a predicted-against-actual plot; a confusion matrix is only drawn for classes."""
    from mlops_supervisor.tools.evaluation._record import render_plots

    y = np.linspace(0.0, 10.0, 30)
    regression = Scored(y=y, pred=y + 0.5, proba=None, classification=False)
    assert render_plots(tmp_path / "reg", regression, {}) == ["predicted_vs_actual.png"]
    assert (tmp_path / "reg" / "predicted_vs_actual.png").stat().st_size > 0
    binary = _binary_scored(rows=40)
    assert render_plots(tmp_path / "cls", binary, {}) == ["confusion_matrix.png", "roc.png", "calibration.png"]

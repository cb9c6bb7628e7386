"""Scoring: a model's predictions on the test rows and the metrics they earn.

``load_model`` is the one read from MLflow (the logged model and the features its signature
names); ``predict``, ``compute_metrics`` and ``calibration`` are plain functions over a fitted
model, frames and arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from mlops_supervisor.tools.core import load_sklearn_model

__all__ = ["LoadedModel", "Scored", "calibration", "compute_metrics", "load_model", "predict", "score_model"]


@dataclass(frozen=True)
class LoadedModel:
    """A logged model and the feature columns its signature takes, in order."""

    model: Any
    """A fitted scikit-learn estimator (``predict``, and ``predict_proba`` for most classifiers)."""
    features: list[str]


@dataclass(frozen=True)
class Scored:
    """A model's answers on the test rows.

    ``y`` holds class indexes (classification) or values (regression), ``pred`` the predictions
    in the same terms, ``proba`` one column per class, or ``None`` when the model gives none.
    """

    y: np.ndarray
    pred: np.ndarray
    proba: np.ndarray | None
    classification: bool = True

    @property
    def positive_proba(self) -> np.ndarray | None:
        """The positive class's probabilities of a two-class model, else ``None``."""
        return self.proba[:, 1] if self.proba is not None and self.proba.shape[1] == 2 else None


def load_model(model_uri: str) -> LoadedModel:
    """The scikit-learn model logged at ``model_uri`` and the features its signature names."""
    from mlflow.models import get_model_info

    model = load_sklearn_model(model_uri)
    features = [c.name for c in get_model_info(model_uri).signature.inputs]
    return LoadedModel(model=model, features=features)


def predict(loaded: LoadedModel, test: pd.DataFrame, target: str, classes: list[str] | None) -> Scored:
    """``loaded``'s answers on ``test``; ``classes`` (the training run's, in order) maps labels to indexes.

    ``classes=None`` scores a regression: the target is read as floats and there are no probabilities.
    """
    model = loaded.model
    x = test[loaded.features].copy()
    for column in x.columns:
        # training fed numbers and booleans as float64, and the signature was inferred from that
        if pd.api.types.is_numeric_dtype(x[column]) or pd.api.types.is_bool_dtype(x[column]):
            x[column] = x[column].astype("float64")
    labels = test[target]
    if classes is None:
        return Scored(y=labels.to_numpy(float), pred=model.predict(x), proba=None, classification=False)
    index = {c: i for i, c in enumerate(classes)}
    y = labels.astype(str).map(index).to_numpy(int)
    proba = model.predict_proba(x) if hasattr(model, "predict_proba") else None
    return Scored(y=y, pred=model.predict(x), proba=proba)


def score_model(model_uri: str, test: pd.DataFrame, target: str, classes: list[str] | None) -> Scored:
    """The answers of the model logged at ``model_uri`` on ``test`` (see ``predict``)."""
    return predict(load_model(model_uri), test, target, classes)


def compute_metrics(scored: Scored, classification: bool) -> dict[str, float]:
    """The held-out metrics of ``scored``; a classification's are rounded to 6 places, a regression's are not.

    Regression: rmse, mae, r2. Classification: accuracy, precision, recall, f1 (macro-averaged past
    two classes); with probabilities roc_auc and log_loss; with two classes brier_score and
    expected_calibration_error.
    """
    from sklearn import metrics as m

    y, pred, proba = scored.y, scored.pred, scored.proba
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
            out["expected_calibration_error"] = calibration(y, proba[:, 1])["expected_calibration_error"]
    return {k: round(v, 6) for k, v in out.items()}


def calibration(y: np.ndarray, p: np.ndarray, bins: int = 10) -> dict[str, Any]:
    """Expected calibration error of positive-class probabilities ``p`` and the non-empty equal-width bins behind it."""
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

"""Fairness: per-group metrics and between-group differences over the spec's sensitive features.

The limits are the policy's, tightened by the spec (the smaller difference counts). fairlearn
computes the numbers; equalized odds and the per-group true and false positive rates need two
classes, so a multi-class target gets demographic parity only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

import numpy as np
import pandas as pd

__all__ = ["FairnessCheck", "FeatureFairness", "assess_fairness", "fairness_failures", "fairness_limits"]


class FairnessCheck(TypedDict):
    """One fairness difference against its limit; no limit always passes."""

    value: float
    limit: float | None
    passed: bool


@dataclass(frozen=True)
class FeatureFairness:
    """The fairness of one sensitive feature: its checks, and its per-group metrics as a frame and as report rows."""

    checks: dict[str, FairnessCheck]
    by_group: pd.DataFrame
    """fairlearn's per-group metrics, indexed by group (what the per-group plot draws)."""
    rows: list[dict[str, Any]]
    """The same per-group metrics as JSON records, the group in a ``group`` column."""

    def as_report(self) -> dict[str, Any]:
        """The checks and the per-group rows, as the evaluation report holds them."""
        return {"checks": self.checks, "by_group": self.rows}


def fairness_limits(policy: Mapping[str, float], spec: Mapping[str, float]) -> dict[str, float]:
    """The policy's difference limits, each tightened (never loosened) by the spec's, plus the spec's own."""
    limits = dict(policy)
    for name, value in spec.items():
        limits[name] = min(value, limits.get(name, value))
    return limits


def assess_fairness(
    y: np.ndarray, pred: np.ndarray, test: pd.DataFrame, features: Sequence[str], limits: Mapping[str, float]
) -> dict[str, FeatureFairness]:
    """For each of ``features`` (columns of ``test``, the rows ``y`` and ``pred`` belong to), its checks and groups."""
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

    binary = len(np.unique(y)) <= 2
    out: dict[str, FeatureFairness] = {}
    for feature in features:
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
            "demographic_parity_difference": float(demographic_parity_difference(y, pred, sensitive_features=groups))
        }
        if binary:
            values["equalized_odds_difference"] = float(equalized_odds_difference(y, pred, sensitive_features=groups))
        # the unrounded difference is judged, so one a hair over its limit fails though it rounds to it
        checks: dict[str, FairnessCheck] = {
            name: {
                "value": round(value, 6),
                "limit": limits.get(name),
                "passed": limits.get(name) is None or value <= limits[name],
            }
            for name, value in values.items()
        }
        by_group = frame.by_group
        rows = json.loads(by_group.reset_index().rename(columns={feature: "group"}).to_json(orient="records"))
        out[feature] = FeatureFairness(checks=checks, by_group=by_group, rows=rows)
    return out


def fairness_failures(fairness: Mapping[str, FeatureFairness]) -> list[str]:
    """One message per fairness check over its limit, feature by feature."""
    return [
        f"{name} by {feature} {check['value']:.4f} over {check['limit']}"
        for feature, result in fairness.items()
        for name, check in result.checks.items()
        if not check["passed"]
    ]

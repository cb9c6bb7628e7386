"""Thresholds: the policy's metric floors tightened by the spec, and the metrics that miss them.

A spec may tighten a policy threshold, never loosen it: for each metric the stricter of the
two counts (the lower ceiling for a loss, the higher floor for anything else).
"""

from __future__ import annotations

from collections.abc import Mapping

from mlops_supervisor.policies.floors import LOSSES

__all__ = ["combined_thresholds", "stricter", "threshold_failures"]


def stricter(metric: str, a: float | None, b: float | None) -> float:
    """The stricter of two thresholds: the lower ceiling for a loss, the higher floor otherwise."""
    values = [v for v in (a, b) if v is not None]
    return min(values) if metric in LOSSES else max(values)


def combined_thresholds(policy: Mapping[str, float], spec: Mapping[str, float]) -> dict[str, float]:
    """Every metric either names, at the stricter of the two thresholds."""
    return {name: stricter(name, policy.get(name), spec.get(name)) for name in set(policy) | set(spec)}


def threshold_failures(metrics: Mapping[str, float], thresholds: Mapping[str, float]) -> list[str]:
    """One message per threshold missed, by metric name; a metric the model could not produce misses its threshold."""
    failures = []
    for name, limit in sorted(thresholds.items()):
        value = metrics.get(name)
        if value is None:
            failures.append(f"{name} could not be computed for this model (threshold {limit})")
        elif (value > limit) if name in LOSSES else (value < limit):
            failures.append(f"{name} {value:.4f} {'above' if name in LOSSES else 'below'} {limit}")
    return failures

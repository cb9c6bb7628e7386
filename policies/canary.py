"""Canary analysis as a pure function: canary against stable over one window of traffic.

The verdict is ``pass`` (take the next traffic step), ``fail`` (roll back now) or
``inconclusive`` (too little traffic to say: hold, never promote on it). Where labels came back
for both versions, ``analyze_canary_quality`` also weighs the canary's live quality against the
stable version's; without enough of them it is ``not_judged`` and never holds a canary back.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

__all__ = [
    "CanaryThresholds",
    "CanaryVerdict",
    "LabelledWindow",
    "QualityVerdict",
    "VersionWindow",
    "analyze_canary",
    "analyze_canary_quality",
    "quantile_from_buckets",
]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class VersionWindow(_Frozen):
    """What one version served during the window."""

    requests: int
    errors: int
    p95_seconds: float | None

    @property
    def error_rate(self) -> float:
        """Errors over requests (0 without requests)."""
        return self.errors / self.requests if self.requests else 0.0


class CanaryThresholds(_Frozen):
    """How much worse than stable a canary may be."""

    min_requests: int = 100
    max_error_rate_increase: float = 0.01
    max_p95_latency_ratio: float = 1.5


class CanaryVerdict(_Frozen):
    """pass, fail or inconclusive, with the reasons and the numbers behind them."""

    verdict: Literal["pass", "fail", "inconclusive"]
    reasons: tuple[str, ...]
    canary: VersionWindow
    stable: VersionWindow | None


def quantile_from_buckets(buckets: list[tuple[float, float]], q: float) -> float | None:
    """The ``q`` quantile from sorted cumulative histogram buckets ``(upper_bound, count)``, by the bucket's bound."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    target = q * buckets[-1][1]
    for bound, count in buckets:
        if count >= target:
            return bound
    return buckets[-1][0]


def analyze_canary(canary: VersionWindow, stable: VersionWindow | None, limits: CanaryThresholds) -> CanaryVerdict:
    """Judge the canary's window against the stable version's, under ``limits``."""
    failures: list[str] = []
    baseline_errors = stable.error_rate if stable else 0.0
    # Errors judge early once there are a few of them: a canary that is down must not wait for
    # min_requests before traffic comes off it.
    judged = canary.requests >= limits.min_requests or canary.errors >= 5
    if judged and canary.error_rate - baseline_errors > limits.max_error_rate_increase:
        failures.append(
            f"error rate {canary.error_rate:.2%} vs stable {baseline_errors:.2%} "
            f"(allowed increase {limits.max_error_rate_increase:.2%})"
        )
    if (
        stable is not None
        and canary.p95_seconds is not None
        and stable.p95_seconds
        and canary.requests >= limits.min_requests
        and canary.p95_seconds / stable.p95_seconds > limits.max_p95_latency_ratio
    ):
        failures.append(
            f"p95 latency {canary.p95_seconds * 1000:.1f} ms vs stable {stable.p95_seconds * 1000:.1f} ms "
            f"(allowed ratio {limits.max_p95_latency_ratio:g})"
        )
    if failures:
        return CanaryVerdict(verdict="fail", reasons=tuple(failures), canary=canary, stable=stable)
    if canary.requests < limits.min_requests:
        return CanaryVerdict(
            verdict="inconclusive",
            reasons=(f"{canary.requests} canary requests in the window; at least {limits.min_requests} needed",),
            canary=canary,
            stable=stable,
        )
    return CanaryVerdict(
        verdict="pass",
        reasons=(f"{canary.requests} requests, error rate {canary.error_rate:.2%}, within limits",),
        canary=canary,
        stable=stable,
    )


class LabelledWindow(_Frozen):
    """One version's labelled predictions in the window: how many, and its accuracy (rmse for a regressor)."""

    labelled: int
    metric: Literal["accuracy", "rmse"]
    value: float | None


class QualityVerdict(_Frozen):
    """pass, fail or not_judged (too few labels, or nothing to compare with), with the reason."""

    verdict: Literal["pass", "fail", "not_judged"]
    reason: str


def analyze_canary_quality(
    canary: LabelledWindow, stable: LabelledWindow | None, *, min_labelled: int, max_decay: float
) -> QualityVerdict:
    """Whether the canary's live quality is worse than the stable version's by more than ``max_decay``.

    Accuracy may drop by at most ``max_decay``; rmse may rise by at most that share of the stable
    version's. Judged only when both versions have ``min_labelled`` labelled predictions.
    """
    if stable is None:
        return QualityVerdict(verdict="not_judged", reason="labelled quality not judged: no stable version")
    if canary.labelled < min_labelled or stable.labelled < min_labelled or canary.value is None or stable.value is None:
        return QualityVerdict(
            verdict="not_judged",
            reason=f"labelled quality not judged: {canary.labelled} labelled canary and {stable.labelled} labelled "
            f"stable predictions in the window; at least {min_labelled} each needed",
        )
    if canary.metric == "accuracy":
        worse, allowed = stable.value - canary.value, f"{max_decay:g}"
    else:
        worse = (canary.value - stable.value) / stable.value if stable.value else canary.value - stable.value
        allowed = f"{max_decay:.0%} of stable's"
    said = (
        f"live {canary.metric} {canary.value:.4f} on {canary.labelled} labelled vs stable {stable.value:.4f} on "
        f"{stable.labelled}"
    )
    if worse > max_decay:
        return QualityVerdict(verdict="fail", reason=f"{said}: worse by {worse:.4f} (allowed {allowed})")
    return QualityVerdict(verdict="pass", reason=f"{said}, within the allowed decay {allowed}")

"""Policy floors: which settings of a candidate policy are looser than the policy in force.

The workspace policy is the floor. A policy given for one run (``--policy``, ``MLOPS_POLICY``)
may only tighten it: ``policy_widenings`` names every field where it does not. The rules are a
table with one entry per field of ``Policy``, so a new field without a rule fails a test
instead of passing unchecked.

``LOSSES`` and ``at_least_as_strict`` say what "stricter" means for a metric threshold; the
evaluation stage and the gates use the same two.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

from mlops_supervisor.policies.policy import Policy

__all__ = [
    "LOSSES",
    "PROVENANCE_FIELDS",
    "RULES",
    "Looser",
    "at_least_as_strict",
    "looser_ceilings",
    "looser_thresholds",
    "policy_widenings",
]

LOSSES = frozenset({"log_loss", "brier_score", "rmse", "mae", "expected_calibration_error"})
"""Metrics where lower is better: their thresholds are ceilings, and a challenger beats a champion by going lower."""


def at_least_as_strict(metric: str, value: float, floor: float) -> bool:
    """Whether threshold ``value`` for ``metric`` asks at least what ``floor`` asks (a ceiling, for a loss)."""
    return value <= floor if metric in LOSSES else value >= floor


class Looser(NamedTuple):
    """A limit in force that another set of limits does not meet: ``value`` is ``None`` when it lacks the metric."""

    metric: str
    value: float | None
    in_force: float


def looser_thresholds(in_force: Mapping[str, float], other: Mapping[str, float]) -> list[Looser]:
    """Each metric threshold of ``in_force`` that ``other`` lacks or sets less strictly (see ``at_least_as_strict``)."""
    return [
        Looser(metric, other.get(metric), floor)
        for metric, floor in sorted(in_force.items())
        if metric not in other or not at_least_as_strict(metric, other[metric], floor)
    ]


def looser_ceilings(in_force: Mapping[str, float], other: Mapping[str, float]) -> list[Looser]:
    """Each upper limit of ``in_force`` (a fairness difference) that ``other`` lacks or sets higher."""
    return [
        Looser(name, other.get(name), limit)
        for name, limit in sorted(in_force.items())
        if name not in other or other[name] > limit
    ]


# --- the rules: (field, candidate's value, workspace's value) -> what is looser --------------------

Rule = Callable[[str, Any, Any], list[str]]
"""A field's tighten-only rule: one message per way the candidate's value is looser than the workspace's."""


def _show(value: object) -> str:
    """A number as a person writes it (``168``, ``0.75``, whether it was read as an int or a float)."""
    return f"{value:g}" if isinstance(value, int | float) and not isinstance(value, bool) else str(value)


def _looser(field: str, candidate: object, base: object) -> str:
    return f"{field}: {_show(candidate)} is looser than the workspace policy's {_show(base)}"


def _at_most(field: str, candidate: float, base: float) -> list[str]:
    return [] if candidate <= base else [_looser(field, candidate, base)]


def _at_least(field: str, candidate: float, base: float) -> list[str]:
    return [] if candidate >= base else [_looser(field, candidate, base)]


def _same(field: str, candidate: object, base: object) -> list[str]:
    return (
        [] if candidate == base else [f"{field}: {_show(candidate)} differs from the workspace policy's {_show(base)}"]
    )


def _superset(field: str, candidate: Iterable[str], base: Iterable[str]) -> list[str]:
    """The candidate keeps every entry of the workspace's (more is stricter: more tools held or denied)."""
    kept = set(candidate)
    dropped = [item for item in base if item not in kept]
    return [f"{field}: drops {', '.join(dropped)}"] if dropped else []


def _subset(field: str, candidate: Iterable[str], base: Iterable[str]) -> list[str]:
    """The candidate adds nothing to the workspace's (fewer is stricter: fewer approvers or estimators)."""
    allowed = set(base)
    added = [item for item in candidate if item not in allowed]
    return [f"{field}: adds {', '.join(added)}, which the workspace policy does not allow"] if added else []


def _thresholds(field: str, candidate: Mapping[str, float], base: Mapping[str, float]) -> list[str]:
    """Every metric floor of the workspace's, kept and at least as strict; extra metrics only tighten."""
    return [
        f"{field}: drops {metric}" if value is None else _looser(f"{field}.{metric}", value, floor)
        for metric, value, floor in looser_thresholds(base, candidate)
    ]


def _ceilings(field: str, candidate: Mapping[str, float], base: Mapping[str, float]) -> list[str]:
    """Every limit of the workspace's, kept and no higher; extra limits only tighten."""
    return [
        f"{field}: drops {name}" if value is None else _looser(f"{field}.{name}", value, limit)
        for name, value, limit in looser_ceilings(base, candidate)
    ]


_PII_ACTION_STRICTNESS = {"hash": 0, "drop": 1}
"""Dropping a PII column keeps less of it than hashing it."""


def _pii_action(field: str, candidate: str, base: str) -> list[str]:
    return (
        [] if _PII_ACTION_STRICTNESS[candidate] >= _PII_ACTION_STRICTNESS[base] else [_looser(field, candidate, base)]
    )


def _key_material(line: str) -> tuple[str, ...]:
    """An OpenSSH public key line without its comment: the key type and the key."""
    return tuple(line.split()[:2])


def _people(field: str, candidate: Mapping[str, str], base: Mapping[str, str]) -> list[str]:
    """No new person and no other key for a listed one: either would let a requester sign as someone they are not."""
    added = [name for name in candidate if name not in base]
    rekeyed = [
        name for name, line in candidate.items() if name in base and _key_material(line) != _key_material(base[name])
    ]
    found = [f"{field}: adds {', '.join(added)}, who the workspace policy does not list"] if added else []
    found += [f"{field}.{name}: a different key from the workspace policy's" for name in rekeyed]
    return found


RULES: dict[str, Rule] = {
    "version": _same,
    "people": _people,
    "approvers": _subset,
    "approval.required_for": _superset,
    "approval.ttl_minutes": _at_most,
    "limits.max_steps": _at_most,
    "limits.recursion_limit": _at_most,
    "tools.denied": _superset,
    "pii.action": _pii_action,
    "pii.entities": _superset,
    "pii.min_fraction": _at_most,
    "pii.sample_size": _at_least,
    "pii.min_score": _at_most,
    "training.estimators": _subset,
    "training.max_search_candidates": _at_most,
    "training.max_fits": _at_most,
    "evaluation.thresholds": _thresholds,
    "evaluation.regression_thresholds": _thresholds,
    "evaluation.fairness": _ceilings,
    "evaluation.max_age_hours": _at_most,
    "monitoring.psi_threshold": _at_most,
    "monitoring.p_value": _at_least,
    "monitoring.min_samples": _at_most,
    "monitoring.max_error_rate": _at_most,
    "monitoring.max_p99_latency_ms": _at_most,
    "monitoring.min_labelled": _at_most,
    "monitoring.min_group_labelled": _at_most,
    "monitoring.quality_window_hours": _same,
    "monitoring.max_metric_decay": _at_most,
    "monitoring.fairness": _ceilings,
    "monitoring.repeat_interval_minutes": _at_most,
    "monitoring.alert_attempts": _at_least,
    "monitoring.routes": _same,
    "monitoring.default_route": _same,
    "canary.min_steps": _at_least,
    "canary.max_first_step": _at_most,
    "canary.min_requests": _at_least,
    "canary.min_bake_seconds": _at_least,
    "canary.max_error_rate_increase": _at_most,
    "canary.max_p95_latency_ratio": _at_most,
}
"""One tighten-only rule per setting of ``Policy``, by dotted field name."""

PROVENANCE_FIELDS = frozenset({"source", "digest"})
"""Fields of ``Policy`` that say where it came from, not what it allows: they have no rule."""


def _value(policy: Policy, field: str) -> Any:
    value: Any = policy
    for part in field.split("."):
        value = getattr(value, part)
    return value


def policy_widenings(base: Policy, candidate: Policy) -> list[str]:
    """Each way ``candidate`` is looser than ``base`` (the workspace policy), naming the field and both values.

    Empty when ``candidate`` only tightens ``base`` (or equals it).
    """
    return [
        problem
        for field, rule in RULES.items()
        for problem in rule(field, _value(candidate, field), _value(base, field))
    ]

"""Policy floors: a policy given for one run may tighten the workspace policy, never widen it, field by field."""

from __future__ import annotations

from typing import Any, NamedTuple

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pydantic import BaseModel

from mlops_supervisor.policies import Policy, load_policy, policy_widenings
from mlops_supervisor.policies.estimators import ALLOWED_ESTIMATORS
from mlops_supervisor.policies.floors import PROVENANCE_FIELDS, RULES, at_least_as_strict
from mlops_supervisor.policies.pii import DEFAULT_PII_ENTITIES


def _public_key() -> str:
    key = Ed25519PrivateKey.generate().public_key()
    return key.public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode("ascii")


CAROL, DAVE, ERIN, MALLORY = (_public_key() for _ in range(4))
ESTIMATORS = tuple(ALLOWED_ESTIMATORS)

BASE = Policy.model_validate(
    {
        "people": {"carol": CAROL, "dave": DAVE, "erin": ERIN},
        "approvers": ["carol", "dave"],
        "tools": {"denied": ["deploy_model"]},
        "training": {"estimators": list(ESTIMATORS[:2])},
        "evaluation": {"regression_thresholds": {"r2": 0.3, "rmse": 10.0}},
        "canary": {"min_steps": 2},
    }
)
"""A workspace policy: the default, with people and approvers, a denied tool, two estimators, an rmse ceiling and two canary steps."""


def _policy(**fields: Any) -> Policy:
    """``BASE`` with each dotted field (``a__b=value`` for ``a.b``) set, validated as a policy file would be."""
    data = BASE.model_dump()
    for dotted, value in fields.items():
        node = data
        *parents, leaf = dotted.split("__")
        for key in parents:
            node = node[key]
        node[leaf] = value
    return Policy.model_validate(data)


def _leaf_fields(model: type[BaseModel], prefix: str = "") -> set[str]:
    """Every field of ``model``, dotted, descending into fields that are models themselves."""
    leaves: set[str] = set()
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            leaves |= _leaf_fields(annotation, f"{prefix}{name}.")
        else:
            leaves.add(f"{prefix}{name}")
    return leaves


class Case(NamedTuple):
    field: str
    tighter: Any
    looser: Any
    named: str


CASES = [
    Case("version", 1, None, ""),  # the schema knows one version: there is nothing looser to build
    Case(
        "people",
        {"carol": CAROL, "dave": DAVE},
        {"carol": CAROL, "dave": DAVE, "erin": ERIN, "mallory": MALLORY},
        "people: adds mallory, who the workspace policy does not list",
    ),
    Case(
        "people",
        {"carol": f"{CAROL} carol@laptop", "dave": DAVE, "erin": ERIN},  # another comment, the same key
        {"carol": MALLORY, "dave": DAVE, "erin": ERIN},
        "people.carol: a different key from the workspace policy's",
    ),
    Case("approvers", ["carol"], ["carol", "dave", "erin"], "approvers: adds erin, which the workspace policy"),
    Case(
        "approval.required_for",
        ["promote_model", "remove_alias", "deploy_model"],
        ["promote_model"],
        "approval.required_for: drops remove_alias",
    ),
    Case("approval.ttl_minutes", 60, 2880, "approval.ttl_minutes: 2880 is looser than the workspace policy's 1440"),
    Case("limits.max_steps", 20, 80, "limits.max_steps: 80 is looser than the workspace policy's 40"),
    Case("limits.recursion_limit", 50, 200, "limits.recursion_limit: 200 is looser than the workspace policy's 100"),
    Case("tools.denied", ["deploy_model", "train_model"], [], "tools.denied: drops deploy_model"),
    Case("pii.action", "drop", "hash", "pii.action: hash is looser than the workspace policy's drop"),
    Case(
        "pii.entities", [*DEFAULT_PII_ENTITIES, "US_PASSPORT"], DEFAULT_PII_ENTITIES[1:], "pii.entities: drops PERSON"
    ),
    Case("pii.min_fraction", 0.2, 0.5, "pii.min_fraction: 0.5 is looser than the workspace policy's 0.3"),
    Case("pii.sample_size", 400, 100, "pii.sample_size: 100 is looser than the workspace policy's 200"),
    Case("pii.min_score", 0.3, 0.6, "pii.min_score: 0.6 is looser than the workspace policy's 0.4"),
    Case("training.estimators", [ESTIMATORS[0]], ESTIMATORS[:3], f"training.estimators: adds {ESTIMATORS[2]}"),
    Case(
        "training.max_search_candidates",
        10,
        100,
        "training.max_search_candidates: 100 is looser than the workspace policy's 50",
    ),
    Case("training.max_fits", 100, 1000, "training.max_fits: 1000 is looser than the workspace policy's 600"),
    Case(
        "evaluation.thresholds",
        {"roc_auc": 0.8, "accuracy": 0.7, "f1": 0.5},
        {"roc_auc": 0.6, "accuracy": 0.7},
        "evaluation.thresholds.roc_auc: 0.6 is looser than the workspace policy's 0.75",
    ),
    Case(
        "evaluation.thresholds",
        {"roc_auc": 0.75, "accuracy": 0.7},
        {"roc_auc": 0.9},
        "evaluation.thresholds: drops accuracy",
    ),
    Case(
        "evaluation.regression_thresholds",
        {"r2": 0.4, "rmse": 5.0, "mae": 3.0},
        {"r2": 0.3, "rmse": 12.0},
        "evaluation.regression_thresholds.rmse: 12 is looser than the workspace policy's 10",
    ),
    Case(
        "evaluation.fairness",
        {"demographic_parity_difference": 0.1, "equalized_odds_difference": 0.25},
        {"demographic_parity_difference": 0.25},
        "evaluation.fairness: drops equalized_odds_difference",
    ),
    Case(
        "evaluation.fairness",
        {"demographic_parity_difference": 0.25, "equalized_odds_difference": 0.2},
        {"demographic_parity_difference": 0.3, "equalized_odds_difference": 0.25},
        "evaluation.fairness.demographic_parity_difference: 0.3 is looser than the workspace policy's 0.25",
    ),
    Case(
        "evaluation.max_age_hours",
        24,
        336,
        "evaluation.max_age_hours: 336 is looser than the workspace policy's 168",
    ),
    Case(
        "monitoring.psi_threshold", 0.1, 0.3, "monitoring.psi_threshold: 0.3 is looser than the workspace policy's 0.2"
    ),
    Case("monitoring.p_value", 0.05, 0.001, "monitoring.p_value: 0.001 is looser than the workspace policy's 0.01"),
    Case("monitoring.min_samples", 50, 500, "monitoring.min_samples: 500 is looser than the workspace policy's 100"),
    Case(
        "monitoring.max_error_rate",
        0.01,
        0.1,
        "monitoring.max_error_rate: 0.1 is looser than the workspace policy's 0.05",
    ),
    Case(
        "monitoring.max_p99_latency_ms",
        100,
        500,
        "monitoring.max_p99_latency_ms: 500 is looser than the workspace policy's 250",
    ),
    Case(
        "monitoring.min_labelled", 100, 1000, "monitoring.min_labelled: 1000 is looser than the workspace policy's 200"
    ),
    Case(
        "monitoring.min_group_labelled",
        10,
        100,
        "monitoring.min_group_labelled: 100 is looser than the workspace policy's 30",
    ),
    Case(
        "monitoring.quality_window_hours",
        168,
        24,
        "monitoring.quality_window_hours: 24 differs from the workspace policy's 168",
    ),
    Case(
        "monitoring.max_metric_decay",
        0.02,
        0.2,
        "monitoring.max_metric_decay: 0.2 is looser than the workspace policy's 0.05",
    ),
    Case(
        "monitoring.fairness",
        {"demographic_parity_difference": 0.1, "equalized_odds_difference": 0.25},
        {"demographic_parity_difference": 0.25},
        "monitoring.fairness: drops equalized_odds_difference",
    ),
    Case(
        "monitoring.repeat_interval_minutes",
        60,
        1440,
        "monitoring.repeat_interval_minutes: 1440 is looser than the workspace policy's 240",
    ),
    Case("monitoring.alert_attempts", 6, 1, "monitoring.alert_attempts: 1 is looser than the workspace policy's 4"),
    Case(
        "monitoring.routes",
        {},
        {"adult-income-classifier": {"owner": "mallory", "alert": "webhook:https://example.net/hook"}},
        "monitoring.routes: ",
    ),
    Case(
        "monitoring.default_route",
        None,
        {"owner": "mallory", "alert": "log"},
        "monitoring.default_route: ",
    ),
    Case("canary.min_steps", 3, 1, "canary.min_steps: 1 is looser than the workspace policy's 2"),
    Case("canary.max_first_step", 10, 50, "canary.max_first_step: 50 is looser than the workspace policy's 25"),
    Case("canary.min_requests", 200, 10, "canary.min_requests: 10 is looser than the workspace policy's 100"),
    Case("canary.min_bake_seconds", 60, 0, "canary.min_bake_seconds: 0 is looser than the workspace policy's 30"),
    Case(
        "canary.max_error_rate_increase",
        0.005,
        0.05,
        "canary.max_error_rate_increase: 0.05 is looser than the workspace policy's 0.01",
    ),
    Case(
        "canary.max_p95_latency_ratio",
        1.2,
        2.0,
        "canary.max_p95_latency_ratio: 2 is looser than the workspace policy's 1.5",
    ),
]


def test_every_field_of_the_policy_has_a_tighten_only_rule() -> None:
    """A new policy setting without a rule here would let a run's policy change it freely: each field needs one."""
    fields = _leaf_fields(Policy)
    assert sorted(fields - set(RULES) - PROVENANCE_FIELDS) == [], "policy fields with no rule in floors.RULES"
    assert sorted(set(RULES) - fields) == [], "rules for fields the policy does not have"
    assert fields >= PROVENANCE_FIELDS


def test_each_rule_has_a_case_here() -> None:
    """The cases below cover every rule, so a rule added without a test of it fails."""
    assert {case.field for case in CASES} == set(RULES)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.field)
def test_a_tightening_passes_and_a_widening_is_named(case: Case) -> None:
    """Per field: the tighter value is no widening; the looser one is named with its value and the workspace's."""
    dotted = case.field.replace(".", "__")
    assert policy_widenings(BASE, _policy(**{dotted: case.tighter})) == []
    if case.looser is not None:
        (widening,) = policy_widenings(BASE, _policy(**{dotted: case.looser}))
        assert widening.startswith(case.named)


def test_the_default_policy_and_any_policy_against_itself_widen_nothing() -> None:
    """The shipped default compared with itself, and the workspace policy with itself, are no widening."""
    default = load_policy(None)
    assert policy_widenings(default, default) == []
    assert policy_widenings(BASE, BASE) == []


def test_a_policy_with_no_floors_names_every_widening() -> None:
    """`thresholds: {}` and `fairness: {}` over the default: each dropped floor and limit is named, in one list."""
    default = load_policy(None)
    bare = Policy.model_validate({"evaluation": {"thresholds": {}, "regression_thresholds": {}, "fairness": {}}})
    assert policy_widenings(default, bare) == [
        "evaluation.thresholds: drops accuracy",
        "evaluation.thresholds: drops roc_auc",
        "evaluation.regression_thresholds: drops r2",
        "evaluation.fairness: drops demographic_parity_difference",
        "evaluation.fairness: drops equalized_odds_difference",
    ]


def test_pii_may_go_from_hash_to_drop_but_not_back() -> None:
    """Dropping a PII column keeps less than hashing it: hash -> drop tightens, drop -> hash widens."""
    hashing = _policy(pii__action="hash")
    assert policy_widenings(hashing, _policy(pii__action="drop")) == []
    assert policy_widenings(_policy(pii__action="drop"), hashing) == [
        "pii.action: hash is looser than the workspace policy's drop"
    ]


def test_a_loss_threshold_is_a_ceiling() -> None:
    """For a loss the lower ceiling is the stricter one; for a score, the higher floor."""
    base = _policy(evaluation__thresholds={"log_loss": 0.5, "roc_auc": 0.75})
    assert policy_widenings(base, _policy(evaluation__thresholds={"log_loss": 0.4, "roc_auc": 0.75})) == []
    assert policy_widenings(base, _policy(evaluation__thresholds={"log_loss": 0.6, "roc_auc": 0.75})) == [
        "evaluation.thresholds.log_loss: 0.6 is looser than the workspace policy's 0.5"
    ]
    assert at_least_as_strict("rmse", 1.0, 2.0) and not at_least_as_strict("r2", 0.1, 0.3)

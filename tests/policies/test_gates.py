"""The lifecycle gates as pure functions: each refusal has its reason code and says what would satisfy it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mlops_supervisor.policies import ReasonCode
from mlops_supervisor.policies.gates import (
    ApprovalRecord,
    EvaluationEvidence,
    TrainingEvidence,
    VersionEvidence,
    evaluate_approval_record,
    evaluate_challenger_gate,
    evaluate_champion_gate,
    evaluate_register_gate,
    evidence_digest,
)
from mlops_supervisor.policies.policy import EvaluationRules

NOW = datetime(2026, 11, 29, 12, tzinfo=UTC)
RULES = EvaluationRules(max_age_hours=24)
"""The floors in force: the default thresholds and fairness limits, evaluations good for a day."""


def _evaluation(**changes: object) -> EvaluationEvidence:
    base = {
        "model": "m",
        "version": 2,
        "run_id": "r",
        "passed": True,
        "report_digest": "d",
        "evaluated_at": NOW,
        "metrics": {"roc_auc": 0.9},
        "task": "classification",
        "thresholds": RULES.thresholds,
        "fairness_limits": RULES.fairness,
        "policy_digest": "p",
    }
    return EvaluationEvidence.model_validate({**base, **changes})


def test_register_gate_names_every_missing_piece_of_provenance() -> None:
    """A run without data digest, code version, params, environment or model cannot become a version."""
    bare = TrainingEvidence(run_id="r1", status="RUNNING")
    decision = evaluate_register_gate(bare)
    assert decision.reason_code is ReasonCode.TRAINING_RUN_INCOMPLETE
    for piece in ("FINISHED", "mlops.data.digest", "mlops.code.git_commit", "parameters", "environment", "model"):
        assert piece in decision.message
    full = TrainingEvidence(
        run_id="r1",
        status="FINISHED",
        role="candidate",
        data_digest="d",
        code_version="c",
        params=3,
        environment=True,
        model_id="m-1",
    )
    assert evaluate_register_gate(full).allowed


@pytest.mark.parametrize(
    ("evaluation", "code"),
    [
        (None, ReasonCode.EVALUATION_MISSING),
        (_evaluation(version=1), ReasonCode.EVALUATION_MISSING),
        (_evaluation(consistent=False), ReasonCode.EVIDENCE_INCONSISTENT),
        (_evaluation(passed=False, failures=("roc_auc 0.61 below 0.75",)), ReasonCode.EVALUATION_FAILED),
        (_evaluation(evaluated_at=NOW - timedelta(hours=30)), ReasonCode.EVALUATION_STALE),
    ],
)
def test_challenger_gate_needs_a_recent_passing_consistent_evaluation_of_this_version(
    evaluation: EvaluationEvidence | None, code: ReasonCode
) -> None:
    """No evaluation, another version's, an edited one, a failed one, an old one: each refused with its code."""
    decision = evaluate_challenger_gate(
        VersionEvidence(model="m", version=2, evaluation=evaluation), rules=RULES, now=NOW
    )
    assert decision.reason_code is code
    assert not decision.allowed


def test_champion_gate_adds_the_canary_once_deployed() -> None:
    """A deployed version without a passed canary is refused; undeployed, the evaluation suffices."""
    evidence = VersionEvidence(model="m", version=2, evaluation=_evaluation())
    assert evaluate_champion_gate(evidence, rules=RULES, now=NOW).allowed
    deployed = evidence.model_copy(update={"deployed": True})
    assert evaluate_champion_gate(deployed, rules=RULES, now=NOW).reason_code is ReasonCode.CANARY_NOT_PASSED
    canaried = evidence.model_copy(update={"deployed": True, "canary_passed": True})
    assert evaluate_champion_gate(canaried, rules=RULES, now=NOW).allowed


def test_evidence_digest_moves_with_any_change() -> None:
    """An edited metric, a new evaluation run, a moved champion or other recorded floors each change the digest."""
    evidence = VersionEvidence(model="m", version=2, evaluation=_evaluation())
    digest = evidence_digest(evidence)
    assert evidence_digest(evidence.model_copy()) == digest
    changes = [
        evidence.model_copy(update={"evaluation": _evaluation(metrics={"roc_auc": 0.95})}),
        evidence.model_copy(update={"evaluation": _evaluation(run_id="r2")}),
        evidence.model_copy(update={"champion_version": 1}),
        evidence.model_copy(update={"evaluation": _evaluation(thresholds={"roc_auc": 0.8, "accuracy": 0.7})}),
    ]
    assert len({digest, *(evidence_digest(c) for c in changes)}) == 5


def _record(**changes: object) -> ApprovalRecord:
    base = {
        "model": "m",
        "version": 2,
        "action": "champion",
        "evidence_digest": "abc",
        "requester": "alice",
        "approver": "carol",
        "requester_key": "SHA256:alice-key",
        "approver_key": "SHA256:carol-key",
        "approved_at": NOW,
        "expires_at": NOW + timedelta(hours=1),
    }
    return ApprovalRecord.model_validate({**base, **changes})


@pytest.mark.parametrize(
    ("record", "now", "code"),
    [
        (None, NOW, ReasonCode.APPROVAL_MISSING),
        (_record(version=1), NOW, ReasonCode.APPROVAL_BINDING_MISMATCH),
        (_record(approver="alice"), NOW, ReasonCode.SELF_APPROVAL),
        (_record(approver="mallory"), NOW, ReasonCode.APPROVER_NOT_LISTED),
        (_record(), NOW + timedelta(hours=2), ReasonCode.APPROVAL_EXPIRED),
        (_record(evidence_digest="old"), NOW, ReasonCode.APPROVAL_EVIDENCE_CHANGED),
        (_record(), NOW, ReasonCode.ALLOWED),
    ],
)
def test_approval_record_is_bound_to_version_action_evidence_and_time(
    record: ApprovalRecord | None, now: datetime, code: ReasonCode
) -> None:
    """Only an unexpired approval of this version and action, by a listed other person, over this evidence counts."""
    decision = evaluate_approval_record(
        record, model="m", version=2, action="champion", current_digest="abc", approvers=("carol",), now=now
    )
    assert decision.reason_code is code


def test_the_spec_can_shorten_but_not_lengthen_the_evaluation_age_limit() -> None:
    """An evaluation's own max age (from the spec) applies when shorter than the policy's, never when longer."""
    twelve_hours_old = _evaluation(evaluated_at=NOW - timedelta(hours=12))
    shorter = VersionEvidence(model="m", version=2, evaluation=twelve_hours_old.model_copy(update={"max_age_hours": 6}))
    longer = VersionEvidence(model="m", version=2, evaluation=twelve_hours_old.model_copy(update={"max_age_hours": 48}))
    assert evaluate_challenger_gate(shorter, rules=RULES, now=NOW).reason_code is ReasonCode.EVALUATION_STALE
    assert evaluate_challenger_gate(longer, rules=RULES, now=NOW).allowed
    assert (
        evaluate_challenger_gate(longer, rules=EvaluationRules(max_age_hours=10), now=NOW).reason_code
        is ReasonCode.EVALUATION_STALE
    )


# -- the floors an evaluation passed, against the floors in force ------------------------------------


@pytest.mark.parametrize(
    ("recorded", "named"),
    [
        ({"thresholds": {"roc_auc": 0.5, "accuracy": 0.7}}, "roc_auc floor 0.5, the one in force is 0.75"),
        ({"thresholds": {"roc_auc": 0.75}}, "accuracy was not checked (the floor in force is 0.7)"),
        ({"thresholds": {}}, "accuracy was not checked (the floor in force is 0.7); roc_auc was not checked"),
        (
            {"fairness_limits": {"demographic_parity_difference": 0.4, "equalized_odds_difference": 0.25}},
            "demographic_parity_difference limit 0.4, the one in force is 0.25",
        ),
        (
            {"fairness_limits": {"demographic_parity_difference": 0.25}},
            "equalized_odds_difference was not checked (the limit in force is 0.25)",
        ),
        ({"fairness_limits": {}}, "demographic_parity_difference was not checked (the limit in force is 0.25)"),
    ],
)
def test_an_evaluation_under_weaker_floors_is_not_evidence(recorded: dict[str, object], named: str) -> None:
    """A lower floor, a dropped metric, a higher or dropped fairness limit: refused, naming recorded and in-force values."""
    evidence = VersionEvidence(model="m", version=2, evaluation=_evaluation(**recorded))
    for gate in (evaluate_challenger_gate, evaluate_champion_gate):
        decision = gate(evidence, rules=RULES, now=NOW)
        assert decision.reason_code is ReasonCode.EVALUATION_FLOORS_WEAKER
        assert named in decision.message
        assert decision.message.endswith("Evaluate it again: `evaluate m version 2`.")


@pytest.mark.parametrize("missing", ["task", "thresholds", "fairness_limits"])
def test_an_evaluation_that_recorded_no_floors_is_not_evidence(missing: str) -> None:
    """An older evaluation, without its task, thresholds or fairness limits on record, cannot be compared: refused."""
    evidence = VersionEvidence(model="m", version=2, evaluation=_evaluation(**{missing: None}))
    decision = evaluate_challenger_gate(evidence, rules=RULES, now=NOW)
    assert decision.reason_code is ReasonCode.EVALUATION_FLOORS_WEAKER
    assert "recorded no floors" in decision.message


def test_stricter_floors_and_extra_limits_pass_under_any_policy_digest() -> None:
    """Higher floors, a lower loss ceiling, lower fairness limits and extra metrics all cover the floors in force.

    The policy an evaluation ran under may differ from the one in force (an approver was added): only the floors count.
    """
    rules = EvaluationRules(thresholds={"roc_auc": 0.75, "log_loss": 0.5}, max_age_hours=24)
    stricter = _evaluation(
        thresholds={"roc_auc": 0.8, "log_loss": 0.4, "f1": 0.5},
        fairness_limits={"demographic_parity_difference": 0.1, "equalized_odds_difference": 0.25},
        policy_digest="another policy",
    )
    assert evaluate_challenger_gate(
        VersionEvidence(model="m", version=2, evaluation=stricter), rules=rules, now=NOW
    ).allowed
    looser_loss = stricter.model_copy(update={"thresholds": {"roc_auc": 0.8, "log_loss": 0.6}})
    decision = evaluate_challenger_gate(
        VersionEvidence(model="m", version=2, evaluation=looser_loss), rules=rules, now=NOW
    )
    assert decision.reason_code is ReasonCode.EVALUATION_FLOORS_WEAKER
    assert "log_loss ceiling 0.6, the one in force is 0.5" in decision.message


def test_a_regression_is_held_to_the_regression_floors_and_no_fairness_limits() -> None:
    """A regressor's evaluation answers to regression_thresholds; fairness metrics need classes, so none are asked."""
    regression = _evaluation(task="regression", thresholds={"r2": 0.3}, fairness_limits={})
    assert evaluate_challenger_gate(
        VersionEvidence(model="m", version=2, evaluation=regression), rules=RULES, now=NOW
    ).allowed
    weaker = regression.model_copy(update={"thresholds": {"r2": 0.1}})
    decision = evaluate_challenger_gate(VersionEvidence(model="m", version=2, evaluation=weaker), rules=RULES, now=NOW)
    assert decision.reason_code is ReasonCode.EVALUATION_FLOORS_WEAKER
    assert "r2 floor 0.1, the one in force is 0.3" in decision.message

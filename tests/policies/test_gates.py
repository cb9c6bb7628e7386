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

NOW = datetime(2026, 11, 29, 12, tzinfo=UTC)


def _evaluation(**changes: object) -> EvaluationEvidence:
    base = {
        "model": "m",
        "version": 2,
        "run_id": "r",
        "passed": True,
        "report_digest": "d",
        "evaluated_at": NOW,
        "metrics": {"roc_auc": 0.9},
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
        VersionEvidence(model="m", version=2, evaluation=evaluation), max_age_hours=24, now=NOW
    )
    assert decision.reason_code is code
    assert not decision.allowed


def test_champion_gate_adds_the_canary_once_deployed() -> None:
    """A deployed version without a passed canary is refused; undeployed, the evaluation suffices."""
    evidence = VersionEvidence(model="m", version=2, evaluation=_evaluation())
    assert evaluate_champion_gate(evidence, max_age_hours=24, now=NOW).allowed
    deployed = evidence.model_copy(update={"deployed": True})
    assert evaluate_champion_gate(deployed, max_age_hours=24, now=NOW).reason_code is ReasonCode.CANARY_NOT_PASSED
    canaried = evidence.model_copy(update={"deployed": True, "canary_passed": True})
    assert evaluate_champion_gate(canaried, max_age_hours=24, now=NOW).allowed


def test_evidence_digest_moves_with_any_change() -> None:
    """An edited metric, a new evaluation run or a moved champion each change the digest."""
    evidence = VersionEvidence(model="m", version=2, evaluation=_evaluation())
    digest = evidence_digest(evidence)
    assert evidence_digest(evidence.model_copy()) == digest
    changes = [
        evidence.model_copy(update={"evaluation": _evaluation(metrics={"roc_auc": 0.95})}),
        evidence.model_copy(update={"evaluation": _evaluation(run_id="r2")}),
        evidence.model_copy(update={"champion_version": 1}),
    ]
    assert len({digest, *(evidence_digest(c) for c in changes)}) == 4


def _record(**changes: object) -> ApprovalRecord:
    base = {
        "model": "m",
        "version": 2,
        "action": "champion",
        "evidence_digest": "abc",
        "requester": "alice",
        "approver": "carol",
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
    assert evaluate_challenger_gate(shorter, max_age_hours=24, now=NOW).reason_code is ReasonCode.EVALUATION_STALE
    assert evaluate_challenger_gate(longer, max_age_hours=24, now=NOW).allowed
    assert evaluate_challenger_gate(longer, max_age_hours=10, now=NOW).reason_code is ReasonCode.EVALUATION_STALE

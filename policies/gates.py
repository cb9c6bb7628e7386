"""The lifecycle gates: pure functions over evidence read from the system of record.

Evidence comes in as typed records (built by the tools from MLflow, never from what an
LLM claims); a ``Decision`` comes out. The policy node and the tools that mutate call the
same functions, so a notebook calling a tool directly meets the same gate as the graph.

    register a version       a finished training run with data digest, code version, params, environment
    alias challenger         a passing evaluation of this exact version, not older than allowed, that met
                             every floor (threshold, fairness limit) in force now
    alias champion           the above (+ a passed canary once the model is deployed) + an approval
                             bound to model, version, action and evidence digest
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field

from mlops_supervisor.policies.decisions import Decision, ReasonCode
from mlops_supervisor.policies.floors import LOSSES, Looser, looser_ceilings, looser_thresholds
from mlops_supervisor.policies.policy import EvaluationRules

__all__ = [
    "ApprovalRecord",
    "EvaluationEvidence",
    "TrainingEvidence",
    "VersionEvidence",
    "evaluate_approval_record",
    "evaluate_challenger_gate",
    "evaluate_champion_gate",
    "evaluate_register_gate",
    "evidence_digest",
]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class TrainingEvidence(_Frozen):
    """What MLflow holds about a training run."""

    run_id: str
    status: str
    role: str | None = None
    data_digest: str | None = None
    code_version: str | None = None
    params: int = 0
    environment: bool = False
    model_id: str | None = None


class EvaluationEvidence(_Frozen):
    """A logged evaluation of one model version, and whether its tags agree with its report."""

    model: str
    version: int
    run_id: str
    passed: bool
    report_digest: str
    evaluated_at: datetime
    failures: tuple[str, ...] = ()
    metrics: dict[str, float] = Field(default_factory=dict)
    consistent: bool = True
    """False when the version's evidence tags differ from the logged report (edited after the fact)."""
    max_age_hours: float | None = None
    """The spec's own limit on the evaluation's age; it can only shorten the policy's."""
    task: str | None = None
    """classification or regression: which of the policy's floors apply. ``None``: not recorded."""
    thresholds: dict[str, float] | None = None
    """The metric thresholds the evaluation applied (policy tightened by spec). ``None``: not recorded."""
    fairness_limits: dict[str, float] | None = None
    """The fairness difference limits the evaluation applied. ``None``: not recorded."""
    policy_digest: str | None = None
    """sha256 of the text of the policy the evaluation ran under. ``None``: not recorded."""


class VersionEvidence(_Frozen):
    """Everything a gate needs about one model version."""

    model: str
    version: int
    evaluation: EvaluationEvidence | None = None
    champion_version: int | None = None
    deployed: bool = False
    canary_passed: bool | None = None


def evidence_digest(evidence: VersionEvidence) -> str:
    """sha256 of the evidence an approval is bound to; any edit of it gives another digest."""
    canonical = json.dumps(evidence.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def evaluate_register_gate(training: TrainingEvidence) -> Decision:
    """A version may come only from a finished training run that logged its provenance."""
    missing = [
        what
        for what, ok in (
            ("status FINISHED", training.status == "FINISHED"),
            ("a candidate run (tag mlops.role=candidate)", training.role == "candidate"),
            ("a data version (tag mlops.data.digest)", bool(training.data_digest)),
            ("a code version (tag mlops.code.git_commit)", bool(training.code_version)),
            ("parameters", training.params > 0),
            ("an environment (environment.json)", training.environment),
            ("a logged model", bool(training.model_id)),
        )
        if not ok
    ]
    if missing:
        return Decision.deny(
            "register_model",
            ReasonCode.TRAINING_RUN_INCOMPLETE,
            f"run {training.run_id} cannot be registered; it lacks: {', '.join(missing)}. "
            "Register a candidate run that `train_model` finished.",
        )
    return Decision.allow("register_model", f"run {training.run_id} is a finished training run with provenance")


def evaluate_challenger_gate(
    evidence: VersionEvidence, *, rules: EvaluationRules, now: datetime | None = None, action: str = "set_alias"
) -> Decision:
    """A passing, consistent, recent evaluation of exactly this version, under floors at least as strict as ``rules``'."""
    name = f"{evidence.model} version {evidence.version}"
    evaluation = evidence.evaluation
    if evaluation is None:
        return Decision.deny(
            action,
            ReasonCode.EVALUATION_MISSING,
            f"{name} has no evaluation; run `evaluate {evidence.model} version {evidence.version}` first.",
        )
    if (evaluation.model, evaluation.version) != (evidence.model, evidence.version):
        return Decision.deny(
            action,
            ReasonCode.EVALUATION_MISSING,
            f"the evaluation on record is of {evaluation.model} version {evaluation.version}, not {name}; "
            "evaluate this version.",
        )
    if not evaluation.consistent:
        return Decision.deny(
            action,
            ReasonCode.EVIDENCE_INCONSISTENT,
            f"the evidence tags of {name} do not match its logged evaluation report (run {evaluation.run_id}); "
            "re-run the evaluation.",
        )
    if not evaluation.passed:
        return Decision.deny(
            action,
            ReasonCode.EVALUATION_FAILED,
            f"the evaluation of {name} failed: {'; '.join(evaluation.failures) or 'see its report'}. "
            "Train a better candidate, or change the thresholds in the policy or spec.",
        )
    age = (now or datetime.now(UTC)) - evaluation.evaluated_at
    max_age_hours = rules.max_age_hours
    if evaluation.max_age_hours is not None:
        max_age_hours = min(max_age_hours, evaluation.max_age_hours)
    if age > timedelta(hours=max_age_hours):
        return Decision.deny(
            action,
            ReasonCode.EVALUATION_STALE,
            f"the evaluation of {name} is {age.total_seconds() / 3600:.1f} h old, over the {max_age_hours:g} h "
            "allowed; evaluate it again.",
        )
    weaker = _weaker_floors(evaluation, rules)
    if weaker:
        return Decision.deny(
            action,
            ReasonCode.EVALUATION_FLOORS_WEAKER,
            f"the evaluation of {name} (run {evaluation.run_id}) {weaker}; it is not evidence under the policy in "
            f"force. Evaluate it again: `evaluate {evidence.model} version {evidence.version}`.",
        )
    return Decision.allow(action, f"{name} passed its evaluation (run {evaluation.run_id})")


def _weaker_floors(evaluation: EvaluationEvidence, rules: EvaluationRules) -> str:
    """How the floors ``evaluation`` passed fall short of ``rules``, as a clause; empty when they cover them all.

    Fairness limits apply to classifiers only (a regression has no fairness metrics to judge).
    """
    task, thresholds, limits = evaluation.task, evaluation.thresholds, evaluation.fairness_limits
    if task is None or thresholds is None or limits is None:
        return "recorded no floors (thresholds, fairness limits and task), so what it passed cannot be compared"
    fairness = rules.fairness if task == "classification" else {}
    short = [_threshold_shortfall(looser) for looser in looser_thresholds(rules.floors(task), thresholds)]
    short += [_fairness_shortfall(looser) for looser in looser_ceilings(fairness, limits)]
    return f"passed weaker floors than the policy in force: {'; '.join(short)}" if short else ""


def _threshold_shortfall(looser: Looser) -> str:
    bound = "ceiling" if looser.metric in LOSSES else "floor"
    if looser.value is None:
        return f"{looser.metric} was not checked (the {bound} in force is {looser.in_force:g})"
    return f"{looser.metric} {bound} {looser.value:g}, the one in force is {looser.in_force:g}"


def _fairness_shortfall(looser: Looser) -> str:
    if looser.value is None:
        return f"{looser.metric} was not checked (the limit in force is {looser.in_force:g})"
    return f"{looser.metric} limit {looser.value:g}, the one in force is {looser.in_force:g}"


def evaluate_champion_gate(
    evidence: VersionEvidence, *, rules: EvaluationRules, now: datetime | None = None, action: str = "promote_model"
) -> Decision:
    """The challenger gate, plus a passed canary once the model is deployed; the approval comes after."""
    passed = evaluate_challenger_gate(evidence, rules=rules, now=now, action=action)
    if not passed.allowed:
        return passed
    if evidence.deployed and evidence.canary_passed is not True:
        return Decision.deny(
            action,
            ReasonCode.CANARY_NOT_PASSED,
            f"{evidence.model} version {evidence.version} is deployed but has no passed canary analysis; "
            "run the canary to its end first.",
        )
    return Decision.allow(action, f"{passed.message}; an approval is still required")


class ApprovalRecord(_Frozen):
    """An approval as recorded: who, for which model version and action, over which evidence, until when."""

    model: str
    version: int
    action: str
    evidence_digest: str
    requester: str
    approver: str
    approved_at: datetime
    expires_at: datetime
    requester_key: str = ""
    """Fingerprint of the key that signed the request."""
    approver_key: str = ""
    """Fingerprint of the key that signed the approval."""


def evaluate_approval_record(
    record: ApprovalRecord | None,
    *,
    model: str,
    version: int,
    action: str,
    current_digest: str,
    approvers: tuple[str, ...],
    now: datetime | None = None,
) -> Decision:
    """Whether ``record`` lets ``action`` on ``model`` ``version`` run over the evidence as it is now."""
    name = f"{model} version {version}"
    if record is None:
        return Decision.deny(
            action,
            ReasonCode.APPROVAL_MISSING,
            f"{action} of {name} needs an approval by a listed approver other than the requester; "
            f'ask for it: `mlops-supervisor ask "promote {model} version {version} to production"`.',
        )
    if (record.model, record.version, record.action) != (model, version, action):
        return Decision.deny(
            action,
            ReasonCode.APPROVAL_BINDING_MISMATCH,
            f"the approval is for {record.action} of {record.model} version {record.version}, not {action} of {name}.",
        )
    if record.approver == record.requester or record.approver_key == record.requester_key:
        return Decision.deny(
            action, ReasonCode.SELF_APPROVAL, f"{record.approver!r} approved their own request (same name or key)."
        )
    if record.approver not in approvers:
        return Decision.deny(
            action, ReasonCode.APPROVER_NOT_LISTED, f"{record.approver!r} is not an approver in the policy."
        )
    if (now or datetime.now(UTC)) > record.expires_at:
        return Decision.deny(
            action,
            ReasonCode.APPROVAL_EXPIRED,
            f"the approval of {name} expired at {record.expires_at.isoformat()}; ask again.",
        )
    if record.evidence_digest != current_digest:
        return Decision.deny(
            action,
            ReasonCode.APPROVAL_EVIDENCE_CHANGED,
            f"the evidence of {name} changed after it was approved (an edited tag, a new evaluation, or the "
            "champion moved); the approval is void: ask again.",
        )
    return Decision.allow(
        action, f"approved by {record.approver} (key {record.approver_key}) over evidence {current_digest[:12]}"
    )

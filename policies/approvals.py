"""Approval requests and the pure check of an approver's answer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mlops_supervisor.policies.decisions import Decision, ReasonCode
from mlops_supervisor.policies.policy import Policy

__all__ = ["ApprovalRequest", "ApprovalResponse", "check_approver", "evaluate_approval", "new_approval_request"]


class ApprovalRequest(BaseModel):
    """What a paused thread waits for: an answer bound to one exact action."""

    model_config = ConfigDict(frozen=True)

    thread_id: str
    agent: str
    tool: str
    args: dict[str, Any]
    call_id: str
    requester: str
    binding: str
    created_at: datetime
    expires_at: datetime
    approval_action: str = ""
    """Set when the approval is evidence-bound (``champion``): what it lets happen to a model version."""
    evidence_digest: str = ""
    """The digest of the evidence the approver saw; a different digest at approval or run time voids it."""


class ApprovalResponse(BaseModel):
    """An approver's answer; ``binding`` must repeat the request's."""

    model_config = ConfigDict(frozen=True)

    decision: Literal["approve", "reject"]
    approver: str = Field(min_length=1)
    binding: str
    reason: str = ""


def new_approval_request(
    *,
    thread_id: str,
    agent: str,
    tool: str,
    args: dict[str, Any],
    call_id: str,
    requester: str,
    binding: str,
    policy: Policy,
    now: datetime | None = None,
    approval_action: str = "",
    evidence_digest: str = "",
) -> ApprovalRequest:
    """A request that expires after the policy's ``approval.ttl_minutes``."""
    created = now or datetime.now(UTC)
    return ApprovalRequest(
        thread_id=thread_id,
        agent=agent,
        tool=tool,
        args=args,
        call_id=call_id,
        requester=requester,
        binding=binding,
        created_at=created,
        expires_at=created + timedelta(minutes=policy.approval.ttl_minutes),
        approval_action=approval_action,
        evidence_digest=evidence_digest,
    )


def check_approver(request: ApprovalRequest, approver: str, policy: Policy) -> Decision | None:
    """The identity half of the check: ``None`` when ``approver`` may answer ``request``."""
    if approver == request.requester:
        return Decision.deny(
            request.tool,
            ReasonCode.SELF_APPROVAL,
            f"{approver!r} requested this action and cannot approve it; ask one of: "
            + (", ".join(a for a in policy.approvers if a != approver) or "nobody (add approvers to the policy)"),
        )
    if approver not in policy.approvers:
        return Decision.deny(
            request.tool,
            ReasonCode.APPROVER_NOT_LISTED,
            f"{approver!r} is not an approver in the policy ({policy.source}); allowed approvers: "
            + (", ".join(policy.approvers) or "none listed: add names under 'approvers'"),
        )
    return None


def evaluate_approval(
    request: ApprovalRequest,
    response: ApprovalResponse,
    policy: Policy,
    now: datetime | None = None,
) -> Decision:
    """Decide whether ``response`` lets the held action run. Pure: no I/O."""
    refused = check_approver(request, response.approver, policy)
    if refused is not None:
        return refused
    if response.binding != request.binding:
        return Decision.deny(
            request.tool,
            ReasonCode.APPROVAL_BINDING_MISMATCH,
            "this approval was given for a different action or arguments than the one held; "
            "approve the pending request of this thread as it stands.",
        )
    if (now or datetime.now(UTC)) > request.expires_at:
        return Decision.deny(
            request.tool,
            ReasonCode.APPROVAL_EXPIRED,
            f"the approval request expired at {request.expires_at.isoformat()}; ask again to raise a fresh request.",
        )
    if response.decision == "reject":
        return Decision.deny(
            request.tool,
            ReasonCode.APPROVAL_REJECTED,
            f"rejected by {response.approver}: {response.reason or 'no reason given'}",
        )
    return Decision.allow(request.tool, f"approved by {response.approver}")

"""Approval requests and the pure check of an approver's answer.

An answer is a statement signed with the approver's Ed25519 key; the request it answers
carries the requester's signed request. Both are verified against the keys the policy lists,
and approver and requester must differ by key as well as by name.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mlops_supervisor.policies.decisions import Decision, ReasonCode
from mlops_supervisor.policies.identity import Signed, statement_digest, verify_statement
from mlops_supervisor.policies.policy import Policy

__all__ = [
    "ApprovalRequest",
    "ApprovalResponse",
    "approval_statement",
    "check_answer_signature",
    "check_approver",
    "check_signed_request",
    "evaluate_approval",
    "new_approval_request",
    "request_statement",
]


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
    request_signed: Signed | None = None
    """The requester's signed request that led to this action."""


class ApprovalResponse(BaseModel):
    """An approver's answer; ``binding`` must repeat the request's, and ``signed`` is its signed statement."""

    model_config = ConfigDict(frozen=True)

    decision: Literal["approve", "reject"]
    approver: str = Field(min_length=1)
    binding: str
    reason: str = ""
    signed: Signed | None = None


def request_statement(*, thread_id: str, requester: str, request: str, at: datetime) -> dict[str, Any]:
    """What a requester signs when asking: who, on which thread, the (redacted) request's digest, when."""
    return {
        "kind": "request",
        "requester": requester,
        "thread": thread_id,
        "request_sha256": statement_digest({"request": request}),
        "signed_at": at.isoformat(),
    }


def approval_statement(request: ApprovalRequest, *, decision: str, approver: str) -> dict[str, Any]:
    """What an approver signs: their answer to exactly this request, its evidence and its expiry."""
    return {
        "kind": "approval",
        "decision": decision,
        "approver": approver,
        "requester": request.requester,
        "thread": request.thread_id,
        "tool": request.tool,
        "binding": request.binding,
        "action": request.approval_action or request.tool,
        "model": request.args.get("model"),
        "version": request.args.get("version"),
        "evidence_digest": request.evidence_digest,
        "expires_at": request.expires_at.isoformat(),
        "request_signature": request.request_signed.signature if request.request_signed else "",
    }


def check_signed_request(signed: Signed | None, *, requester: str, thread_id: str, policy: Policy) -> str | None:
    """``None`` when ``signed`` is ``requester``'s valid signed request on ``thread_id``, else why it is not."""
    if signed is None:
        return (
            f"the request was not signed: {requester!r} needs a key listed under people in the policy "
            f"({policy.source}); run `mlops-supervisor keys init {requester}` and have the line it prints added"
        )
    problem = verify_statement(signed, policy.people)
    if problem is not None:
        return problem
    statement = signed.statement
    if statement.get("kind") != "request" or signed.signer != requester or statement.get("thread") != thread_id:
        return f"the signed request is {signed.signer!r}'s on thread {statement.get('thread')!r}, not this one"
    return None


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
    request_signed: Signed | None = None,
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
        request_signed=request_signed,
    )


def check_approver(request: ApprovalRequest, approver: str, policy: Policy) -> Decision | None:
    """The identity half of the check: ``None`` when ``approver`` may answer ``request``.

    By name here; by key too, when the signed answer is checked (``evaluate_approval``).
    """
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
    if request.request_signed is not None and policy.key_fingerprint(approver) == request.request_signed.key:
        return _self_approval_by_key(request, approver)
    return None


def _self_approval_by_key(request: ApprovalRequest, approver: str) -> Decision:
    return Decision.deny(
        request.tool,
        ReasonCode.SELF_APPROVAL,
        f"{approver!r} holds the same key that signed the request ({request.requester!r}); "
        "an approver must be another person with another key",
    )


def check_answer_signature(request: ApprovalRequest, response: ApprovalResponse, policy: Policy) -> Decision | None:
    """``None`` when the answer is signed by the approver's listed key over exactly this request."""
    signed = response.signed
    if signed is None:
        return Decision.deny(
            request.tool, ReasonCode.SIGNATURE_INVALID, f"the answer of {response.approver!r} is not signed"
        )
    problem = verify_statement(signed, policy.people)
    if problem is None and signed.signer != response.approver:
        problem = f"the answer names {response.approver!r} but is signed by {signed.signer!r}"
    if problem is not None:
        return Decision.deny(request.tool, ReasonCode.SIGNATURE_INVALID, f"the approval is refused: {problem}")
    expected = approval_statement(request, decision=response.decision, approver=response.approver)
    if signed.statement != expected:
        changed = sorted(
            k for k in expected.keys() | signed.statement.keys() if signed.statement.get(k) != expected.get(k)
        )
        return Decision.deny(
            request.tool,
            ReasonCode.APPROVAL_BINDING_MISMATCH,
            f"the signed approval is for another action, version, evidence or expiry (differs in: {', '.join(changed)}); "
            "approve the pending request of this thread as it stands",
        )
    requester_problem = check_signed_request(
        request.request_signed, requester=request.requester, thread_id=request.thread_id, policy=policy
    )
    if requester_problem is not None:
        return Decision.deny(request.tool, ReasonCode.REQUEST_NOT_SIGNED, requester_problem)
    assert request.request_signed is not None
    if request.request_signed.key == signed.key:
        return _self_approval_by_key(request, response.approver)
    return None


def evaluate_approval(
    request: ApprovalRequest,
    response: ApprovalResponse,
    policy: Policy,
    now: datetime | None = None,
) -> Decision:
    """Decide whether ``response`` lets the held action run. Pure: no I/O."""
    refused = check_approver(request, response.approver, policy) or check_answer_signature(request, response, policy)
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
    assert response.signed is not None
    return Decision.allow(request.tool, f"approved by {response.approver} (signed with key {response.signed.key})")

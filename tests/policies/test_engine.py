"""Decisions are pure values: allow-lists first, then the policy's rules, then approvals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mlops_supervisor.policies import (
    ApprovalRequest,
    ApprovalResponse,
    Policy,
    ProposedCall,
    ReasonCode,
    approval_binding,
    approval_statement,
    decide_tool_call,
    evaluate_approval,
    new_approval_request,
    request_statement,
    sign_statement,
)
from mlops_supervisor.policies.identity import public_line

KNOWN = frozenset({"promote_model", "train_model", "show_policy"})
KEYS = {name: Ed25519PrivateKey.generate() for name in ("alice", "carol", "eve")}
POLICY = Policy(
    people={n: public_line(KEYS[n].public_key()) for n in ("alice", "carol")},
    approvers=("carol",),
)


def _call(tool: str, agent: str = "deployment", **args: object) -> ProposedCall:
    return ProposedCall(agent=agent, tool=tool, args=args or {"model": "m", "version": 1}, call_id="c1")


def test_unknown_tool_is_denied() -> None:
    """A tool nobody declared is denied with unknown_tool, naming what the agent may call."""
    d = decide_tool_call(_call("rm_rf"), thread_id="t", allow_list={"promote_model"}, known_tools=KNOWN, policy=POLICY)
    assert (d.kind, d.reason_code) == ("deny", ReasonCode.UNKNOWN_TOOL)
    assert "promote_model" in d.message


def test_foreign_tool_is_denied_even_if_policy_would_hold_it() -> None:
    """The allow-list is checked before approval rules, so no rule widens it."""
    d = decide_tool_call(
        _call("promote_model", agent="data"),
        thread_id="t",
        allow_list={"train_model"},
        known_tools=KNOWN,
        policy=POLICY,
    )
    assert (d.kind, d.reason_code) == ("deny", ReasonCode.NOT_IN_ALLOW_LIST)
    assert "train_model" in d.message


def test_policy_denied_tool() -> None:
    """tools.denied refuses a tool to its own agent and says how to allow it."""
    policy = Policy(tools={"denied": ("show_policy",)})  # type: ignore[arg-type]
    d = decide_tool_call(
        _call("show_policy", agent="security"),
        thread_id="t",
        allow_list={"show_policy"},
        known_tools=KNOWN,
        policy=policy,
    )
    assert (d.kind, d.reason_code) == ("deny", ReasonCode.TOOL_DENIED_BY_POLICY)
    assert "tools.denied" in d.message


def test_held_tool_needs_approval_bound_to_arguments() -> None:
    """A held tool needs approval, and the binding changes with any argument."""
    d1 = decide_tool_call(
        _call("promote_model", version=1, model="m"),
        thread_id="t",
        allow_list={"promote_model"},
        known_tools=KNOWN,
        policy=POLICY,
    )
    d2 = decide_tool_call(
        _call("promote_model", version=2, model="m"),
        thread_id="t",
        allow_list={"promote_model"},
        known_tools=KNOWN,
        policy=POLICY,
    )
    assert d1.kind == "needs_approval"
    assert d1.binding
    assert d2.binding
    assert d1.binding != d2.binding


def _request(now: datetime, *, signer: str = "alice") -> ApprovalRequest:
    call = _call("promote_model")
    signed = sign_statement(
        KEYS[signer], "alice", request_statement(thread_id="t", requester="alice", request="promote m 1", at=now)
    )
    return new_approval_request(
        thread_id="t",
        agent="deployment",
        tool="promote_model",
        args=dict(call.args),
        call_id="c1",
        requester="alice",
        binding=approval_binding("t", call),
        policy=POLICY,
        now=now,
        approval_action="champion",
        evidence_digest="e" * 64,
        request_signed=signed,
    )


def _answer(
    req: ApprovalRequest, approver: str, *, key: str | None = None, decision: str = "approve", **changed: object
) -> ApprovalResponse:
    statement = {**approval_statement(req, decision=decision, approver=approver), **changed}
    signed = sign_statement(KEYS[key or approver], approver, statement)
    return ApprovalResponse(decision=decision, approver=approver, binding=req.binding, signed=signed)  # type: ignore[arg-type]


def test_approval_checks() -> None:
    """Self-approval, unlisted approvers, other bindings, expiry and rejection are refused; a listed approver passes."""
    now = datetime.now(UTC)
    req = _request(now)

    def verdict(response: ApprovalResponse, *, at: datetime = now, request: ApprovalRequest = req) -> ReasonCode:
        return evaluate_approval(request, response, POLICY, now=at).reason_code

    assert verdict(_answer(req, "alice")) == ReasonCode.SELF_APPROVAL
    assert verdict(_answer(req, "eve")) == ReasonCode.APPROVER_NOT_LISTED
    assert verdict(_answer(req, "carol").model_copy(update={"binding": "0" * 64})) == (
        ReasonCode.APPROVAL_BINDING_MISMATCH
    )
    late = now + timedelta(minutes=POLICY.approval.ttl_minutes + 1)
    assert verdict(_answer(req, "carol"), at=late) == ReasonCode.APPROVAL_EXPIRED
    assert verdict(_answer(req, "carol", decision="reject")) == ReasonCode.APPROVAL_REJECTED
    assert verdict(_answer(req, "carol")) == ReasonCode.ALLOWED


def test_an_approval_must_be_signed_by_the_approvers_own_listed_key() -> None:
    """Unsigned, signed with the requester's key, with an unlisted key, or altered after signing: refused."""
    now = datetime.now(UTC)
    req = _request(now)
    unsigned = ApprovalResponse(decision="approve", approver="carol", binding=req.binding)
    assert evaluate_approval(req, unsigned, POLICY, now=now).reason_code == ReasonCode.SIGNATURE_INVALID
    with_requesters_key = _answer(req, "carol", key="alice")
    assert evaluate_approval(req, with_requesters_key, POLICY, now=now).reason_code == ReasonCode.SIGNATURE_INVALID
    with_unlisted_key = _answer(req, "carol", key="eve")
    assert evaluate_approval(req, with_unlisted_key, POLICY, now=now).reason_code == ReasonCode.SIGNATURE_INVALID
    good = _answer(req, "carol")
    assert good.signed is not None
    altered = good.model_copy(
        update={"signed": good.signed.model_copy(update={"statement": {**good.signed.statement, "version": 2}})}
    )
    assert evaluate_approval(req, altered, POLICY, now=now).reason_code == ReasonCode.SIGNATURE_INVALID


def test_an_approval_over_other_evidence_or_expiry_is_refused() -> None:
    now = datetime.now(UTC)
    req = _request(now)
    for change in ({"evidence_digest": "f" * 64}, {"version": 2}, {"expires_at": "2999-01-01T00:00:00+00:00"}):
        response = _answer(req, "carol", **change)
        assert evaluate_approval(req, response, POLICY, now=now).reason_code == ReasonCode.APPROVAL_BINDING_MISMATCH


def test_a_held_action_needs_the_requesters_signed_request() -> None:
    now = datetime.now(UTC)
    unsigned = _request(now).model_copy(update={"request_signed": None})
    assert evaluate_approval(unsigned, _answer(unsigned, "carol"), POLICY, now=now).reason_code == (
        ReasonCode.REQUEST_NOT_SIGNED
    )
    forged = _request(now, signer="eve")  # eve signs a request in alice's name
    assert evaluate_approval(forged, _answer(forged, "carol"), POLICY, now=now).reason_code == (
        ReasonCode.REQUEST_NOT_SIGNED
    )

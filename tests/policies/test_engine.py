"""Decisions are pure values: allow-lists first, then the policy's rules, then approvals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from mlops_supervisor.policies import (
    ApprovalResponse,
    Policy,
    ProposedCall,
    ReasonCode,
    approval_binding,
    decide_tool_call,
    evaluate_approval,
    new_approval_request,
)

KNOWN = frozenset({"promote_model", "train_model", "show_policy"})
POLICY = Policy(approvers=("carol",))


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


def _request(now: datetime) -> object:
    call = _call("promote_model")
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
    )


def test_approval_checks() -> None:
    """Self-approval, unlisted approvers, other bindings, expiry and rejection are refused; a listed approver passes."""
    now = datetime.now(UTC)
    req = _request(now)
    binding = req.binding  # type: ignore[attr-defined]

    def verdict(approver: str, *, decision: str = "approve", bind: str = binding, at: datetime = now) -> ReasonCode:
        resp = ApprovalResponse(decision=decision, approver=approver, binding=bind, reason="r")  # type: ignore[arg-type]
        return evaluate_approval(req, resp, POLICY, now=at).reason_code  # type: ignore[arg-type]

    assert verdict("alice") == ReasonCode.SELF_APPROVAL
    assert verdict("eve") == ReasonCode.APPROVER_NOT_LISTED
    assert verdict("carol", bind="0" * 64) == ReasonCode.APPROVAL_BINDING_MISMATCH
    assert verdict("carol", at=now + timedelta(minutes=POLICY.approval.ttl_minutes + 1)) == ReasonCode.APPROVAL_EXPIRED
    assert verdict("carol", decision="reject") == ReasonCode.APPROVAL_REJECTED
    assert verdict("carol") == ReasonCode.ALLOWED

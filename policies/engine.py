"""The decision on one proposed tool call: a pure function of the call, the agent and the policy."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Set
from dataclasses import dataclass
from typing import Any

from mlops_supervisor.policies.decisions import Decision, ReasonCode
from mlops_supervisor.policies.policy import Policy

__all__ = ["ProposedCall", "approval_binding", "decide_tool_call"]


@dataclass(frozen=True)
class ProposedCall:
    """What an agent's model asked for: a tool name, its arguments, and who asked."""

    agent: str
    tool: str
    args: Mapping[str, Any]
    call_id: str


def approval_binding(thread_id: str, call: ProposedCall) -> str:
    """A digest that ties an approval to exactly this thread, agent, tool, arguments and call."""
    canonical = json.dumps(
        {
            "thread": thread_id,
            "agent": call.agent,
            "tool": call.tool,
            "args": call.args,
            "call_id": call.call_id,
        },
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def decide_tool_call(
    call: ProposedCall,
    *,
    thread_id: str,
    allow_list: Set[str],
    known_tools: Set[str],
    policy: Policy,
) -> Decision:
    """Decide one call before anything runs.

    Order matters: an unknown tool and a tool outside the agent's allow-list are
    refused before the policy's own rules are read, so no rule can widen an allow-list.
    """
    if call.tool not in known_tools:
        return Decision.deny(
            call.tool,
            ReasonCode.UNKNOWN_TOOL,
            f"there is no tool named {call.tool!r}; the {call.agent} agent may call: "
            + (", ".join(sorted(allow_list)) or "nothing"),
        )
    if call.tool not in allow_list:
        return Decision.deny(
            call.tool,
            ReasonCode.NOT_IN_ALLOW_LIST,
            f"the {call.agent} agent may not call {call.tool!r}; its allow-list is: "
            + (", ".join(sorted(allow_list)) or "empty")
            + ". Route the task to the agent that owns this tool.",
        )
    if call.tool in policy.tools.denied:
        return Decision.deny(
            call.tool,
            ReasonCode.TOOL_DENIED_BY_POLICY,
            f"{call.tool!r} is denied to every agent by the policy ({policy.source}, tools.denied); "
            "remove it from that list to allow it.",
        )
    if policy.requires_approval(call.tool):
        approvers = ", ".join(policy.approvers) or "nobody yet: add approvers to the policy"
        return Decision.needs_approval(
            call.tool,
            approval_binding(thread_id, call),
            f"{call.tool!r} needs a human approval by a listed approver other than the requester "
            f"(approvers: {approvers}).",
        )
    return Decision.allow(call.tool)

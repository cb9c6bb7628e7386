"""The declared tools of every specialist.

Tools whose backends arrive in later work are declared here with their real argument
schemas and answer with ``ToolNotAvailableError``: they never return made-up results.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from pydantic import BaseModel, Field

from mlops_supervisor.policies import ToolNotAvailableError, verify_audit_log
from mlops_supervisor.tools.core import GovernedTool, ToolContext, ToolRegistry, to_json
from mlops_supervisor.tools.data import data_tools
from mlops_supervisor.tools.evaluation import evaluation_tools
from mlops_supervisor.tools.monitoring import observability_tools
from mlops_supervisor.tools.registry import promotion_tool, registry_tools
from mlops_supervisor.tools.serving import deployment_tools
from mlops_supervisor.tools.training import experimentation_tools

__all__ = ["build_tool_registry"]


class _NoArgs(BaseModel):
    pass


class _AuditSummaryArgs(BaseModel):
    limit: int = Field(default=10, ge=1, le=200, description="how many recent events to list")


class _TextArgs(BaseModel):
    text: str = Field(description="text to check")


def _declared(
    name: str, description: str, args_schema: type[BaseModel], *, mutates: bool, arrives: str
) -> GovernedTool:
    def unavailable(**_: Any) -> str:
        raise ToolNotAvailableError(f"{name} is not available yet ({arrives}); nothing was changed")

    return GovernedTool.from_function(name, description, args_schema, unavailable, mutates=mutates, available=False)


def _audit_summary(ctx: ToolContext) -> GovernedTool:
    def audit_summary(limit: int = 10) -> str:
        records = list(ctx.audit.records())
        counts = Counter(r.get("event", "?") for r in records)
        recent = [
            {
                k: r.get(k)
                for k in ("seq", "ts", "event", "thread_id", "agent", "action", "decision", "reason_code")
                if r.get(k) is not None
            }
            for r in records[-limit:]
        ]
        return to_json({"events": len(records), "by_event": dict(counts), "recent": recent})

    return GovernedTool.from_function(
        "audit_summary",
        "Read-only summary of the audit log: event counts and the most recent events.",
        _AuditSummaryArgs,
        audit_summary,
        mutates=False,
    )


def _verify_audit_chain(ctx: ToolContext) -> GovernedTool:
    def verify_audit_chain() -> str:
        result = verify_audit_log(ctx.audit.path)
        return to_json(
            {"intact": result.ok, "lines": result.lines, "bad_line": result.bad_line, "problem": result.problem}
        )

    return GovernedTool.from_function(
        "verify_audit_chain",
        "Check the audit log's hash chain and name the first bad line, if any.",
        _NoArgs,
        verify_audit_chain,
        mutates=False,
    )


def _show_policy(ctx: ToolContext) -> GovernedTool:
    def show_policy() -> str:
        policy = ctx.policy
        return to_json(
            {
                "source": policy.source,
                "digest": policy.digest,
                "approvers": list(policy.approvers),
                "approval_required_for": list(policy.approval.required_for),
                "approval_ttl_minutes": policy.approval.ttl_minutes,
                "denied_tools": list(policy.tools.denied),
                "max_steps": policy.limits.max_steps,
            }
        )

    return GovernedTool.from_function(
        "show_policy",
        "Read-only view of the policy in force: approvers, held tools, denied tools, budgets.",
        _NoArgs,
        show_policy,
        mutates=False,
    )


_GUARD = "it arrives with the Presidio redaction and injection guard"


def build_tool_registry(ctx: ToolContext) -> ToolRegistry:
    """Every tool of every specialist, bound to ``ctx``."""
    return ToolRegistry(
        [
            *data_tools(ctx),
            *experimentation_tools(ctx),
            *evaluation_tools(ctx),
            *registry_tools(ctx),
            # deployment
            promotion_tool(ctx),
            *deployment_tools(ctx),
            # observability (read-only)
            _audit_summary(ctx),
            *observability_tools(ctx),
            # security
            _verify_audit_chain(ctx),
            _show_policy(ctx),
            _declared(
                "scan_prompt_injection",
                "Check text for prompt-injection attempts.",
                _TextArgs,
                mutates=False,
                arrives=_GUARD,
            ),
        ]
    )

"""The declared tools of every specialist, and the endpoint operations behind ``up`` and ``down``.

A tool whose backend arrives in later work is declared with its real argument schema and
``available=False``, and answers with ``ToolNotAvailableError``: it never returns made-up
results. The registry is routed through one chokepoint: no mutating tool's body is
reachable but through it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, Field, field_validator

from mlops_supervisor.policies import InvalidInputError
from mlops_supervisor.tools.core import (
    Chokepoint,
    GovernedTool,
    ToolContext,
    ToolRegistry,
    checked_name,
    model_lock,
    to_json,
)
from mlops_supervisor.tools.data import data_tools
from mlops_supervisor.tools.evaluation import evaluation_tools
from mlops_supervisor.tools.monitoring import observability_tools
from mlops_supervisor.tools.registry import promotion_tool, registry_tools
from mlops_supervisor.tools.security import security_tools
from mlops_supervisor.tools.serving import ServingBackends, deployment_tools, feedback_tool, staging_endpoint
from mlops_supervisor.tools.training import experimentation_tools

__all__ = ["build_tool_registry"]


class _NoArgs(BaseModel):
    pass


class _AuditSummaryArgs(BaseModel):
    limit: int = Field(default=10, ge=1, le=200, description="how many recent events to list")


class _EndpointArgs(BaseModel):
    model: str | None = Field(
        default=None, description="one served model (its production and staging endpoints); omit for all"
    )

    @field_validator("model")
    @classmethod
    def _safe_name(cls, model: str | None) -> str | None:
        return None if model is None else checked_name("model", model)


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
        result = ctx.audit.verify()
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


def _endpoint_tools(ctx: ToolContext) -> list[GovernedTool]:
    """restore_endpoints and stop_endpoints: the CLI's ``up`` and ``down`` (no agent's allow-list names them)."""
    backend = ServingBackends(ctx)

    def served(model: str | None) -> list[str]:
        """The endpoints to act on: all, or the named model's production and staging endpoints."""
        known = backend.models()
        if model is None:
            return known
        named = [e for e in known if e in (model, staging_endpoint(model))]
        if not named:
            raise InvalidInputError(
                "model_not_served",
                f"model {model!r} has no serving state in {ctx.workspace}; served here: {', '.join(known) or 'none'}",
            )
        return named

    def each(model: str | None, operation: Callable[[str], dict[str, Any]]) -> str:
        done = []
        for endpoint in served(model):
            # under the model's lock, as deploys and canary steps are: not while they rewrite its state
            with model_lock(ctx.workspace, endpoint.split("@", 1)[0]):  # '@' never occurs in a model name
                done.append(operation(endpoint))
        return to_json(done)

    def restore_endpoints(model: str | None = None) -> str:
        return each(model, backend.restore)

    def stop_endpoints(model: str | None = None) -> str:
        return each(model, backend.stop)

    return [
        GovernedTool.from_function(
            "restore_endpoints",
            "Restart the model servers and routers of this workspace that died, as they were recorded.",
            _EndpointArgs,
            restore_endpoints,
            mutates=True,
        ),
        GovernedTool.from_function(
            "stop_endpoints",
            "Stop the model servers and routers this workspace runs (stray ones included) and forget their state.",
            _EndpointArgs,
            stop_endpoints,
            mutates=True,
        ),
    ]


def build_tool_registry(ctx: ToolContext, *, actor: str | None = None) -> ToolRegistry:
    """Every tool of every specialist, bound to ``ctx``, its mutating tools routed through one chokepoint.

    ``actor`` is who acts on direct calls (default: the OS user); a ``Supervisor`` routes the
    registry through its own chokepoint, acting as its user.
    """
    chokepoint = Chokepoint.for_context(ctx, actor=actor)
    registry = ToolRegistry(
        [
            *data_tools(ctx),
            feedback_tool(ctx),  # the data agent's: labels that arrive after the predictions
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
            # the permission matrix describes this very registry (read when it is asked, once built)
            *security_tools(ctx, lambda: registry),
            # the endpoint operations of `up` and `down`
            *_endpoint_tools(ctx),
        ]
    ).routed_through(chokepoint.call)
    return registry

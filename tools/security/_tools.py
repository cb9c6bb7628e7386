"""The security agent's tools, all read-only: scan_prompt_injection, review_audit, permission_matrix
and security_report (which writes a report file and changes nothing else)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, Field, field_validator, model_validator

from mlops_supervisor.tools.core import GovernedTool, ToolContext, ToolRegistry, checked_name, to_json
from mlops_supervisor.tools.security._audit_review import review_audit_log
from mlops_supervisor.tools.security._matrix import permission_rows, specialists_allow_lists
from mlops_supervisor.tools.security._report import write_security_report
from mlops_supervisor.tools.security._scan import scan_target

__all__ = ["security_tools"]


class _ScanArgs(BaseModel):
    text: str | None = Field(default=None, description="text to scan")
    path: str | None = Field(
        default=None,
        description="a file in the workspace (relative to it), read as JSON, JSON lines, CSV, Parquet or text",
    )
    model: str | None = Field(
        default=None, description="a registered model: its descriptions and tags, and its versions' training runs"
    )

    @field_validator("model")
    @classmethod
    def _safe_name(cls, model: str | None) -> str | None:
        return None if model is None else checked_name("model", model)

    @model_validator(mode="after")
    def _one_target(self) -> _ScanArgs:
        if sum(x is not None for x in (self.text, self.path, self.model)) != 1:
            raise ValueError("give exactly one of text, path or model")
        return self


class _ReviewArgs(BaseModel):
    streak: int = Field(default=3, ge=2, le=100, description="denials in a row on one thread that count as a streak")
    limit: int = Field(default=100, ge=1, le=1000, description="how many anomalies to list (all are counted)")


class _NoArgs(BaseModel):
    pass


def security_tools(ctx: ToolContext, registry: Callable[[], ToolRegistry]) -> list[GovernedTool]:
    """The security agent's tools bound to ``ctx``; ``registry`` gives the tools the matrix describes."""

    def scan_prompt_injection(text: str | None = None, path: str | None = None, model: str | None = None) -> str:
        return to_json(scan_target(ctx, text=text, path=path, model=model))

    def review_audit(streak: int = 3, limit: int = 100) -> str:
        return to_json(review_audit_log(ctx.audit, streak=streak, limit=limit))

    def permission_matrix() -> str:
        rows = permission_rows(registry(), ctx.policy, specialists_allow_lists())
        per_agent: dict[str, Any] = {}
        for agent, count in Counter(r["agent"] for r in rows).items():
            mine = [r for r in rows if r["agent"] == agent]
            per_agent[agent] = {
                "tools": count,
                "mutating": sum(r["mutates"] for r in mine),
                "held_for_approval": sum(r["held_for_approval"] for r in mine),
            }
        return to_json(
            {
                "policy": {"source": ctx.policy.source, "sha256": ctx.policy.digest},
                "rows": rows,
                "per_agent": per_agent,
                "note": "gate: the tool reads evidence from the system of record and refuses without it; "
                "held_for_approval: the policy pauses every call for a signed approval; denied: nobody may call it",
            }
        )

    def security_report() -> str:
        return to_json(write_security_report(ctx, registry(), specialists_allow_lists()))

    return [
        GovernedTool.from_function(
            "scan_prompt_injection",
            "Scan text, a workspace file or a registered model's descriptions and tags for prompt injection, "
            "secrets and personal data; reports kinds, entity types and offsets, never the text.",
            _ScanArgs,
            scan_prompt_injection,
            mutates=False,
        ),
        GovernedTool.from_function(
            "review_audit",
            "Review the audit log for anomalies: a broken chain, refusals in a row, self-approval attempts, "
            "allow-list probes, denied tools, signature failures, secrets in arguments, quarantined outputs.",
            _ReviewArgs,
            review_audit,
            mutates=False,
        ),
        GovernedTool.from_function(
            "permission_matrix",
            "Who may call what: each agent's tools with whether they change state, run a gate on evidence, "
            "are held for approval or denied by the policy in force.",
            _NoArgs,
            permission_matrix,
            mutates=False,
        ),
        GovernedTool.from_function(
            "security_report",
            "Write the security report (audit anomalies, quarantines, permission matrix, egress allow-list, "
            "registered-model scan) under reports/security/; returns its path and summary.",
            _NoArgs,
            security_report,
            mutates=False,
        ),
    ]

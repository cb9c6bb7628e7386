"""Typed results of the library and the CLI; they render as Markdown in notebooks."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, Field

__all__ = [
    "EXIT_CODES",
    "DecisionRecord",
    "PendingApproval",
    "Report",
    "RunResult",
    "ThreadSummary",
    "ToolOutput",
    "WorkspaceStatus",
]

Status = Literal["done", "refused", "awaiting_approval", "failed", "invalid_input"]

EXIT_CODES: dict[str, int] = {"done": 0, "failed": 1, "invalid_input": 2, "refused": 3, "awaiting_approval": 4}
"""Exit code of each status; 2 is also what usage errors raised before a run exit with."""


_CODE = re.compile(r"(```[\s\S]*?```|`[^`\n]*`)")


def escape_placeholders(markdown: str) -> str:
    """Escape ``<`` outside code, so placeholders like ``<EMAIL_ADDRESS>`` are not taken for HTML."""
    parts = _CODE.split(markdown)
    return "".join(part if i % 2 else part.replace("<", "\\<") for i, part in enumerate(parts))


class Report(BaseModel):
    """The six sections every request ends with."""

    plan: str = ""
    design: str = ""
    changes: str = ""
    verification: str = ""
    rollback: str = ""
    summary: str = ""

    def to_markdown(self) -> str:
        """The report as Markdown, one heading per section."""
        return "\n\n".join(
            f"## {name.title()}\n\n{escape_placeholders(getattr(self, name))}" for name in Report.model_fields
        )

    def _repr_markdown_(self) -> str:
        return self.to_markdown()


class DecisionRecord(BaseModel):
    """One policy decision as reported."""

    agent: str
    action: str
    decision: Literal["allow", "deny", "needs_approval"]
    reason_code: str
    message: str


class PendingApproval(BaseModel):
    """The action a paused thread waits on, and how to answer it."""

    tool: str
    agent: str
    args: dict[str, Any]
    requester: str
    binding: str
    expires_at: str
    approve_command: str
    reject_command: str


class ToolOutput(BaseModel):
    """What one tool call returned (redacted), parsed from JSON where the tool speaks JSON."""

    agent: str
    tool: str
    outcome: Literal["ok", "error", "unavailable", "invalid_input", "refused"]
    reason_code: str = ""
    output: Any = None


class RunResult(BaseModel):
    """The outcome of one request: status, report, decisions, tool outputs and any pending approval."""

    status: Status
    thread_id: str
    report: Report
    decisions: list[DecisionRecord] = Field(default_factory=list)
    outputs: list[ToolOutput] = Field(default_factory=list)
    pending_approval: PendingApproval | None = None
    requester: str = ""
    request: str = ""
    audit_log: str = ""

    @property
    def exit_code(self) -> int:
        """The CLI exit code for this status."""
        return EXIT_CODES[self.status]

    def to_markdown(self) -> str:
        """Status line plus the six-section report."""
        return f"**{self.status}** · thread `{self.thread_id}`\n\n{self.report.to_markdown()}"

    def _repr_markdown_(self) -> str:
        return self.to_markdown()


class ThreadSummary(BaseModel):
    """One thread in the workspace listing."""

    thread_id: str
    status: str
    requester: str
    request: str


class EndpointSummary(BaseModel):
    """One served model as its processes are now: the router and each version, alive or not."""

    model: str
    url: str | None
    router_alive: bool
    versions: dict[int, dict[str, Any]]
    stray: list[dict[str, Any]] = Field(default_factory=list)

    @property
    def down(self) -> list[str]:
        """The processes that are recorded but not running."""
        dead = [] if self.router_alive or self.url is None else ["router"]
        return dead + [f"version {v}" for v, s in self.versions.items() if not s["alive"]]


class WorkspaceStatus(BaseModel):
    """What the workspace holds: threads, pending approvals and the audit chain's state."""

    status: Status = "done"
    thread_id: str | None = None
    workspace: str
    threads: list[ThreadSummary]
    audit_intact: bool
    audit_lines: int
    endpoints: list[EndpointSummary] = Field(default_factory=list)
    report: Report
    decisions: list[DecisionRecord] = Field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """Always 0: listing a workspace succeeds or raises."""
        return EXIT_CODES[self.status]

    def to_markdown(self) -> str:
        """A table of threads and the audit state."""
        rows = (
            "\n".join(f"| `{t.thread_id}` | {t.status} | {t.requester} | {t.request} |" for t in self.threads)
            or "| (none) | | | |"
        )
        served = "\n".join(
            f"| {e.model} | {e.url or '-'} | {'up' if e.router_alive else 'DOWN'} | "
            + ", ".join(f"v{v} {s['weight']}% {'up' if s['alive'] else 'DOWN'}" for v, s in e.versions.items())
            + "".join(f", stray {p['kind']} pid {p['pid']}" for p in e.stray)
            + " |"
            for e in self.endpoints
        )
        endpoints = (
            f"\n\n| endpoint | router URL | router | versions |\n|---|---|---|---|\n{served}" if self.endpoints else ""
        )
        return (
            f"Workspace `{self.workspace}`; audit chain "
            f"{'intact' if self.audit_intact else 'BROKEN'} ({self.audit_lines} lines)\n\n"
            f"| thread | status | requester | request |\n|---|---|---|---|\n{rows}{endpoints}\n\n{self.report.summary}"
        )

    def _repr_markdown_(self) -> str:
        return self.to_markdown()

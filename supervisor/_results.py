"""Typed results of the library and the CLI; they render as Markdown in notebooks."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

__all__ = [
    "EXIT_CODES",
    "DecisionRecord",
    "ModelUsage",
    "NodeUsage",
    "OutboxSummary",
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


class NodeUsage(BaseModel):
    """Model calls and tokens of one graph node (or of the whole request), and their cost when priced."""

    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    cost_usd: float | None = None


class ModelUsage(BaseModel):
    """The model usage of one request: per node, the total, and the price table the cost comes from."""

    nodes: dict[str, NodeUsage] = Field(default_factory=dict)
    total: NodeUsage = Field(default_factory=NodeUsage)
    price_table: str | None = None


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
    usage: ModelUsage | None = None
    """Tokens (and cost) of a real model's calls; None for the offline planner and scripted models."""
    trace_id: str | None = None
    """The MLflow trace of the run that returned this result (experiment ``mlops-supervisor`` of the store)."""
    trace_ids: list[str] = Field(default_factory=list)
    """Every MLflow trace of this thread, oldest first: one per run (ask, approve, resume, ...)."""
    tracing_problem: str = ""
    """Why this run is not traced (the tracking store could not be reached or written); empty when it is."""

    @property
    def exit_code(self) -> int:
        """The CLI exit code for this status."""
        return EXIT_CODES[self.status]

    def to_markdown(self) -> str:
        """Status line, the six-section report, the decisions as a table and the plots the tools wrote (by path)."""
        return _run_markdown(self, inline_plots=False)

    def _repr_markdown_(self) -> str:
        return self.to_markdown()

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None, **kwargs: Any) -> dict[str, str]:
        """For Jupyter: the Markdown with the plots inline (PNG data URIs); ``to_markdown()`` as plain text."""
        return {"text/markdown": _run_markdown(self, inline_plots=True), "text/plain": self.to_markdown()}


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


class OutboxSummary(BaseModel):
    """The workspace's alert outbox: notifications not delivered, or with nowhere else to go (newest first)."""

    count: int = 0
    path: str = ""
    latest: list[dict[str, Any]] = Field(default_factory=list)

    @classmethod
    def of(cls, entries: list[dict[str, Any]], path: str = "", *, shown: int = 5) -> OutboxSummary:
        """The count of ``entries`` (oldest first, already redacted) and the latest ``shown`` of them, briefly."""
        keep = ("ts", "model", "route", "owner", "status", "reason", "kinds", "summaries")
        latest = [{k: e.get(k) for k in keep} for e in reversed(entries[-shown:])] if shown > 0 else []
        return cls(count=len(entries), path=path, latest=latest)

    def to_markdown(self) -> str:
        """A line with the count and a table of the latest entries; empty when the outbox is."""
        if not self.count:
            return ""
        rows = "\n".join(
            f"| {_cell(e.get('ts') or '')} | {_cell(e.get('model') or '')} | {_cell(e.get('route') or 'none')} | "
            f"{_cell(e.get('status') or '')} | {_cell('; '.join(e.get('summaries') or []))} | "
            f"{_cell(e.get('reason') or '')} |"
            for e in self.latest
        )
        return (
            f"Alert outbox: {self.count} notification(s) not delivered or with no route (`{self.path}`); "
            f"the latest:\n\n| when | model | route | status | alerts | reason |\n|---|---|---|---|---|---|\n{rows}"
        )


class WorkspaceStatus(BaseModel):
    """What the workspace holds: threads, pending approvals and the audit chain's state."""

    status: Status = "done"
    thread_id: str | None = None
    workspace: str
    threads: list[ThreadSummary]
    audit_intact: bool
    audit_lines: int
    endpoints: list[EndpointSummary] = Field(default_factory=list)
    outbox: OutboxSummary = Field(default_factory=OutboxSummary)
    report: Report
    decisions: list[DecisionRecord] = Field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """Always 0: listing a workspace succeeds or raises."""
        return EXIT_CODES[self.status]

    def to_markdown(self) -> str:
        """A table of threads and the audit state."""
        rows = (
            "\n".join(
                f"| `{t.thread_id}` | {t.status} | {_cell(t.requester)} | {_cell(t.request)} |" for t in self.threads
            )
            or "| (none) | | | |"
        )
        served = "\n".join(
            f"| {e.model} | {e.url or '-'} | {'up' if e.router_alive else 'DOWN'} | "
            + ", ".join(f"v{v} {s['weight']}% {'up' if s['alive'] else 'DOWN'}" for v, s in e.versions.items())
            + "".join(
                f", stray {p['kind']} " + (f"pid {p['pid']}" if p.get("pid") is not None else str(p.get("name")))
                for p in e.stray
            )
            + " |"
            for e in self.endpoints
        )
        endpoints = (
            f"\n\n| endpoint | router URL | router | versions |\n|---|---|---|---|\n{served}" if self.endpoints else ""
        )
        outbox = f"\n\n{self.outbox.to_markdown()}" if self.outbox.count else ""
        return (
            f"Workspace `{self.workspace}`; audit chain "
            f"{'intact' if self.audit_intact else 'BROKEN'} ({self.audit_lines} lines)\n\n"
            f"| thread | status | requester | request |\n|---|---|---|---|\n{rows}{endpoints}{outbox}\n\n"
            f"{self.report.summary}"
        )

    def _repr_markdown_(self) -> str:
        return self.to_markdown()


# --- rendering helpers -----------------------------------------------------------------------

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_MAX_INLINE_PLOT_BYTES = 4 * 1024 * 1024


def _cell(text: object) -> str:
    """``text`` safe in one Markdown table cell: one line, pipes escaped, placeholders kept as text."""
    return escape_placeholders(" ".join(str(text).split())).replace("|", "\\|")


def decisions_table(decisions: list[DecisionRecord]) -> str:
    """The decisions as a Markdown table (agent, action, decision, reason code, message); empty without any."""
    if not decisions:
        return ""
    rows = "\n".join(
        f"| {_cell(d.agent)} | `{_cell(d.action)}` | {d.decision} | "
        f"{f'`{_cell(d.reason_code)}`' if d.reason_code else ''} | {_cell(d.message)} |"
        for d in decisions
    )
    return f"| agent | action | decision | reason code | message |\n|---|---|---|---|---|\n{rows}"


class Plot(BaseModel):
    """A plot a tool of the run wrote: what it shows, the name the tool gave it, and its PNG here, if found."""

    caption: str
    name: str
    path: str | None = None


def plots_of(result: RunResult) -> list[Plot]:
    """The plots the run's tool outputs name, in order: the evaluation's (artifacts of its MLflow run,
    found in the workspace's embedded store) and observability's latency and drift plots (files under the
    workspace's ``reports``). A plot is given a path only when it is a PNG inside the workspace."""
    root = Path(result.audit_log).parent if result.audit_log else None
    plots: list[Plot] = []
    for out in result.outputs:
        data = out.output
        if out.outcome != "ok" or not isinstance(data, dict):
            continue
        about = f"{out.tool}" + (f", {data['model']}" if isinstance(data.get("model"), str) else "")
        about += f" version {data['version']}" if isinstance(data.get("version"), int) else ""
        if isinstance(data.get("plot"), str):
            name = data["plot"]
            plots.append(Plot(caption=f"{Path(name).stem} ({about})", name=name, path=_png_in(root, Path(name))))
        run = data.get("evaluation_run")
        for name in data.get("plots") or []:
            if not isinstance(name, str):
                continue
            found = None
            if root is not None and isinstance(run, str) and run.isalnum():
                # the embedded store keeps a run's artifacts in mlartifacts/RUN (or EXPERIMENT/RUN)/artifacts
                store = root / "mlartifacts"
                matches = [*store.glob(f"{run}/artifacts/{name}"), *store.glob(f"*/{run}/artifacts/{name}")]
                found = matches[0] if matches else None
            plots.append(Plot(caption=f"{Path(name).stem} ({about})", name=name, path=_png_in(root, found)))
    return plots


def _png_in(root: Path | None, path: Path | None) -> str | None:
    """``path`` when it is a PNG file of a sane size inside ``root``; else None (nothing outside is read)."""
    if root is None or path is None:
        return None
    try:
        resolved = path.resolve()
        if not resolved.is_relative_to(root.resolve()) or not resolved.is_file():
            return None
        if resolved.stat().st_size > _MAX_INLINE_PLOT_BYTES:
            return None
        with resolved.open("rb") as f:
            return str(resolved) if f.read(len(_PNG_MAGIC)) == _PNG_MAGIC else None
    except OSError:
        return None


def _plots_markdown(plots: list[Plot], *, inline: bool) -> str:
    if not plots:
        return ""
    if not inline:
        return "\n".join(f"- {escape_placeholders(p.caption)}: `{p.path or p.name}`" for p in plots)
    parts = []
    for p in plots:
        caption = escape_placeholders(p.caption)
        if p.path is None:
            parts.append(f"**{caption}**: `{p.name}` (not in this workspace's files, so not shown)")
            continue
        data = base64.b64encode(Path(p.path).read_bytes()).decode("ascii")
        parts.append(f"**{caption}**\n\n![{caption}](data:image/png;base64,{data})")
    return "\n\n".join(parts)


def _run_markdown(result: RunResult, *, inline_plots: bool) -> str:
    """A result as Markdown: status, the six sections, the decisions table, the plots (inline or by path)."""
    parts = [f"**{result.status}** · thread `{result.thread_id}`", result.report.to_markdown()]
    table = decisions_table(result.decisions)
    if table:
        parts.append(f"## Decisions\n\n{table}")
    plots = _plots_markdown(plots_of(result), inline=inline_plots)
    if plots:
        parts.append(f"## Plots\n\n{plots}")
    return "\n\n".join(parts)

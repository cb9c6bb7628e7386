"""The six-section report, built from a thread's state by one pure function."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from mlops_supervisor._usage import usage_line

__all__ = ["REPORT_SECTIONS", "build_report", "derive_status", "trace_line"]

REPORT_SECTIONS = ("plan", "design", "changes", "verification", "rollback", "summary")


def derive_status(state: Mapping[str, Any]) -> Literal["done", "refused", "invalid_input", "failed"]:
    """done, refused, invalid_input or failed, from what the request recorded."""
    if state.get("failure"):
        return "failed"
    if any(d["decision"] == "deny" for d in state.get("decisions", [])):
        return "refused"
    outcomes = {r["outcome"] for r in state.get("tool_results", [])} - {"refused"}
    if "invalid_input" in outcomes and outcomes <= {"ok", "invalid_input"}:
        return "invalid_input"
    if outcomes - {"ok"}:
        return "failed"
    return "done"


def trace_line(*, trace_id: str, trace_ids: list[str], experiment: str, store: str, problem: str) -> str:
    """The Verification line that links a run to its MLflow trace (and the thread's others), or says why it has none."""
    if problem:
        return f"Not traced: {problem}."
    if not trace_ids:
        return ""
    others = ", ".join(f"`{t}`" for t in trace_ids if t != trace_id)
    head = f"MLflow trace `{trace_id}`" if trace_id else f"MLflow traces of this thread: {others}"
    rest = f"; the thread's other traces: {others}" if trace_id and others else ""
    return f"{head} in experiment `{experiment}` of {store} (`mlflow ui --backend-store-uri {store}`){rest}."


def _bullets(lines: list[str], empty: str) -> str:
    return "\n".join(f"- {line}" for line in lines) if lines else empty


def build_report(state: Mapping[str, Any], *, status: str, design: str, audit_path: str) -> dict[str, str]:
    """Plan, Design, Changes, Verification, Rollback and Summary for one request."""
    plan = [f"{i}. **{step['agent']}**: {step['task']}" for i, step in enumerate(state.get("plan", []), start=1)]
    # A lifecycle request's Plan first restates its objective and acceptance criteria (supervisor/_requirements.py).
    objective: list[str] = next((c["objective"] for c in state.get("commands", []) if c.get("objective")), [])
    results = state.get("tool_results", [])
    changes = [
        f"`{r['tool']}` by {r['agent']}: {r['summary']}" for r in results if r["mutates"] and r["outcome"] == "ok"
    ]
    checks = [
        f"{d['agent']} → `{d['action']}`: **{d['decision']}** ({d['reason_code']}): {d['message']}"
        for d in state.get("decisions", [])
    ]
    checks += [f"`{r['tool']}` ran: {r['outcome']}" for r in results]
    checks.append(f"Every step above is in the hash-chained audit log {audit_path} (`mlops-supervisor audit verify`).")
    rollbacks = sorted({r["rollback"] for r in results if r["mutates"] and r["outcome"] == "ok" and r.get("rollback")})

    summary_lines = []
    if state.get("answer"):
        summary_lines.append(str(state["answer"]))
    if status == "awaiting_approval":
        pending = state.get("pending", [])
        if pending:
            p = pending[0]
            summary_lines.append(
                f"Paused: `{p['tool']}` needs an approval by a listed approver other than {p['requester']}. "
                f"Run `mlops-supervisor approve {state.get('thread_id')} --as APPROVER` "
                f"or `mlops-supervisor reject {state.get('thread_id')} --as APPROVER --reason TEXT`."
            )
    elif status == "refused":
        denied = [d for d in state.get("decisions", []) if d["decision"] == "deny"]
        summary_lines.append(
            "Refused by policy: " + "; ".join(f"`{d['action']}` ({d['reason_code']}): {d['message']}" for d in denied)
        )
    elif status == "invalid_input":
        bad = [r for r in results if r["outcome"] == "invalid_input"]
        summary_lines.append(
            "Stopped on bad input: "
            + "; ".join(f"`{r['tool']}` ({r.get('reason_code') or 'invalid_input'}): {r['summary']}" for r in bad)
            + " Nothing after this step ran."
        )
    elif status == "failed":
        failed = [r for r in results if r["outcome"] != "ok"]
        reason = state.get("failure") or "; ".join(f"`{r['tool']}`: {r['summary']}" for r in failed)
        summary_lines.append(f"Failed: {reason}")
    else:
        summary_lines.append("Done." if plan else "Done; no specialist was needed.")

    return {
        "plan": "\n".join(
            [*objective, "", "**Steps**:", *plan]
            if objective
            else plan or ["No specialist was needed for this request."]
        ),
        # the model's token counts and cost: a line of their own, only when a real model reported them
        "design": "\n\n".join(part for part in (design, usage_line(state.get("usage"))) if part),
        "changes": _bullets(changes, "No changes were made."),
        "verification": _bullets(checks, "Nothing was checked."),
        "rollback": _bullets(rollbacks, "Nothing to roll back: no change was made."),
        "summary": "\n\n".join(summary_lines),
    }

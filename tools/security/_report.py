"""The security report: the audit review, quarantines, the permission matrix, the egress
allow-list and a scan of every registered model, as one Markdown file under
``<workspace>/reports/security/``, written atomically.

Every cell is a name, a code, a count or a kind; a name that came from a model (a tool it
proposed) is cut short and has its table characters escaped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mlops_supervisor.policies import InvalidInputError
from mlops_supervisor.tools.core import ToolContext, ToolRegistry, context_egress, using_store, write_atomic
from mlops_supervisor.tools.security._audit_review import review_audit_log
from mlops_supervisor.tools.security._matrix import permission_rows
from mlops_supervisor.tools.security._scan import scan_target

__all__ = ["write_security_report"]


def _cell(value: Any) -> str:
    text = ", ".join(map(str, value)) if isinstance(value, list | tuple) else "" if value is None else str(value)
    text = " ".join(text.split())
    text = text if len(text) <= 64 else text[:61] + "..."
    return text.replace("|", "\\|").replace("<", "&lt;")


def _table(rows: Sequence[Mapping[str, Any]], columns: Iterable[str], empty: str) -> str:
    columns = list(columns)
    if not rows:
        return empty
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def _yes(flag: bool) -> str:
    return "yes" if flag else ""


def _model_scans(ctx: ToolContext) -> list[dict[str, Any]]:
    """The scan of every registered model (none while the workspace has no MLflow store)."""
    if ctx.tracking_uri is None and not (Path(ctx.workspace) / "mlflow.db").exists():
        return []
    with using_store(ctx.store_uri) as client:
        names = sorted(m.name for m in client.search_registered_models())
    scans = []
    for name in names:
        try:
            found = scan_target(ctx, model=name)
        except InvalidInputError:  # removed between the listing and the scan
            continue
        scans.append(
            {
                "model": name,
                "verdict": found["verdict"],
                "injection": found["injection"]["count"],
                "kinds": found["injection"]["kinds"],
                "secrets": found["secrets"]["count"],
                "personal_data": found["personal_data"]["count"],
            }
        )
    return scans


def _path(ctx: ToolContext) -> Path:
    stamp = ctx.clock().strftime("%Y%m%dT%H%M%SZ")
    folder = Path(ctx.workspace) / "reports" / "security"
    path, n = folder / f"security-report-{stamp}.md", 2
    while path.exists():
        path, n = folder / f"security-report-{stamp}-{n}.md", n + 1
    return path


def write_security_report(
    ctx: ToolContext, registry: ToolRegistry, specialists: Mapping[str, Iterable[str]]
) -> dict[str, Any]:
    """Write the report; its path (relative to the workspace) and the summary it opens with."""
    review = review_audit_log(ctx.audit, limit=200)
    rows = permission_rows(registry, ctx.policy, specialists)
    models = _model_scans(ctx)
    egress = context_egress(ctx)
    anomalies = [a for a in review["anomalies"] if a["kind"] != "quarantine"]
    quarantines = [a for a in review["anomalies"] if a["kind"] == "quarantine"]
    flagged = [m for m in models if m["verdict"] == "injection" or m["secrets"] or m["personal_data"]]
    summary = {
        "audit_intact": review["intact"],
        "audit_lines": review["lines"],
        "anomalies": review["counts"],
        "quarantines": review["counts"].get("quarantine", 0),
        "models_scanned": len(models),
        "models_flagged": [m["model"] for m in flagged],
        "mutating_tools": sorted({r["tool"] for r in rows if r["mutates"]}),
        "held_for_approval": sorted(ctx.policy.approval.required_for),
        "denied_tools": sorted(ctx.policy.tools.denied),
        "egress_allow_list": list(egress),
    }
    policy = ctx.policy
    text = "\n\n".join(
        [
            f"# Security report\n\nWorkspace `{ctx.workspace}`, {ctx.clock().isoformat(timespec='seconds')}. "
            f"Policy {policy.source} (sha256 {policy.digest[:12]}).",
            "## Summary\n\n"
            + "\n".join(
                [
                    f"- {review['summary']}",
                    f"- {len(quarantines)} tool output(s) quarantined by the injection guard",
                    f"- {len(models)} registered model(s) scanned, {len(flagged)} with findings"
                    + (f": {', '.join(m['model'] for m in flagged)}" if flagged else ""),
                    f"- held for approval: {', '.join(summary['held_for_approval']) or 'nothing'}; "
                    f"denied to everyone: {', '.join(summary['denied_tools']) or 'nothing'}",
                    f"- egress allow-list: {', '.join(egress)}",
                ]
            ),
            "## Audit anomalies\n\n"
            + _table(
                anomalies,
                ("kind", "seq", "thread_id", "agent", "action", "reason_code", "count", "line"),
                "None: no refusal streaks, self-approvals, allow-list probes, denied tools or signature failures.",
            ),
            "## Quarantined tool outputs\n\n"
            + _table(quarantines, ("seq", "thread_id", "agent", "tool", "kinds"), "None."),
            "## Registered models\n\nDescriptions and tags of each model, its versions and their training runs.\n\n"
            + _table(
                models,
                ("model", "verdict", "injection", "kinds", "secrets", "personal_data"),
                "No registered model in this workspace.",
            ),
            "## Permission matrix\n\n"
            + _table(
                [
                    {
                        **r,
                        **{k: _yes(r[k]) for k in ("mutates", "gate", "held_for_approval", "denied")},
                        "available": "yes" if r["available"] else "not yet",
                    }
                    for r in rows
                ],
                ("agent", "tool", "mutates", "gate", "held_for_approval", "denied", "available"),
                "No tools.",
            ),
            "## Egress allow-list\n\nEvery HTTP client of this process reaches only these hosts; anything else "
            "is refused before a connection opens (`policies/egress.py`).\n\n"
            + "\n".join(f"- `{host}`" for host in egress),
        ]
    )
    path = _path(ctx)
    write_atomic(path, text + "\n")
    return {"path": path.relative_to(Path(ctx.workspace)).as_posix(), "summary": summary}

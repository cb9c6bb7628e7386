"""Anomalies in the audit log, read from its records: what a security reviewer looks for first.

Each anomaly names its kind, where it is (sequence number, thread, agent, tool) and the
reason code, never a message or an argument: those can quote untrusted text.

- ``chain_broken``: the hash chain does not verify (``verify_audit_log``);
- ``refusal_streak``: ``streak`` or more denials in a row on one thread (a model pushing at a gate);
- ``self_approval``: an approval attempted by the requester, or refused as one;
- ``allow_list_probe``: an agent proposing a tool outside its allow-list (a sign of injection);
- ``denied_tool``: a call to a tool the policy denies to everyone;
- ``signature_failure``: an unsigned held request, a bad signature, an approver not listed, a
  mismatched binding;
- ``secret_in_arguments``: a call refused because its arguments held a secret (possible exfiltration);
- ``quarantine``: a tool output the injection guard kept from the model.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from mlops_supervisor.policies import AuditStore

__all__ = ["ANOMALY_KINDS", "review_audit_log"]

ANOMALY_KINDS = (
    "chain_broken",
    "refusal_streak",
    "self_approval",
    "allow_list_probe",
    "denied_tool",
    "signature_failure",
    "secret_in_arguments",
    "quarantine",
)
_SIGNATURE_CODES = frozenset(
    {"signature_invalid", "request_not_signed", "approver_not_listed", "approval_binding_mismatch"}
)
_BY_CODE = {
    "self_approval": "self_approval",
    "not_in_allow_list": "allow_list_probe",
    "tool_denied_by_policy": "denied_tool",
    "secret_in_arguments": "secret_in_arguments",
    **{code: "signature_failure" for code in _SIGNATURE_CODES},
}
_FIELDS = ("seq", "thread_id", "agent", "action", "tool", "reason_code", "approver", "requester")


def _where(record: Mapping[str, Any]) -> dict[str, Any]:
    return {k: record[k] for k in _FIELDS if record.get(k) is not None}


def _record_anomalies(records: Iterable[Mapping[str, Any]], streak: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    runs: dict[str, list[Mapping[str, Any]]] = {}  # per thread, the denials in a row so far

    def close(thread: str) -> None:
        run = runs.pop(thread, [])
        if len(run) >= streak:
            found.append(
                {
                    "kind": "refusal_streak",
                    "thread_id": thread,
                    "count": len(run),
                    "first_seq": run[0].get("seq"),
                    "last_seq": run[-1].get("seq"),
                    "actions": sorted({str(r.get("action")) for r in run}),
                }
            )

    for record in records:
        event, code = record.get("event"), record.get("reason_code")
        thread = str(record.get("thread_id") or "")
        if event == "quarantine":
            found.append({"kind": "quarantine", **_where(record), "kinds": list(record.get("kinds", []))})
            continue
        if (
            event in {"approval", "approval_refused"}
            and record.get("approver")
            and (record.get("approver") == record.get("requester"))
        ):
            found.append({"kind": "self_approval", **_where(record)})
        elif event in {"decision", "approval", "approval_refused"} and code in _BY_CODE:
            found.append({"kind": _BY_CODE[str(code)], **_where(record)})
        if event == "decision":
            if record.get("decision") == "deny":
                runs.setdefault(thread, []).append(record)
            else:
                close(thread)
        elif event in {"finish", "request"}:
            close(thread)
    for thread in list(runs):
        close(thread)
    return found


def review_audit_log(audit: AuditStore, *, streak: int = 3, limit: int = 100) -> dict[str, Any]:
    """The chain's state and every anomaly (the first ``limit`` listed), with counts by kind."""
    check = audit.verify()
    anomalies = _record_anomalies(audit.records(), streak)
    if not check.ok:
        anomalies.insert(0, {"kind": "chain_broken", "line": check.bad_line, "problem": check.problem})
    counts = Counter(a["kind"] for a in anomalies)
    summary = f"audit chain {'intact' if check.ok else f'BROKEN at line {check.bad_line}'} ({check.lines} lines); " + (
        ", ".join(f"{counts[k]} {k.replace('_', ' ')}" for k in ANOMALY_KINDS if counts[k])
        if anomalies
        else "no anomalies"
    )
    return {
        "intact": check.ok,
        "lines": check.lines,
        "bad_line": check.bad_line,
        "counts": {k: counts[k] for k in ANOMALY_KINDS if counts[k]},
        "anomalies": anomalies[:limit],
        **({"not_listed": len(anomalies) - limit} if len(anomalies) > limit else {}),
        "summary": summary,
    }

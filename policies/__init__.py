"""Policy model, decisions, approvals, redaction and the audit chain.

This package imports nothing else of ours: its decisions are pure functions over
typed records, and its only I/O is the audit log.
"""

from mlops_supervisor.policies._audit_postgres import PostgresAuditLog
from mlops_supervisor.policies.approvals import (
    ApprovalRequest,
    ApprovalResponse,
    approval_statement,
    check_answer_signature,
    check_approver,
    check_signed_request,
    evaluate_approval,
    new_approval_request,
    request_statement,
)
from mlops_supervisor.policies.audit import AuditLog, AuditStore, AuditVerification, verify_audit_log
from mlops_supervisor.policies.decisions import Decision, DecisionKind, ReasonCode
from mlops_supervisor.policies.engine import ProposedCall, approval_binding, decide_tool_call
from mlops_supervisor.policies.errors import (
    GateRefusedError,
    InvalidInputError,
    MlopsSupervisorError,
    ModelRequestsNotAllowedError,
    PolicyFileError,
    RunError,
    ScriptExhaustedError,
    ToolNotAvailableError,
    UnknownThreadError,
    UsageError,
    WorkspaceError,
)
from mlops_supervisor.policies.floors import policy_widenings
from mlops_supervisor.policies.identity import Signed, sign_statement, verify_statement
from mlops_supervisor.policies.policy import Policy, default_policy_text, load_policy
from mlops_supervisor.policies.redaction import Finding, PatternRedactor, Redactor, redact_value

__all__ = [
    "ApprovalRequest",
    "ApprovalResponse",
    "AuditLog",
    "AuditStore",
    "AuditVerification",
    "Decision",
    "DecisionKind",
    "Finding",
    "GateRefusedError",
    "InvalidInputError",
    "MlopsSupervisorError",
    "ModelRequestsNotAllowedError",
    "PatternRedactor",
    "Policy",
    "PolicyFileError",
    "PostgresAuditLog",
    "ProposedCall",
    "ReasonCode",
    "Redactor",
    "RunError",
    "ScriptExhaustedError",
    "Signed",
    "ToolNotAvailableError",
    "UnknownThreadError",
    "UsageError",
    "WorkspaceError",
    "approval_binding",
    "approval_statement",
    "check_answer_signature",
    "check_approver",
    "check_signed_request",
    "decide_tool_call",
    "default_policy_text",
    "evaluate_approval",
    "load_policy",
    "new_approval_request",
    "policy_widenings",
    "redact_value",
    "request_statement",
    "sign_statement",
    "verify_audit_log",
    "verify_statement",
]

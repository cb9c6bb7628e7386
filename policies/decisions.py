"""Policy decisions as values: allow, deny with a reason code, or needs-approval."""

from __future__ import annotations

import enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

__all__ = ["Decision", "DecisionKind", "ReasonCode"]

DecisionKind = Literal["allow", "deny", "needs_approval"]


class ReasonCode(enum.StrEnum):
    """Why a call was denied or held; stable strings that reports and tests rely on."""

    ALLOWED = "allowed"
    NOT_IN_ALLOW_LIST = "not_in_allow_list"
    UNKNOWN_TOOL = "unknown_tool"
    TOOL_DENIED_BY_POLICY = "tool_denied_by_policy"
    INVALID_ARGUMENTS = "invalid_arguments"
    APPROVAL_REQUIRED = "approval_required"
    APPROVER_NOT_LISTED = "approver_not_listed"
    SELF_APPROVAL = "self_approval"
    APPROVAL_BINDING_MISMATCH = "approval_binding_mismatch"
    APPROVAL_EXPIRED = "approval_expired"
    APPROVAL_REJECTED = "approval_rejected"
    STEP_BUDGET_EXHAUSTED = "step_budget_exhausted"
    TRAINING_RUN_INCOMPLETE = "training_run_incomplete"
    EVALUATION_MISSING = "evaluation_missing"
    EVALUATION_FAILED = "evaluation_failed"
    EVALUATION_STALE = "evaluation_stale"
    EVIDENCE_INCONSISTENT = "evidence_inconsistent"
    CANARY_NOT_PASSED = "canary_not_passed"
    APPROVAL_MISSING = "approval_missing"
    APPROVAL_EVIDENCE_CHANGED = "approval_evidence_changed"
    ALIAS_NOT_GOVERNED = "alias_not_governed"
    CONCURRENT_CHANGE = "concurrent_change"
    EVIDENCE_UNAVAILABLE = "evidence_unavailable"
    REQUEST_NOT_SIGNED = "request_not_signed"
    SIGNATURE_INVALID = "signature_invalid"
    EVALUATION_FLOORS_WEAKER = "evaluation_floors_weaker"
    CANARY_BELOW_POLICY = "canary_below_policy"
    CANARY_WINDOW_OPEN = "canary_window_open"
    SECRET_IN_ARGUMENTS = "secret_in_arguments"


class Decision(BaseModel):
    """A frozen verdict on one proposed action.

    Build it with :meth:`allow`, :meth:`deny` or :meth:`needs_approval`; ``message``
    always says what happened and, for a denial, what would satisfy the gate.
    """

    model_config = ConfigDict(frozen=True)

    kind: DecisionKind
    action: str
    reason_code: ReasonCode
    message: str
    binding: str | None = None

    @classmethod
    def allow(cls, action: str, message: str = "allowed by policy") -> Decision:
        """An allowed action."""
        return cls(kind="allow", action=action, reason_code=ReasonCode.ALLOWED, message=message)

    @classmethod
    def deny(cls, action: str, reason_code: ReasonCode, message: str) -> Decision:
        """A denied action; ``message`` must say what would satisfy the gate."""
        return cls(kind="deny", action=action, reason_code=reason_code, message=message)

    @classmethod
    def needs_approval(cls, action: str, binding: str, message: str) -> Decision:
        """An action held until an approver signs off on exactly this ``binding``."""
        return cls(
            kind="needs_approval",
            action=action,
            reason_code=ReasonCode.APPROVAL_REQUIRED,
            message=message,
            binding=binding,
        )

    @property
    def allowed(self) -> bool:
        """True only for an allow decision."""
        return self.kind == "allow"

    def as_record(self) -> dict[str, Any]:
        """Plain data for audit lines, checkpoints and JSON output."""
        return {
            "action": self.action,
            "decision": self.kind,
            "reason_code": self.reason_code.value,
            "message": self.message,
            **({"binding": self.binding} if self.binding else {}),
        }

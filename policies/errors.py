"""The one exception hierarchy of mlops-supervisor.

It lives in ``policies`` because that package is the bottom layer: every other
layer may import it, and it imports nothing of ours.

::

    MlopsSupervisorError
    ├── UsageError              bad input or bad configuration: exit 2
    │   ├── PolicyFileError     a policy file that is missing, malformed or invalid
    │   ├── InvalidInputError   a spec or data set a tool cannot accept (carries a reason code)
    │   ├── UnknownThreadError  a thread id the workspace does not hold
    │   └── WorkspaceError      a workspace that cannot be created or written
    ├── GateRefusedError        a tool re-ran its gate and the gate said no: exit 3 (carries the Decision)
    └── RunError                something broke while running: exit 1
        ├── ModelRequestsNotAllowedError   a real LLM request while the switch is off
        ├── ScriptExhaustedError           a scripted model asked for more than its script holds
        └── ToolNotAvailableError          a declared tool whose implementation has not landed

A gate refusal is a decision, not an exception: see ``Decision``. The one exception is
``GateRefusedError``: a tool body that re-runs its gate (so a notebook cannot skip it)
raises it to carry the ``Decision`` out; the graph turns it back into a deny decision.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError

__all__ = [
    "GateRefusedError",
    "InvalidInputError",
    "MlopsSupervisorError",
    "ModelRequestsNotAllowedError",
    "PolicyFileError",
    "RunError",
    "ScriptExhaustedError",
    "ToolNotAvailableError",
    "UnknownThreadError",
    "UsageError",
    "WorkspaceError",
    "describe_validation_error",
]


def describe_validation_error(exc: ValidationError, *, show_input: bool = True) -> str:
    """Every problem of a pydantic ``ValidationError`` on one line: ``a.b: message (got value)``.

    ``show_input`` adds the offending value (not for missing fields or whole mappings); leave it
    off where values may be large or sensitive.
    """
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg'].removeprefix('Value error, ')}"
        + (
            f" (got {err['input']!r})"
            if show_input and err["type"] != "missing" and not isinstance(err["input"], dict)
            else ""
        )
        for err in exc.errors()
    )


class MlopsSupervisorError(Exception):
    """Base of every error this package raises on purpose."""


class UsageError(MlopsSupervisorError):
    """Bad input or bad configuration; the message names the value and what is allowed."""


class PolicyFileError(UsageError):
    """A policy file that is missing, not YAML, or does not validate."""


class InvalidInputError(UsageError):
    """A spec or data set a tool cannot accept; ``reason_code`` names the problem for reports."""

    def __init__(self, reason_code: str, message: str) -> None:
        super().__init__(message)
        self.reason_code = reason_code


class UnknownThreadError(UsageError):
    """A thread id that the workspace does not hold."""


class WorkspaceError(UsageError):
    """A workspace directory that cannot be created or written."""


class GateRefusedError(MlopsSupervisorError):
    """A gate, re-run inside a tool, refused; ``decision`` is the deny ``Decision`` (a value with a reason code)."""

    def __init__(self, decision: object) -> None:
        super().__init__(getattr(decision, "message", str(decision)))
        self.decision = decision


class RunError(MlopsSupervisorError):
    """Something failed while running a request."""


class ModelRequestsNotAllowedError(RunError):
    """A request to a real LLM was attempted while model requests are switched off."""


class ScriptExhaustedError(RunError):
    """A scripted chat model was asked for a response its script does not hold."""


class ToolNotAvailableError(RunError):
    """A declared tool whose implementation has not landed yet; it did nothing."""

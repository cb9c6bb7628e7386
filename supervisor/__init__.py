"""mlops-supervisor: a governed LLM multi-agent supervisor for the ML lifecycle.

Heavy modules load on first use, so ``mlops-supervisor --help`` and ``audit`` start fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlops_supervisor.policies.errors import (
    MlopsSupervisorError,
    RunError,
    UsageError,
)

if TYPE_CHECKING:
    from mlops_supervisor._api import Supervisor
    from mlops_supervisor._results import Report, RunResult, WorkspaceStatus
    from mlops_supervisor._settings import Settings

__all__ = [
    "MlopsSupervisorError",
    "Report",
    "RunError",
    "RunResult",
    "Settings",
    "Supervisor",
    "UsageError",
    "WorkspaceStatus",
]

_LAZY = {
    "Supervisor": "mlops_supervisor._api",
    "Report": "mlops_supervisor._results",
    "RunResult": "mlops_supervisor._results",
    "WorkspaceStatus": "mlops_supervisor._results",
    "Settings": "mlops_supervisor._settings",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mlops_supervisor' has no attribute {name!r}")

"""Alerts and the runbook each one carries."""

from __future__ import annotations

__all__ = ["runbook"]


def runbook(model: str, what: str) -> dict[str, str]:
    """How to verify, mitigate and roll back an alert about ``what`` on ``model``; it travels with the alert."""
    return {
        "verify": f'mlops-supervisor ask "status {model}" and open the latest PNG under reports/{model}/ ({what})',
        "mitigate": "find the cause (upstream data change, a bad deploy); retrain on recent data with "
        "`mlops-supervisor run SPEC` and take the new version through evaluation and a canary",
        "rollback": f"mlops-supervisor rollback {model}",
    }

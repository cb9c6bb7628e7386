"""The MLflow model registry and the evidence readers the gates stand on.

``_evidence`` reads what the gates take (training lineage, a version's evaluation checked
against its report artifact, approvals from the audit chain, the version an alias points at);
``_tools`` holds the registry agent's tools, the promotion the deployment agent shares, and the
champion check (``champion_allowed``) and change (``set_champion``) that promotion and a first
production deploy both go through.
"""

from mlops_supervisor.tools.registry._evidence import (
    CHAMPION_ACTION,
    aliased_version,
    approval_record,
    evaluation_report,
    model_version,
    report_digest,
    trained_from,
    training_evidence,
    training_spec,
    version_evidence,
)
from mlops_supervisor.tools.registry._tools import champion_allowed, promotion_tool, registry_tools, set_champion

__all__ = [
    "CHAMPION_ACTION",
    "aliased_version",
    "approval_record",
    "champion_allowed",
    "evaluation_report",
    "model_version",
    "promotion_tool",
    "registry_tools",
    "report_digest",
    "set_champion",
    "trained_from",
    "training_evidence",
    "training_spec",
    "version_evidence",
]

"""The observability agent: read-only views of metrics, drift and the audit trail."""

from mlops_supervisor.agents._spec import AgentSpec

SPEC = AgentSpec(
    name="observability",
    role="reports latency, errors, drift, live quality and bias, and recent activity; routes alerts to the "
    "model's owner; read-only",
    tools=("audit_summary", "service_metrics", "drift_report", "quality_report", "monitor_model"),
    duties=(
        "report service health, drift, and live quality and bias with the thresholds they are judged by",
        "raise alerts with a runbook and the exact rollback command",
        "propose a remedy (rollback, retrain) for a breach; never act on it",
    ),
    never=("deploy models", "retrain models", "change anything"),
)

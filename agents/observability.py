"""The observability agent: read-only views of metrics, drift and the audit trail."""

from mlops_supervisor.agents._spec import AgentSpec

SPEC = AgentSpec(
    name="observability",
    role="reports latency, errors, drift and recent activity; read-only",
    tools=("audit_summary", "service_metrics", "drift_report"),
    duties=(
        "report service health and drift with the thresholds they are judged by",
        "raise alerts with a runbook and the exact rollback command",
    ),
    never=("deploy models", "retrain models", "change anything"),
)

"""Monitoring: service metrics per version, data and prediction drift, alerts with runbooks, plots.

``_drift`` computes per-feature drift (PSI with KS or chi-square); ``_quality`` joins predictions
with the labels that came back later and judges live quality and bias per version; ``_alerts`` holds the
runbook every alert carries; ``_alerting`` routes alerts to their owner and delivers them (retries, dedup,
resolve, the outbox); ``_rules`` renders Prometheus rules and an Alertmanager route for the scaled-out form;
``_plots`` draws latency and drift; ``_tools`` holds the observability agent's read-only tools.
"""

from mlops_supervisor.tools.monitoring._alerting import (
    Alert,
    Route,
    alert_from_check,
    deliver_alerts,
    outbox_entries,
    outbox_path,
    resolve_route,
)
from mlops_supervisor.tools.monitoring._alerts import runbook
from mlops_supervisor.tools.monitoring._drift import drift_table, psi
from mlops_supervisor.tools.monitoring._quality import (
    labelled_predictions,
    live_fairness,
    live_metrics,
    metric_decay,
    quality_report,
)
from mlops_supervisor.tools.monitoring._rules import (
    alertmanager_config,
    prometheus_rules,
    render_alert_files,
    scrape_config,
    write_alert_files,
)
from mlops_supervisor.tools.monitoring._tools import observability_tools

__all__ = [
    "Alert",
    "Route",
    "alert_from_check",
    "alertmanager_config",
    "deliver_alerts",
    "drift_table",
    "labelled_predictions",
    "live_fairness",
    "live_metrics",
    "metric_decay",
    "observability_tools",
    "outbox_entries",
    "outbox_path",
    "prometheus_rules",
    "psi",
    "quality_report",
    "render_alert_files",
    "resolve_route",
    "runbook",
    "scrape_config",
    "write_alert_files",
]

"""Monitoring: service metrics per version, data and prediction drift, alerts with runbooks, plots.

``_drift`` computes per-feature drift (PSI with KS or chi-square); ``_alerts`` holds the
runbook every alert carries; ``_plots`` draws latency and drift; ``_tools`` holds the
observability agent's read-only tools.
"""

from mlops_supervisor.tools.monitoring._alerts import runbook
from mlops_supervisor.tools.monitoring._drift import drift_table, psi
from mlops_supervisor.tools.monitoring._tools import observability_tools

__all__ = ["drift_table", "observability_tools", "psi", "runbook"]

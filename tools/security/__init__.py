"""Security: the security agent's read-only tools.

``_scan`` scans text, a workspace file or a registered model's descriptions and tags for
prompt injection (``policies.injection``), secrets and personal data (the workspace's
redactor), and reports kinds and offsets, never the text. ``_audit_review`` reads the audit
log for anomalies (refusals in a row, self-approval attempts, denied tools, signature
failures, quarantines, a broken chain). ``_matrix`` lays out who may call what: agent x tool x
mutates x gate x approval x denied. ``_report`` writes all of it as one Markdown report under
``<workspace>/reports/security/``. ``_tools`` holds the tools.
"""

from mlops_supervisor.tools.security._audit_review import review_audit_log
from mlops_supervisor.tools.security._matrix import permission_rows
from mlops_supervisor.tools.security._scan import scan_target
from mlops_supervisor.tools.security._tools import security_tools

__all__ = ["permission_rows", "review_audit_log", "scan_target", "security_tools"]

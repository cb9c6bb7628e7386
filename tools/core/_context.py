"""What a tool body may use: the workspace, audit log, policy, redactor, stores, limits and progress."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from mlops_supervisor.policies import AuditStore, Policy, Redactor
from mlops_supervisor.policies.policy import PiiRules
from mlops_supervisor.tools.core._store import default_tracking_uri

__all__ = ["ProgressFactory", "ToolContext", "no_progress"]

ProgressFactory = Callable[[str, int], AbstractContextManager[Callable[[str], None]]]
"""``progress(description, total)`` opens a task; the callable it yields advances it by one step."""


@contextmanager
def no_progress(description: str, total: int) -> Iterator[Callable[[str], None]]:
    """A progress task that shows nothing (library use, ``--json``)."""
    yield lambda note: None


def presidio_detector(rules: PiiRules) -> Redactor:
    """The default PII detector for data: Presidio with the policy's entities and score floor."""
    from mlops_supervisor.policies.pii import PresidioRedactor

    return PresidioRedactor(entities=rules.entities, min_score=rules.min_score)


@dataclass(frozen=True)
class ToolContext:
    """What tool bodies may use: the workspace, audit log, policy, redactor, stores and limits."""

    workspace: Path
    audit: AuditStore
    policy: Policy
    redactor: Redactor
    tracking_uri: str | None = None
    """MLflow tracking and registry URI; ``None`` is the workspace's own SQLite store."""
    max_dataset_mb: float = 1024.0
    n_jobs: int | None = None
    pii_hash_key: str | None = None
    pii_detector: Callable[[PiiRules], Redactor] = presidio_detector
    progress: ProgressFactory = no_progress
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    """The time gates compare expiry and evidence age against (injectable for tests)."""
    egress_allow: tuple[str, ...] = ()
    """Destinations the operator added to the egress allow-list (``MLOPS_EGRESS_ALLOW``): alert webhooks."""
    slack_webhook_url: str | None = None
    """The Slack incoming-webhook URL that ``slack:#CHANNEL`` alert routes post to (a secret)."""
    kubeconfig: Path | None = None
    """The kubeconfig a Kubernetes serving backend loads; ``None``: in-cluster config (or the client's default)."""
    kube_context: str | None = None
    """The kubeconfig context to use; ``None``: the kubeconfig's current context."""
    prometheus_url: str | None = None
    """The Prometheus HTTP API the Kubernetes backends' canary analysis reads; its host is on the egress list."""

    @property
    def store_uri(self) -> str:
        """The MLflow tracking and registry URI the tools use: the one given, else the workspace's SQLite store."""
        return self.tracking_uri or default_tracking_uri(self.workspace)

"""The serving backend protocol: what the deployment and observability tools ask of a backend.

``LocalBackend`` (``_local.py``) implements it with processes on loopback; a Kubernetes
backend implements the same calls against a cluster.

The calls name an *endpoint*: a model's production endpoint is named after the model, its
staging endpoint ``staging_endpoint(model)`` (``MODEL@staging``). Each endpoint has its own
router, URL and state, so a staging deploy never takes a share of production traffic. ``@``
cannot occur in a model name, so no model's production endpoint is another's staging one.
"""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["MAX_BODY", "MODEL_URI_VAR", "STAGING_SUFFIX", "TRACKING_URI_VAR", "ServingBackend", "staging_endpoint"]

MAX_BODY = 64 * 1024 * 1024
"""The largest request body an endpoint accepts (router and model server alike); larger ones get 413."""

STAGING_SUFFIX = "@staging"

MODEL_URI_VAR = "MLOPS_SERVING_MODEL_URI"
TRACKING_URI_VAR = "MLOPS_SERVING_TRACKING_URI"
"""The environment variables a local model server reads its model and tracking URIs from (never its argv)."""


def staging_endpoint(model: str) -> str:
    """The name of ``model``'s staging endpoint, beside (never inside) its production endpoint ``model``."""
    return f"{model}{STAGING_SUFFIX}"


class ServingBackend(Protocol):
    """What a serving backend offers the deployment tools."""

    def deploy(
        self, model: str, version: int, model_uri: str, *, weight: int, evidence_digest: str | None = None
    ) -> dict[str, Any]:
        """Start ``version`` (if it is not running) and give it ``weight`` percent of traffic.

        ``evidence_digest`` is the digest of the evidence the gate that allowed it read; a backend that
        labels what it runs (Kubernetes) records it there.
        """
        ...

    def set_weights(self, model: str, weights: dict[int, int]) -> dict[str, Any]:
        """Split traffic between running versions; weights sum to 100."""
        ...

    def status(self, model: str) -> dict[str, Any]:
        """Versions, weights, processes and health as they are now."""
        ...

    def rollback(self, model: str, to_version: int) -> dict[str, Any]:
        """All traffic to ``to_version``; every other version stopped."""
        ...

    def stop(self, model: str) -> dict[str, Any]:
        """Stop every process of ``model`` and forget its state."""
        ...

    def read_metrics(self, model: str) -> dict[str, dict[str, Any]]:
        """Per version, cumulative requests, errors (status >= 500) and latency buckets (``read_window``'s shape).

        Empty when nothing serves ``model`` yet; a ``RunError`` when the metrics cannot be read, never
        an empty answer in place of evidence that exists.
        """
        ...

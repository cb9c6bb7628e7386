"""The router's Prometheus metrics, read back per version for canary analysis and service metrics."""

from __future__ import annotations

import re
from typing import Any

from mlops_supervisor.policies.egress import LOOPBACK
from mlops_supervisor.tools.core import egress_client
from mlops_supervisor.tools.serving._backend import ServingBackend

__all__ = ["read_router", "read_window"]


_SAMPLE = re.compile(r"^(mlops_requests_total|mlops_request_latency_seconds_bucket)\{([^}]*)\} ([0-9.e+-]+)$")


def read_window(metrics_text: str) -> dict[str, dict[str, Any]]:
    """Per version: total requests, errors (status >= 500) and cumulative latency buckets, from /metrics."""
    out: dict[str, dict[str, Any]] = {}
    for line in metrics_text.splitlines():
        match = _SAMPLE.match(line)
        if not match:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match[2]))
        entry = out.setdefault(labels["version"], {"requests": 0.0, "errors": 0.0, "buckets": {}})
        value = float(match[3])
        if match[1] == "mlops_requests_total":
            entry["requests"] += value
            if labels["status"].startswith("5"):
                entry["errors"] += value
        else:
            entry["buckets"][labels["le"]] = value
    return out


def read_router(backend: ServingBackend, model: str) -> dict[str, dict[str, Any]]:
    """``read_window`` of ``model``'s router as it answers now; empty when the router is not running."""
    router = backend.status(model)["router"]
    if not router or not router["alive"]:
        return {}
    # the local backend's routers listen on loopback; a URL from a tampered state file goes nowhere else
    with egress_client(LOOPBACK) as client:
        return read_window(client.get(f"{router['url']}/metrics").text)

"""The routers' metrics read back from a Prometheus HTTP API, per version, for canary analysis.

``PrometheusMetrics(url)(model)`` answers exactly what ``read_window`` makes of one router's
``/metrics`` (``{version: {"requests", "errors", "buckets": {le: count}}}``, cumulative counters),
summed over every router replica Prometheus scrapes for ``model``: the canary analysis
(``_canary.window_delta`` and ``judge``) is the same code whichever backend serves. The routers'
series carry no model label of their own; the scrape configuration gives them one (``model`` by
default: a static label, or a relabelling of the router pods' ``model`` label).

Every failure to read (the server down or slow, an HTTP error, a body that is not the query
API's JSON, an answer with ``status: error``) is a ``RunError`` that names the URL and the query:
a canary gate that cannot read its evidence must not pass.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

import httpx

from mlops_supervisor.policies import RunError, UsageError
from mlops_supervisor.policies.egress import LOOPBACK
from mlops_supervisor.tools.core import egress_client, server_of

__all__ = ["PrometheusMetrics", "check_prometheus_url"]

_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def check_prometheus_url(url: str) -> str:
    """``url`` unchanged when it is an http(s) URL without a user or password in it; else ``UsageError`` naming
    only its scheme, host and port (messages, the egress list and reports show the URL; a token must not ride in it)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(
            f"MLOPS_PROMETHEUS_URL must be an http(s) URL of Prometheus' HTTP API (http://HOST:9090); "
            f"got scheme {parts.scheme or '(none)'!r}"
        )
    if "@" in parts.netloc:
        raise UsageError(
            f"MLOPS_PROMETHEUS_URL for {server_of(url)} has credentials in it; give the URL without them "
            "(put Prometheus behind a proxy on the cluster network that needs none)"
        )
    return url


class PrometheusMetrics:
    """Per-version request counts, errors and latency buckets of a model's routers, from Prometheus' query API."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 10.0,
        model_label: str = "model",
        label_value: Callable[[str], str] = str,
        allowed: Iterable[str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """``url`` is the HTTP API's base (``http://prometheus:9090``); its host is on the egress list it uses.

        ``label_value`` turns an endpoint's name into the ``model_label`` value its series carry (the
        Kubernetes backend labels router pods with a DNS-safe form of the name). ``allowed`` is the rest
        of the egress allow-list (default: loopback); ``transport`` is for tests.
        An unreachable or slow server fails after ``timeout`` seconds.
        """
        if not _LABEL.match(model_label):
            raise RunError(f"Prometheus label name {model_label!r} is not a valid label name; check the setting")
        self.url = check_prometheus_url(url).rstrip("/")
        self.timeout = timeout
        self.model_label = model_label
        self.label_value = label_value
        # the configured Prometheus is reachable because it is configured; nothing else joins the list here
        self.allowed = tuple(dict.fromkeys([*(LOOPBACK if allowed is None else allowed), self.url]))
        self.transport = transport

    def queries(self, model: str) -> tuple[str, str]:
        """The two instant queries that read ``model``: requests by version and status, latency buckets by version."""
        selector = f"{{{self.model_label}={json.dumps(self.label_value(model))}}}"
        return (
            f"sum by (version, status) (mlops_requests_total{selector})",
            f"sum by (version, le) (mlops_request_latency_seconds_bucket{selector})",
        )

    def __call__(self, model: str) -> dict[str, dict[str, Any]]:
        """``read_window``'s shape for ``model`` as Prometheus has it now; empty when it has no series yet."""
        requests_query, buckets_query = self.queries(model)
        out: dict[str, dict[str, Any]] = {}
        with egress_client(self.allowed, transport=self.transport, timeout=self.timeout) as client:
            for sample, value in self._query(client, requests_query):
                entry = out.setdefault(sample["version"], {"requests": 0.0, "errors": 0.0, "buckets": {}})
                entry["requests"] += value
                if sample.get("status", "").startswith("5"):
                    entry["errors"] += value
            for sample, value in self._query(client, buckets_query):
                entry = out.setdefault(sample["version"], {"requests": 0.0, "errors": 0.0, "buckets": {}})
                entry["buckets"][sample["le"]] = value
        return out

    def _query(self, client: httpx.Client, query: str) -> list[tuple[dict[str, str], float]]:
        """The (labels, value) pairs of the instant ``query``; ``RunError`` naming URL and query on any failure."""
        endpoint = f"{self.url}/api/v1/query"
        where = f"Prometheus at {server_of(self.url)} (query {query!r})"
        try:
            response = client.get(endpoint, params={"query": query})
        except httpx.HTTPError as exc:
            raise RunError(
                f"{where} did not answer: {exc.__class__.__name__}: {exc}; check that Prometheus runs and the "
                "URL (MLOPS_PROMETHEUS_URL) is right"
            ) from exc
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code >= 400 or not isinstance(body, dict):
            detail = body.get("error") if isinstance(body, dict) else response.text[:200]
            raise RunError(
                f"{where} answered HTTP {response.status_code}: {detail!r}; check the URL (MLOPS_PROMETHEUS_URL) "
                "points at Prometheus' HTTP API"
            )
        if body.get("status") != "success":
            raise RunError(f"{where} answered {body.get('errorType', 'an error')}: {body.get('error', body)!r}")
        data = body.get("data")
        if not isinstance(data, dict) or data.get("resultType") != "vector" or not isinstance(data.get("result"), list):
            raise RunError(f"{where} answered something that is not an instant vector: {str(data)[:200]!r}")
        pairs: list[tuple[dict[str, str], float]] = []
        for item in data["result"]:
            try:
                labels, value = dict(item["metric"]), float(item["value"][1])
            except (KeyError, IndexError, TypeError, ValueError) as exc:
                raise RunError(f"{where} answered a sample that is not [time, value]: {str(item)[:200]!r}") from exc
            if "version" not in labels:
                continue  # a series without the router's version label is none of ours
            pairs.append((labels, value))
        return pairs

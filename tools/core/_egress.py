"""HTTP clients that reach only the egress allow-list (``policies.egress``).

Every HTTP request a tool makes goes through ``egress_client``: its transport checks each
request's URL against the allow-list before a connection is opened and refuses the rest with
``EgressDeniedError``, naming the URL and the hosts that are allowed. A URL read from a state
file, an MLflow tag or a tool's argument cannot send a request anywhere else.
"""

from __future__ import annotations

from collections.abc import Iterable

import httpx

from mlops_supervisor.policies.egress import LOOPBACK, allowed_destinations, check_egress
from mlops_supervisor.tools.core._context import ToolContext

__all__ = ["EgressTransport", "context_egress", "egress_client"]


class EgressTransport(httpx.BaseTransport):
    """A transport that refuses requests to hosts off ``allowed`` and hands the others to ``inner``."""

    def __init__(self, allowed: Iterable[str], inner: httpx.BaseTransport | None = None) -> None:
        self.allowed = tuple(allowed)
        self.inner = inner if inner is not None else httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        check_egress(str(request.url), self.allowed)
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def egress_client(
    allowed: Iterable[str] = LOOPBACK, *, transport: httpx.BaseTransport | None = None, timeout: float = 10.0
) -> httpx.Client:
    """An ``httpx.Client`` whose every request is checked against ``allowed`` (``transport``: for tests)."""
    # trust_env off: a proxy from the environment would be a destination nobody put on the list
    return httpx.Client(transport=EgressTransport(allowed, transport), timeout=timeout, trust_env=False)


def context_egress(ctx: ToolContext) -> tuple[str, ...]:
    """The destinations the tools bound to ``ctx`` may reach: loopback, the MLflow tracking server's host, the
    Prometheus HTTP API when one is configured (``MLOPS_PROMETHEUS_URL``) and what the operator added
    (``MLOPS_EGRESS_ALLOW``)."""
    configured = (ctx.prometheus_url,) if ctx.prometheus_url else ()
    return allowed_destinations(tracking_uri=ctx.store_uri, extra=(*configured, *ctx.egress_allow))

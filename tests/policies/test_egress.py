"""The egress allow-list: which destinations pass, which are refused, and what a refusal says."""

from __future__ import annotations

import httpx
import pytest

from mlops_supervisor.policies import UsageError
from mlops_supervisor.policies.egress import (
    LOOPBACK,
    EgressDeniedError,
    allowed_destinations,
    check_egress,
    egress_refusal,
)
from mlops_supervisor.tools.core import egress_client


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:49213/metrics",
        "http://localhost:8080/health",
        "http://[::1]:9000/",
        "http://127.0.0.2:5000/",  # all of 127.0.0.0/8 is loopback
        "https://mlflow.internal:5443/api/2.0/mlflow/runs/get",
        "https://api.llm.example/v1/chat/completions",
        "https://eu.k8s.example/api",
    ],
)
def test_destinations_on_the_list_pass(url: str) -> None:
    """Loopback, the tracking server, the LLM host and a wildcard sub-domain are reachable."""
    allowed = allowed_destinations(
        tracking_uri="https://mlflow.internal:5443",
        llm_base_url="https://api.llm.example/v1",
        extra=["*.k8s.example"],
    )
    assert egress_refusal(url, allowed) is None


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example/collect?d=1",
        "http://127.0.0.1@evil.example/",  # userinfo is not the host
        "http://mlflow.internal.evil.example/",
        "https://k8s.example/",  # the wildcard covers sub-domains only
        "http://0x7f000001/",  # no numeric tricks for loopback: not on the list is refused
        "file:///etc/passwd",
        "ftp://mlflow.internal/",
        "not a url",
    ],
)
def test_destinations_off_the_list_are_refused_with_url_and_list(url: str) -> None:
    """Anything else is refused; the message names the URL and the allowed hosts."""
    allowed = allowed_destinations(tracking_uri="https://mlflow.internal:5443", extra=["*.k8s.example"])
    with pytest.raises(EgressDeniedError) as caught:
        check_egress(url, allowed)
    assert isinstance(caught.value, UsageError)
    assert repr(url) in str(caught.value)
    assert "localhost, 127.0.0.1, ::1, mlflow.internal, *.k8s.example" in str(caught.value)


def test_a_port_entry_allows_that_port_only() -> None:
    """``host:port`` on the list allows that port and no other."""
    assert egress_refusal("http://models.internal:8443/v1", ["models.internal:8443"]) is None
    assert egress_refusal("http://models.internal:9000/v1", ["models.internal:8443"]) is not None


def test_a_sqlite_tracking_uri_adds_no_host() -> None:
    """The embedded store is a file: the list stays loopback only."""
    assert allowed_destinations(tracking_uri="sqlite:////tmp/ws/mlflow.db") == LOOPBACK


def test_the_tools_http_client_refuses_before_any_connection() -> None:
    """``egress_client`` hands an allowed request to its transport and refuses the rest before the transport sees it."""
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(200, text="mlops_requests_total 1")

    with egress_client(LOOPBACK, transport=httpx.MockTransport(handler)) as client:
        assert client.get("http://127.0.0.1:5000/metrics").text == "mlops_requests_total 1"
        with pytest.raises(
            EgressDeniedError, match=r"'http://attacker\.example/metrics'.*not on the egress allow-list"
        ):
            client.get("http://attacker.example/metrics")
    assert seen == ["http://127.0.0.1:5000/metrics"]

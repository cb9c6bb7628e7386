"""Canary evidence from a Prometheus HTTP API: the same shape as the router's own /metrics, and no pass without it."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from mlops_supervisor.policies import RunError
from mlops_supervisor.policies.egress import EgressDeniedError
from mlops_supervisor.testing import PrometheusServer
from mlops_supervisor.tools.serving import PrometheusMetrics, read_window

# What a router's /metrics says after some traffic: version 1 fine, version 2 with server errors.
ROUTER_METRICS = """\
# TYPE mlops_requests_total counter
mlops_requests_total{status="200",version="1"} 90.0
mlops_requests_total{status="200",version="2"} 7.0
mlops_requests_total{status="503",version="2"} 3.0
mlops_requests_total{status="400",version="2"} 2.0
# TYPE mlops_request_latency_seconds histogram
mlops_request_latency_seconds_bucket{le="0.01",version="1"} 80.0
mlops_request_latency_seconds_bucket{le="0.1",version="1"} 89.0
mlops_request_latency_seconds_bucket{le="+Inf",version="1"} 90.0
mlops_request_latency_seconds_count{version="1"} 90.0
mlops_request_latency_seconds_sum{version="1"} 0.7
mlops_request_latency_seconds_bucket{le="0.01",version="2"} 1.0
mlops_request_latency_seconds_bucket{le="0.1",version="2"} 10.0
mlops_request_latency_seconds_bucket{le="+Inf",version="2"} 12.0
mlops_request_latency_seconds_count{version="2"} 12.0
mlops_request_latency_seconds_sum{version="2"} 0.5
"""


class _Scripted(BaseHTTPRequestHandler):
    """Answers every GET with the server's scripted (status, content type, body); records the query strings."""

    def do_GET(self) -> None:
        status, kind, body = self.server.answer  # type: ignore[attr-defined]
        self.server.seen.append(self.path)  # type: ignore[attr-defined]
        data = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def scripted() -> Iterator[ThreadingHTTPServer]:
    """A loopback HTTP server answering what the test scripts in ``.answer``."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Scripted)
    server.answer = (200, "text/plain; version=0.0.4", ROUTER_METRICS)  # type: ignore[attr-defined]
    server.seen = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


def _url(server: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


def test_prometheus_answers_what_the_router_metrics_say_per_version(
    prometheus: PrometheusServer, scripted: ThreadingHTTPServer
) -> None:
    """Real Prometheus scraping a router's /metrics (labelled model=m): PrometheusMetrics equals read_window of it."""
    prometheus.scrape(f"127.0.0.1:{scripted.server_address[1]}", labels={"model": "m-prom"})
    prometheus.wait_for('mlops_request_latency_seconds_bucket{model="m-prom"}', lambda r: len(r) == 6)
    read = PrometheusMetrics(prometheus.url)
    assert read("m-prom") == read_window(ROUTER_METRICS)
    assert read("m-prom")["2"]["errors"] == 3.0 and read("m-prom")["2"]["requests"] == 12.0
    assert read("another-model") == {}  # nothing scraped for it: no evidence, no versions


@pytest.mark.parametrize(
    ("answer", "said"),
    [
        ((503, "text/plain", "overloaded"), "answered HTTP 503: 'overloaded'"),
        (
            (400, "application/json", json.dumps({"status": "error", "errorType": "bad_data", "error": "parse"})),
            "answered HTTP 400: 'parse'",
        ),
        ((200, "text/html", "<html>a login page</html>"), "answered HTTP 200"),
        (
            (200, "application/json", json.dumps({"status": "error", "errorType": "timeout", "error": "slow"})),
            "answered timeout: 'slow'",
        ),
        (
            (
                200,
                "application/json",
                json.dumps({"status": "success", "data": {"resultType": "matrix", "result": []}}),
            ),
            "not an instant vector",
        ),
        (
            (
                200,
                "application/json",
                json.dumps(
                    {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {"version": "1"}}]}}
                ),
            ),
            "not [time, value]",
        ),
    ],
)
def test_an_answer_that_is_not_evidence_is_an_error_naming_the_url_and_query(
    scripted: ThreadingHTTPServer, answer: tuple[int, str, str], said: str
) -> None:
    """HTTP errors, a non-JSON body, status error, a wrong result type or sample: RunError with URL and query."""
    scripted.answer = answer  # type: ignore[attr-defined]
    with pytest.raises(RunError) as failed:
        PrometheusMetrics(_url(scripted))("m")
    message = str(failed.value)
    assert said in message
    assert f"Prometheus at {_url(scripted)} (query" in message and 'mlops_requests_total{model="m"}' in message


def test_a_prometheus_that_is_down_is_an_error_not_an_empty_window(scripted: ThreadingHTTPServer) -> None:
    """Connection refused raises RunError naming the URL and the setting; nothing reads as "no traffic"."""
    url = _url(scripted)
    scripted.shutdown()
    scripted.server_close()
    with pytest.raises(RunError, match=r"did not answer: ConnectError.*MLOPS_PROMETHEUS_URL"):
        PrometheusMetrics(url, timeout=2)("m")


def test_the_query_names_the_model_label_quoted_and_the_host_must_be_allowed() -> None:
    """Model names are quoted into the selector; the label name is checked; only the configured host is reachable."""
    read = PrometheusMetrics("http://127.0.0.1:9", model_label="app")
    assert read.queries('we"ird') == (
        'sum by (version, status) (mlops_requests_total{app="we\\"ird"})',
        'sum by (version, le) (mlops_request_latency_seconds_bucket{app="we\\"ird"})',
    )
    with pytest.raises(RunError, match="not a valid label name"):
        PrometheusMetrics("http://127.0.0.1:9", model_label="bad-label")
    elsewhere = PrometheusMetrics("http://127.0.0.1:9", allowed=())
    elsewhere.url = "http://prometheus.example:9090"  # a URL that was never configured
    with pytest.raises(EgressDeniedError, match=r"prometheus\.example"):
        elsewhere("m")


def test_a_prometheus_url_with_credentials_is_refused_without_echoing_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """A token in the Prometheus URL would ride into messages and the egress list: refused, naming only the server;
    the setting refuses it the same way, and a URL that is not http(s) is named by its scheme."""
    from mlops_supervisor._settings import Settings
    from mlops_supervisor.policies import UsageError

    with pytest.raises(UsageError, match=r"for http://prom\.example:9090 has credentials in it") as refused:
        PrometheusMetrics("http://reader:t0ps3cret@prom.example:9090")
    assert "t0ps3cret" not in str(refused.value)
    monkeypatch.setenv("MLOPS_PROMETHEUS_URL", "https://reader:t0ps3cret@prom.example")
    with pytest.raises(UsageError, match="has credentials in it") as from_settings:
        Settings()
    assert "t0ps3cret" not in str(from_settings.value)
    with pytest.raises(UsageError, match=r"got scheme 'ftp'"):
        PrometheusMetrics("ftp://prom.example")

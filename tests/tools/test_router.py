"""The router's HTTP handling against a real HTTP server on loopback: order, retries, timeouts, limits, samples."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import uvloop

from mlops_supervisor.policies.pii import PresidioRedactor
from mlops_supervisor.tools.serving import _router
from mlops_supervisor.tools.serving._router import Router, start_router


class _ModelServer(BaseHTTPRequestHandler):
    """Answers ``{"predictions": [rows]}``; the body can ask it to stall, fail or hang up."""

    protocol_version = "HTTP/1.1"
    timeout = 0.5  # an idle kept-alive connection is closed after this
    seen: Counter[str] = Counter()
    connections = 0

    def setup(self) -> None:
        type(self).connections += 1
        super().setup()

    def do_POST(self) -> None:
        payload = json.loads(self.rfile.read(int(self.headers["content-length"])))
        tag = payload.get("tag", "")
        type(self).seen[tag] += 1
        if payload.get("hang_up") == "always" or (payload.get("hang_up") == "once" and self.seen[tag] == 1):
            self.close_connection = True  # drop the connection without an answer
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        time.sleep(payload.get("sleep", 0))
        body = json.dumps({"predictions": [len(payload.get("dataframe_records", []))]}).encode()
        self.send_response(payload.get("status", 200))
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        pass


def _write_routes(path: Path, weights: dict[str, tuple[str, int]]) -> None:
    versions = {v: {"url": url, "weight": w} for v, (url, w) in weights.items()}
    path.write_text(json.dumps({"sample_rate": 1.0, "versions": versions}), "utf-8")
    time.sleep(0.01)  # a distinct mtime for the next write


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[SimpleNamespace]:
    """A router in a background event loop in front of one real HTTP server, with every request sampled."""
    _ModelServer.seen = Counter()
    _ModelServer.connections = 0
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), _ModelServer)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    upstream_url = f"http://127.0.0.1:{upstream.server_address[1]}"
    routes = tmp_path / "routes.json"
    _write_routes(routes, {"1": (upstream_url, 100)})
    router = Router(routes, samples_path=tmp_path / "samples.jsonl", redactor=PresidioRedactor())
    loop = uvloop.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = asyncio.run_coroutine_threadsafe(start_router(router), loop).result(10)
    port = server.sockets[0].getsockname()[1]
    yield SimpleNamespace(
        url=f"http://127.0.0.1:{port}", port=port, routes=routes, upstream_url=upstream_url, samples=router.samples_path
    )
    loop.call_soon_threadsafe(server.close)
    loop.call_soon_threadsafe(router.close)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    upstream.shutdown()
    upstream.server_close()


def _post(body: dict[str, Any]) -> bytes:
    data = json.dumps(body).encode()
    head = b"POST /invocations HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
    return head % len(data) + data


def _read_responses(sock: socket.socket, count: int) -> list[tuple[int, bytes]]:
    """``count`` HTTP responses (status, body) read off ``sock``, framed by content-length."""
    buffer, answers = b"", []
    sock.settimeout(10)
    while len(answers) < count:
        if b"\r\n\r\n" in buffer:
            head, rest = buffer.split(b"\r\n\r\n", 1)
            lines = head.split(b"\r\n")
            headers = dict(line.lower().split(b": ", 1) for line in lines[1:])
            length = int(headers.get(b"content-length", b"0"))
            if len(rest) >= length:
                answers.append((int(lines[0].split()[1]), rest[:length]))
                buffer = rest[length:]
                continue
        chunk = sock.recv(65536)
        if not chunk:
            break
        buffer += chunk
    return answers


def test_pipelined_requests_are_answered_in_order(proxy: SimpleNamespace) -> None:
    """Three requests in one write on one connection come back in the order they were sent."""
    with socket.create_connection(("127.0.0.1", proxy.port)) as sock:
        rows = [{"dataframe_records": [{"a": i}] * n} for i, n in enumerate((3, 1, 2))]
        sock.sendall(b"".join(_post(r) for r in rows))
        answers = _read_responses(sock, 3)
    assert [(s, json.loads(b)["predictions"]) for s, b in answers] == [(200, [3]), (200, [1]), (200, [2])]


def test_expect_100_continue_gets_its_interim_answer(proxy: SimpleNamespace) -> None:
    """A client that waits for ``100 Continue`` before the body (curl does, past 1 KiB) is not left waiting."""
    data = json.dumps({"dataframe_records": [{"a": 1}]}).encode()
    with socket.create_connection(("127.0.0.1", proxy.port)) as sock:
        sock.sendall(
            b"POST /invocations HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: %d\r\n\r\n" % len(data)
        )
        sock.settimeout(10)
        assert sock.recv(1024).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(data)
        assert _read_responses(sock, 1) == [(200, b'{"predictions": [1]}')]


def test_malformed_http_gets_a_400_and_the_connection_closes(proxy: SimpleNamespace) -> None:
    """Bytes that are not HTTP get one 400 that says so, then the router hangs up."""
    with socket.create_connection(("127.0.0.1", proxy.port)) as sock:
        sock.sendall(b"THIS IS NOT HTTP\r\n\r\n")
        (status, body), *_ = _read_responses(sock, 1)
        assert status == 400 and "malformed HTTP request" in json.loads(body)["error"]
        assert sock.recv(1024) == b""


def test_paths_methods_health_and_metrics(proxy: SimpleNamespace) -> None:
    """Only POST /invocations is forwarded; /health names the process, /metrics counts by version and status."""
    with httpx.Client(base_url=proxy.url, timeout=10) as client:
        assert client.post("/invocations", json={"dataframe_records": [{"a": 1}]}).headers["x-model-version"] == "1"
        wrong_method = client.get("/invocations")
        assert wrong_method.status_code == 405 and "POST" in wrong_method.json()["error"]
        assert client.get("/nowhere").status_code == 404
        health = client.get("/health").json()
        assert health["pid"] > 0 and health["versions"]["1"]["weight"] == 100
        metrics = client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    assert 'mlops_requests_total{status="200",version="1"} 1.0' in metrics.text


def test_a_connection_the_server_dropped_is_retried_once_on_a_fresh_one(proxy: SimpleNamespace) -> None:
    """A kept-alive connection that dies before any answer is retried once; a second failure is a 502."""
    with httpx.Client(base_url=proxy.url, timeout=10) as client:
        assert client.post("/invocations", json={"dataframe_records": [{"a": 1}]}).status_code == 200
        once = client.post("/invocations", json={"dataframe_records": [{"a": 1}], "tag": "once", "hang_up": "once"})
        assert once.status_code == 200 and _ModelServer.seen["once"] == 2
        always = client.post("/invocations", json={"tag": "always", "hang_up": "always"})
        assert always.status_code == 502 and "version 1 unreachable" in always.json()["error"]
        assert _ModelServer.seen["always"] == 2  # one retry, not a loop
        time.sleep(1.0)  # the server closes the idle connections (0.5 s)
        assert client.post("/invocations", json={"dataframe_records": [{"a": 1}]}).status_code == 200


def test_a_stalled_server_gets_a_504(proxy: SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> None:
    """A version that does not answer within the upstream timeout is answered for, with a 504 that says so."""
    monkeypatch.setattr(_router, "UPSTREAM_TIMEOUT", 0.3)
    answer = httpx.post(f"{proxy.url}/invocations", json={"sleep": 1.5}, timeout=10)
    assert answer.status_code == 504 and "did not answer within 0.3 s" in answer.json()["error"]


def test_an_oversized_body_gets_a_413(proxy: SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> None:
    """A body over the limit is not buffered or forwarded: 413, and nothing reaches the model server."""
    monkeypatch.setattr(_router, "MAX_BODY", 1024)
    answer = httpx.post(f"{proxy.url}/invocations", json={"dataframe_records": [{"a": "x" * 4096}]}, timeout=10)
    assert answer.status_code == 413 and "over" in answer.json()["error"]
    assert sum(_ModelServer.seen.values()) == 0


def test_no_server_is_a_502_and_no_weight_a_503(proxy: SimpleNamespace) -> None:
    """A version whose server is gone gets a 502 naming it; with every weight at 0 the router says so."""
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{free.getsockname()[1]}"
    _write_routes(proxy.routes, {"2": (dead, 100)})
    gone = httpx.post(f"{proxy.url}/invocations", json={"dataframe_records": [{"a": 1}]}, timeout=10)
    assert gone.status_code == 502 and "version 2 unreachable" in gone.json()["error"]
    _write_routes(proxy.routes, {"1": (proxy.upstream_url, 0)})
    none = httpx.post(f"{proxy.url}/invocations", json={"dataframe_records": [{"a": 1}]}, timeout=10)
    assert none.status_code == 503 and none.json()["error"] == "no version takes traffic"


def test_the_pick_follows_the_weights(tmp_path: Path) -> None:
    """A uniform draw lands on each version in proportion to its weight; weight 0 takes nothing."""
    routes = tmp_path / "routes.json"
    _write_routes(routes, {"1": ("http://a", 70), "2": ("http://b", 30), "3": ("http://c", 0)})
    table = _router._Routes(routes)
    assert [table.pick(d) for d in (0.0, 0.69, 0.71, 0.999)] == ["1", "1", "2", "2"]
    assert Counter(table.pick(i / 1000) for i in range(1000)) == {"1": 700, "2": 300}


def test_samples_are_redacted(proxy: SimpleNamespace) -> None:
    """A sampled request with an e-mail in it is kept with the address replaced, never in clear."""
    record = {"age": 39, "note": "write to jane.doe@example.com"}
    assert httpx.post(f"{proxy.url}/invocations", json={"dataframe_records": [record]}, timeout=10).status_code == 200
    kept = proxy.samples.read_text("utf-8")
    assert "jane.doe@example.com" not in kept
    line = json.loads(kept.splitlines()[-1])
    assert line["records"] == [{"age": 39, "note": "write to <EMAIL_ADDRESS>"}] and line["predictions"] == [1]
    # the supervisor's redactor: a name in prose and a secret assignment in a free-text feature too
    secret = "Zk3CANARYq9Vb2Lm8Np4Rt6Wx1Yz5Ac7Ef0RTR"
    record = {"age": 41, "note": f"Customer Helena Varga pasted AWS_SECRET_ACCESS_KEY={secret} in the form"}
    assert httpx.post(f"{proxy.url}/invocations", json={"dataframe_records": [record]}, timeout=10).status_code == 200
    kept = proxy.samples.read_text("utf-8")
    assert "Helena" not in kept and "Varga" not in kept and secret not in kept
